"""Fixtures for tests that run inside Blender (PyPI bpy 4.2, 4.5 or 5.0).

These tests need only bpy, numpy and pytest in their interpreter: the open head is
built by the back-end interpreter ($CAPTALK_BACKEND_PYTHON, default: this one) into a
data folder shared by the session ($CAPTALK_DATA_DIR, default: a pytest temp folder).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
sys.path.insert(0, str(REPO_ROOT / "tests"))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    path = Path(os.environ.get("CAPTALK_DATA_DIR") or tmp_path_factory.mktemp("captalk-data"))
    os.environ["CAPTALK_DATA_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def open_head_file(data_dir) -> Path:
    """The open head, built once per data folder by the back end (like set-up does)."""
    target = data_dir / "heads" / "open_head_v1.npz"
    python = os.environ.get("CAPTALK_BACKEND_PYTHON", sys.executable)
    subprocess.run(
        [python, "-m", "model", "build-open-head", "--out", str(target)], cwd=REPO_ROOT, check=True
    )
    return target


@pytest.fixture(scope="session")
def addon(data_dir):
    """The add-on registered from this checkout as package 'captalk'."""
    import source_addon

    return source_addon.register_from_source()


@pytest.fixture
def empty_scene(addon):
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


@pytest.fixture
def scene_fingerprint():
    """A function naming every data-block a rig import could create ('scene unchanged' checks)."""
    import bpy

    def fingerprint() -> dict[str, list[str]]:
        kinds = ("objects", "meshes", "armatures", "materials", "collections", "shape_keys", "actions")
        return {kind: sorted(block.name for block in getattr(bpy.data, kind)) for kind in kinds}

    return fingerprint
