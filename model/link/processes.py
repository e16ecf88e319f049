"""Whether a process still lives (stdlib: both the worker and the add-on's launcher ask)."""
from __future__ import annotations

import os
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (Linux), or None where unreadable."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> float | None:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not
    taken for the process that exited; None where /proc does not tell."""
    fields = _stat_fields(pid)
    try:
        return float(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def alive(pid: int, start: float | None = None) -> bool:
    """Whether process ``pid`` exists and has not exited: a zombie (exited, not yet reaped
    by its parent) counts as exited, and so does a process started at another time than
    ``start`` (`start_time`, when given: the pid was reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    fields = _stat_fields(pid)
    if fields is None:
        return True  # no /proc to ask: it exists
    if start is not None and start_time(pid) != start:
        return False
    return fields[0] != "Z"


def owner_uid(pid: int) -> int | None:
    """The user id owning process ``pid`` (Linux: its /proc entry's owner), None if gone."""
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
