"""Atomic file writes: a reader (another process, a resumed job) never sees half a file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], object], suffix: str = "",
                 mode: int | None = None) -> Path:
    """Call ``write(temporary_path)`` then rename the result onto ``path``.

    The temporary file lies in the target folder (a rename within one file system is
    atomic) and gets the umask's permissions, not mkstemp's 0600, because checkpoints and
    datasets are shared between users. ``suffix``: for writers that choose the format from
    the file name (soundfile, numpy). ``mode``: exact permissions instead (0o600 for a
    secret); the temporary file has at most these while it is written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    try:
        write(temporary)
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path
