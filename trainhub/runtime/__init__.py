"""Where runs execute: Docker engines (local or forwarded over SSH) and the base images."""
