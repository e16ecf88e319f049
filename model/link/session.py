"""Where a worker says how to reach it: a session file that only its user can read.

    {"pid": 1234, "port": 41234, "token": "...", "checkpoint": "/.../checkpoints/default",
     "device": "auto", "version": "0.1.0", "protocol": 1}

The token is the worker's only credential: whoever reads the file can use the worker
(and through it have files read that its user can read). So the file is created 0600 in
a folder 0700 owned by the user, and `read_session` refuses a file or folder that
anyone else owns or could write: another user could otherwise plant a session file
pointing Blender at a server of their own, and receive the user's audio.

One session file per (checkpoint, device): Blender sessions of one user that ask for the
same model share one worker (their jobs queue there), and a worker for another model
does not get in their way. A lock file beside it, held by the worker for its whole life,
keeps two Blender sessions starting at once from starting two workers.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.atomic import atomic_write
from ..core.paths import shared_data_dir
from ..core.errors import MissingPart


class SessionError(MissingPart):
    """A session file that must not be trusted or cannot be read; the message says why."""


@dataclass(frozen=True)
class Session:
    pid: int
    port: int
    token: str
    checkpoint: str
    device: str
    version: str
    protocol: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def new_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def run_dir() -> Path:
    """``$XDG_RUNTIME_DIR/captalk`` (a per-user tmpfs on most Linux desktops), else
    ``<shared data dir>/run``; created 0700 and checked to be the user's own."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(runtime) / "captalk" if runtime and Path(runtime).is_dir() else shared_data_dir() / "run"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private(path, directory=True)
    return path


def session_path(checkpoint: str | os.PathLike, device: str) -> Path:
    """The session file of the worker serving ``checkpoint`` on ``device``."""
    key = f"{Path(checkpoint).resolve()}\n{device}".encode()
    return run_dir() / f"worker-{hashlib.sha256(key).hexdigest()[:16]}.json"


def write_session(path: Path, session: Session) -> Path:
    """Write atomically with mode 0600 (the file never exists with wider permissions)."""
    return atomic_write(path, lambda name: Path(name).write_text(json.dumps(asdict(session))), mode=0o600)


def read_session(path: Path) -> Session | None:
    """The session in ``path``, or None when there is none. Raises `SessionError` when the
    file or its folder is not private to this user, or the file is malformed."""
    try:
        _check_private(path.parent, directory=True)
        _check_private(path, directory=False)
        data = json.loads(path.read_text())
        return Session(**{key: data[key] for key in Session.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SessionError(f"worker session file '{path}' is unreadable ({exc}); delete it") from None


def remove_session(path: Path, pid: int) -> None:
    """Delete ``path`` if it still describes worker ``pid`` (a newer worker's file stays)."""
    try:
        session = read_session(path)
    except SessionError:
        return
    if session is not None and session.pid == pid:
        path.unlink(missing_ok=True)


def _check_private(path: Path, directory: bool) -> None:
    """Raise unless ``path`` belongs to this user and no one else may write (or, for a
    file, read) it. FileNotFoundError passes through."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        raise SessionError(f"'{path}' is a symbolic link; CapTalk will not follow it for its worker session")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise SessionError(f"'{path}' belongs to another user (uid {info.st_uid}); CapTalk will not trust it")
    forbidden = (stat.S_IWGRP | stat.S_IWOTH) if directory else (stat.S_IRWXG | stat.S_IRWXO)
    if info.st_mode & forbidden:
        raise SessionError(f"'{path}' can be {'written' if directory else 'read'} by other users "
                           f"(mode {stat.S_IMODE(info.st_mode):o}); CapTalk will not use it for its worker session")
