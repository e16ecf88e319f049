"""``python -m model generate`` given nonsense: one clear line and exit status 2, no traceback,
and nothing written. Each case fails before a model is loaded (the options, captions and
audio are checked first), so these need no checkpoint."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

REPO_ROOT = Path(__file__).resolve().parents[1]


def generate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "model", "generate", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "speech.wav"
    soundfile.write(path, (0.1 * np.sin(np.arange(16000) / 10)).astype(np.float32), 16000)
    return path


@pytest.mark.parametrize("extra, message", [
    (["--takes", "100"], b"takes must be between 1 and 8"),
    (["--takes", "0"], b"takes must be between 1 and 8"),
    (["--takes", "-1"], b"takes must be between 1 and 8"),
    (["--seed", str(2**70)], b"seed must be between 0 and 2147483647"),
    (["--seed", "-5"], b"seed must be between 0 and"),
    (["--temperature", "nan"], b"temperature must be between 0 and 5"),
    (["--guidance", "inf"], b"guidance must be between 0 and 20"),
    (["--top-p", "0"], b"top_p must be in (0, 1]"),
    (["--style", "x" * 1001], b"the style caption has 1001 characters; the limit is 1000"),
])
def test_bad_options_are_one_clear_line(speech, tmp_path, extra, message):
    out = tmp_path / "motion.npz"
    result = generate("--audio", str(speech), "--out", str(out), *extra, cwd=tmp_path)
    assert result.returncode == 2, result.stderr.decode(errors="replace")
    assert message in result.stderr and b"Traceback" not in result.stderr
    assert not out.exists()


def test_undecodable_bytes_in_a_caption_are_refused(speech, tmp_path):
    """An argument that is not valid UTF-8 reaches Python as a lone surrogate: refused, not a crash."""
    out = tmp_path / "motion.npz"
    result = generate("--audio", str(speech), "--out", str(out), "--style", os.fsdecode(b"calm \xff"), cwd=tmp_path)
    assert result.returncode == 2 and b"not valid text" in result.stderr and b"Traceback" not in result.stderr
    assert not out.exists()


def test_a_fifo_as_audio_is_refused_without_waiting_on_it(tmp_path):
    fifo = tmp_path / "speech.wav"
    os.mkfifo(fifo)
    result = generate("--audio", str(fifo), "--out", str(tmp_path / "m.npz"), cwd=tmp_path)
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    assert b"pipe" in result.stderr or b"not a regular file" in result.stderr
