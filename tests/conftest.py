"""Fixtures shared by every test: a private data folder and the open head."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the back end is imported as the package `model`
sys.path.insert(0, str(REPO_ROOT / "tests"))

from model.paths import OPEN_HEAD_RELATIVE  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    path = Path(os.environ.get("CAPTALK_DATA_DIR") or tmp_path_factory.mktemp("captalk-data"))
    os.environ["CAPTALK_DATA_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def open_head_file(data_dir) -> Path:
    """The open head, built once per data folder by the back end, as set-up does.

    Built by $CAPTALK_BACKEND_PYTHON (default: this interpreter), so Blender-only test
    environments get it from the back-end environment.
    """
    target = data_dir / OPEN_HEAD_RELATIVE
    python = os.environ.get("CAPTALK_BACKEND_PYTHON", sys.executable)
    subprocess.run(
        [python, "-m", "model", "build-open-head", "--out", str(target)], cwd=REPO_ROOT, check=True
    )
    return target
