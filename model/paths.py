"""Where CapTalk keeps shared data outside Blender (set-up, back end, tests)."""
from __future__ import annotations

import os
from pathlib import Path

HEADS_DIR = "heads"
OPEN_HEAD_FILE = "open_head_v1.npz"
OPEN_HEAD_RELATIVE = f"{HEADS_DIR}/{OPEN_HEAD_FILE}"


def shared_data_dir() -> Path:
    """$CAPTALK_DATA_DIR, else $XDG_DATA_HOME/captalk (~/.local/share/captalk)."""
    if os.environ.get("CAPTALK_DATA_DIR"):
        return Path(os.environ["CAPTALK_DATA_DIR"])
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "captalk"


def default_open_head_file() -> Path:
    return shared_data_dir() / OPEN_HEAD_RELATIVE
