"""Nodes: the server's own engine (``local``) and GPU servers reached over SSH."""
