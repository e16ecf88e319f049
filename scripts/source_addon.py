"""Register CapTalk from a source checkout, for batch scripts and tests.

An installed extension is imported by Blender as ``bl_ext.<repo>.captalk``; a checkout
is loaded here under the package name ``captalk`` so its relative imports work the same.
"""
from __future__ import annotations

import atexit
import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "captalk"


def register_from_source():
    """Import and register the add-on from REPO_ROOT (once per process); return the package."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.spec_from_file_location(
        PACKAGE, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)
    package.register()
    # PyPI bpy 4.2 crashes at interpreter exit while add-on classes are still registered.
    atexit.register(package.unregister)
    return package


def script_args() -> list[str]:
    """A script's own arguments: those after '--' under Blender, else all after the script name."""
    argv = sys.argv
    return argv[argv.index("--") + 1 :] if "--" in argv else argv[1:]
