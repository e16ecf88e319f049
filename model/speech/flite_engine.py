"""Flite voices (Debian package ``flite``), phone timings from ``-psdur``.

``flite -psdur`` prints every segment of the utterance as ``label:end`` (end in seconds
from the start of the audio, one space between segments); the labels are Flite's US
phone set (`model.speech.phones.FLITE_US`).

Rate: ``duration_stretch`` = 1 / rate (every voice honours it). Pitch: ``f0_shift``
multiplies the predicted F0 contour of kal16, awb and slt; rms has no F0 model of its own
(F0 comes out of its spectral trees) and ignores it, so that voice has no pitch control.
The diphone voice kal16 ends its waveform half-way through the final pause, so its last
segment ends about 0.11 s after the audio; `timed_phones` clips that pause.
"""
from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..core.audio import SAMPLE_RATE, load_audio

from .phones import FLITE_US, Phone
from .voices import SpeechError, Voice, run_engine, timed_phones

_SEGMENT = re.compile(r"(\S+):(\d+(?:\.\d+)?)")


def missing(voice: Voice) -> str | None:
    """Why ``voice`` cannot be used here, or None if it can."""
    if shutil.which("flite") is None:
        return "flite is not installed (Debian: apt-get install flite)"
    if voice.engine_voice not in _installed_voices():
        return f"flite has no voice '{voice.engine_voice}' (Debian: apt-get install flite)"
    return None


def synthesize(voice: Voice, text: str, rate: float, pitch: float) -> tuple[np.ndarray, tuple[Phone, ...]]:
    """(N,) float32 audio at 16 kHz and its phones, for `model.speech.voices.synthesize`."""
    with tempfile.TemporaryDirectory(prefix="captalk-flite-") as folder:
        wav = Path(folder) / "speech.wav"
        command = [
            "flite", "-voice", voice.engine_voice,
            "--setf", f"duration_stretch={1.0 / rate:.6f}",
            "--setf", f"f0_shift={pitch:.6f}",
            "-psdur", "-t", text, "-o", str(wav),
        ]
        printed = run_engine(command, Path(folder), f"flite ({voice.engine_voice})")
        audio = load_audio(wav)
    segments = [(label, float(end)) for label, end in _SEGMENT.findall(printed)]
    if not segments:
        raise SpeechError(f"flite ({voice.engine_voice}) printed no segments: {printed[:500]!r}")
    return audio, timed_phones(segments, audio.size / SAMPLE_RATE, FLITE_US, f"flite ({voice.engine_voice})")


@functools.lru_cache(maxsize=1)
def _installed_voices() -> frozenset[str]:
    try:
        listing = subprocess.run(["flite", "-lv"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(listing.split(":", 1)[-1].split())
