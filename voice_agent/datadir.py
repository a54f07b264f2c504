"""The data directory holds personal data (transcripts, call records): only its owner may read it.

Directories under it are made 0700 and the files we write 0600, whatever the umask; the long-
running commands also set the umask to 077 (as systemd's `UMask=0077` would), so what libraries
and child processes create there (SQLite's WAL, Redis's append-only files, logs) is private too.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from voice_agent.logging import get_logger

log = get_logger("datadir")

DIR_MODE = 0o700
FILE_MODE = 0o600
UMASK = 0o077


def private_dir(path: Path) -> Path:
    """Make `path` (and missing parents) a directory only its owner can enter; `path`.

    A shared directory is left as it is, with a warning: one with the sticky bit (`/tmp`,
    `/var/tmp`) or owned by another user. Closing `/tmp` to everyone else because a log or
    data directory was pointed straight at it would break every other program on the host.
    """
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_mode & stat.S_ISVTX or info.st_uid != os.geteuid():
        log.warning(
            "datadir.shared_directory",
            path=str(path),
            hint="give the data and log files a directory of their own",
        )
        return path
    _tighten(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty when missing, mode 0600 either way (its directory must exist or be
    creatable); `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    os.close(fd)
    _tighten(path, FILE_MODE)
    return path


def open_private(path: Path, flags: int) -> int:
    """`os.open` for a file of ours: created 0600, and tightened if it was looser."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    with contextlib.suppress(OSError):
        if os.fstat(fd).st_mode & 0o777 != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    return fd


def _tighten(path: Path, mode: int) -> None:
    try:
        if path.stat().st_mode & 0o777 != mode:
            os.chmod(path, mode)
    except PermissionError as e:  # not ours (a shared parent): say so, do not fail the start
        log.warning("datadir.not_private", path=str(path), error=str(e))
