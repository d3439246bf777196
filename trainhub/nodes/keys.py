"""SSH private keys sent with a node instead of named by path: checked, kept on the server, removed
with the node.

``trainhub node add --key PATH`` names a key file the admin put on the server's machine. A machine
attached from a notebook (``ComputeTarget.attach`` with ``RemoteCompute.attach_configuration``) has
its key on the user's computer, so its text comes with the request, as Azure ML's attach sent it.
The server keeps it where the node's SSH connections read it: a file of its own per registration
under the data folder's ``node-keys/`` (folder mode 700, file mode 600), deleted with the node.
The key is never logged nor returned: answers describe the node, errors name the field.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import asyncssh

from trainhub.spec import SpecError

# Far more than any SSH private key (an RSA key of 16384 bits is about 12 KB).
MAX_KEY_CHARS = 64 * 1024


def store(keys_dir: Path, node: str, text: str) -> Path:
    """Check ``text`` is an unencrypted SSH private key and write it (OpenSSH's format, which both
    asyncssh and the system's ``ssh`` read) to a new file for ``node``; return its path."""
    if len(text) > MAX_KEY_CHARS:
        raise SpecError(
            "private_key", f"private_key is longer than {MAX_KEY_CHARS} characters: not an SSH key"
        )
    try:
        key = asyncssh.import_private_key(text)
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
        # asyncssh's reasons are fixed sentences ("Invalid private key"): never the key's text.
        raise SpecError(
            "private_key",
            f"private_key is not an unencrypted SSH private key (OpenSSH or PEM format): {exc}",
        ) from None
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = keys_dir / f"{node}-{secrets.token_hex(4)}.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.export_private_key("openssh"))
    return path


def forget(keys_dir: Path, key_path: str) -> None:
    """Delete a key :func:`store` wrote; a key file the admin named stays where it is."""
    path = Path(key_path)
    if path.parent == keys_dir:
        path.unlink(missing_ok=True)
