"""Fixtures shared by every test: a private data folder, the open head and a tiny trained model."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the back end is imported as the package `model`
sys.path.insert(0, str(REPO_ROOT / "tests"))

from model.core.paths import OPEN_HEAD_RELATIVE  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    path = Path(os.environ.get("CAPTALK_DATA_DIR") or tmp_path_factory.mktemp("captalk-data"))
    os.environ["CAPTALK_DATA_DIR"] = str(path)
    # workers' session files then live in the data folder too, never beside the user's own
    os.environ.pop("XDG_RUNTIME_DIR", None)
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


# Training settings that make a model in seconds: only for tests of the plumbing around it.
TINY_TRAINING = ["--size", "tiny", "--batch", "4", "--lr", "2e-3", "--log-every", "10", "--val-windows", "4",
                 "--workers", "1"]


def run_backend(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -m model ARGS`` in $CAPTALK_BACKEND_PYTHON (default: this interpreter), one
    thread each, so Blender-only test environments reach the back end too; fails the test
    with the command's output unless it succeeds."""
    python = os.environ.get("CAPTALK_BACKEND_PYTHON", sys.executable)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    result = subprocess.run([python, "-m", "model", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _training_code_hash() -> str:
    """What the tiny model depends on: the data engine, the models, the training code."""
    digest = hashlib.sha256()
    for folder in ("data", "speech", "codec", "ar", "encoders", "train"):
        for path in sorted((REPO_ROOT / "model" / folder).rglob("*.py")):
            digest.update(path.read_bytes())
    digest.update(repr(TINY_TRAINING).encode())
    return digest.hexdigest()[:12]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, open_head_file) -> tuple[Path, Path]:
    """(dataset, checkpoint), built once per test session (about 2 minutes on 2 cores): 0.012 h
    of synthetic clips on the open head, the last two moved to the test split, and a tiny
    codec and AR model (log-mel speech features) trained on them by the training commands.
    The motion is barely trained: tests use it for plumbing, not quality.

    With $CAPTALK_TEST_CACHE set (a developer's loop; CI leaves it unset), the model is kept
    there, keyed by a hash of the code that makes it, and reused by later sessions."""
    cache = os.environ.get("CAPTALK_TEST_CACHE")
    if cache:
        root = Path(cache) / f"tiny-model-{_training_code_hash()}"
        if (root / "ckpt" / "ar.safetensors").is_file():
            return root / "data", root / "ckpt"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
    else:
        root = tmp_path_factory.mktemp("tiny-model")
    data = root / "data"
    run_backend("data", "synth", "--out", str(data), "--hours", "0.012", "--voices", "flite_slt,flite_awb",
                "--workers", "1")
    manifest = data / "manifest.jsonl"
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(entries) >= 4
    for entry in entries[-2:]:
        entry["split"] = "test"
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries))
    checkpoint = root / "ckpt"
    run_backend("train", "codec", "--data", str(data), "--out", str(checkpoint), "--steps", "20", "--val-every", "20",
                *TINY_TRAINING)
    run_backend("train", "ar", "--data", str(data), "--checkpoint", str(checkpoint), "--steps", "20", "--val-every",
                "20", "--speech-encoder", "logmel", "--text-encoder", "minilm", *TINY_TRAINING)
    return data, checkpoint


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a test module that trains small models: on 2 shared
    cores a second thread mostly waits for the first (about 20x slower when busy).
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``; torch is
    imported here, not at the top, because the Blender-only test environments lack it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

