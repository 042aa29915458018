"""Files the connector creates or reads secrets from: private whatever the umask, and a word
when a secret is readable by everyone.

The state database holds rejected payloads (customer data) and the lock names the host and pid:
they are created 0600 in folders created 0700, whatever the umask of the shell or unit that
started the connector. Existing files and folders keep the mode their owner gave them.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def user_name() -> str:
    """Who this process runs as, for advice about file permissions."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) as 0700; an existing folder is left as it is."""
    if path.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=PRIVATE_DIR)
    except FileExistsError:
        return
    os.chmod(path, PRIVATE_DIR)  # mkdir's mode is filtered by the umask; chmod is not


def create_private_file(path: Path) -> None:
    """Create ``path`` empty and 0600 unless it exists (then it is left as it is)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, PRIVATE_FILE)  # exactly 0600, even under an umask that takes more away
    finally:
        os.close(fd)


def world_readable(path: Path) -> bool:
    """Whether anyone may read ``path`` (False when it cannot be looked at)."""
    try:
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False
