"""Fixtures for tests that run inside Blender (PyPI bpy 4.2, 4.5 or 5.0).

These tests need only bpy, numpy and pytest in their interpreter (the open head comes
from the `open_head_file` fixture in tests/conftest.py, built by the back end).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts"))


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
