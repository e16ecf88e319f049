"""Where the add-on reads and writes its files (never inside the add-on folder)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import bpy

from ..model.core.paths import HEADS_DIR, shared_data_dir
from .preferences import ADDON_PACKAGE

# The extension's source root: holds `model/`, which the back-end process runs.
EXTENSION_ROOT = Path(__file__).resolve().parent.parent


def user_data_dir() -> Path:
    """This add-on's writable data folder: Blender's extension user path when installed."""
    if ADDON_PACKAGE.startswith("bl_ext.") and not os.environ.get("CAPTALK_DATA_DIR"):
        return Path(bpy.utils.extension_path_user(ADDON_PACKAGE, create=True))
    path = shared_data_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


def heads_dir() -> Path:
    path = user_data_dir() / HEADS_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def find_cached_file(relative: str) -> Path | None:
    """First existing copy of a cached file: the add-on's own data, then set-up's."""
    for root in (user_data_dir(), shared_data_dir()):
        candidate = root / relative
        if candidate.is_file():
            return candidate
    return None


def setup_backend_python() -> str:
    """The interpreter set-up recorded in ``backend.json``, or '' (also when that
    interpreter is gone: the record is per user, and the checkout that wrote it may have
    been deleted since)."""
    record = shared_data_dir() / "backend.json"
    try:
        python = json.loads(record.read_text()).get("python", "")
    except (OSError, ValueError, AttributeError):
        return ""
    return python if python and Path(python).is_file() else ""
