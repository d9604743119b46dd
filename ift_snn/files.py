"""Writing files the way the user expects: helpers below every layer that saves results."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["umask_mode", "write_atomically"]


def umask_mode(path: str | os.PathLike) -> None:
    """Give a file made by ``tempfile.mkstemp`` (mode 0600) the mode a plain ``open`` would have given it under
    the user's umask, before it is renamed into place (an atomic write should not change who can read it)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """``write(fh)`` into a temporary file beside ``path``, given the user's umask mode and renamed onto ``path``:
    a reader (or an interrupted run) sees the old file or the new one, never a part; nothing is left behind."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
