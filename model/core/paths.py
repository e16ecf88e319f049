"""Where CapTalk keeps shared data outside Blender (set-up, back end, tests)."""
from __future__ import annotations

import os
from pathlib import Path

HEADS_DIR = "heads"
OPEN_HEAD_FILE = "open_head_v1.npz"
OPEN_HEAD_RELATIVE = f"{HEADS_DIR}/{OPEN_HEAD_FILE}"
REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """$CAPTALK_DATA_DIR, else $XDG_DATA_HOME/captalk (~/.local/share/captalk)."""
    if os.environ.get("CAPTALK_DATA_DIR"):
        return Path(os.environ["CAPTALK_DATA_DIR"])
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "captalk"


def default_open_head_file() -> Path:
    return shared_data_dir() / OPEN_HEAD_RELATIVE


def default_checkpoint_dir() -> Path:
    """``<repo>/checkpoints/default``: where the add-on's shipped model goes (here, not in
    `model.generate`, so the Blender side can find it without importing torch)."""
    return REPO_ROOT / "checkpoints" / "default"
