"""Writing files the way the user expects: helpers below every layer that saves results."""

from __future__ import annotations

import os

__all__ = ["umask_mode"]


def umask_mode(path: str | os.PathLike) -> None:
    """Give a file made by ``tempfile.mkstemp`` (mode 0600) the mode a plain ``open`` would have given it under
    the user's umask, before it is renamed into place (an atomic write should not change who can read it)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
