"""Festival voices (Debian ``festival`` with ``festvox-kallpc16k``, ``festvox-kdlpc16k``,
``festvox-us-slt-hts``), phone timings from the utterance's Segment relation.

Each call runs ``festival --batch`` on a Scheme script written to a temporary folder: it
selects the voice, sets rate and pitch, synthesises, saves the wave and prints every
segment's name and end time. The text goes into a Scheme string literal with ``\\`` and
``"`` escaped (and no newlines, see `model.speech.voices.clean_text`), so it cannot end
the string and run Scheme of its own.

Labels are Festival's radio phone set for all three voices
(`model.speech.phones.FESTIVAL_RADIO`).

Diphone voices (kal, ked): rate divides the voice's ``Duration_Stretch`` (1.1 for both);
pitch multiplies the F0 target mean and standard deviation of ``int_lr_params`` (105 Hz
mean for both), so the whole contour scales. HTS voice (slt): rate is hts_engine's
speech-speed option ``-r``; pitch is not supported, Festival 2.5's hts_engine module
passes only ``-m`` and ``-r`` on (``-fm`` is ignored) and F0 comes from the HTS model.
"""
from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..core.audio import SAMPLE_RATE, load_audio

from .phones import FESTIVAL_RADIO, Phone
from .voices import SpeechError, Voice, run_engine, timed_phones

_PACKAGES = {
    "kal_diphone": "festvox-kallpc16k",
    "ked_diphone": "festvox-kdlpc16k",
    "cmu_us_slt_arctic_hts": "festvox-us-slt-hts",
}
_MARK = "CAPTALK_SEGMENT"


def missing(voice: Voice) -> str | None:
    """Why ``voice`` cannot be used here, or None if it can."""
    if shutil.which("festival") is None:
        return "festival is not installed (Debian: apt-get install festival)"
    if voice.engine_voice not in _installed_voices():
        return f"festival has no voice '{voice.engine_voice}' (Debian: apt-get install {_PACKAGES[voice.engine_voice]})"
    return None


def synthesize(voice: Voice, text: str, rate: float, pitch: float) -> tuple[np.ndarray, tuple[Phone, ...]]:
    """(N,) float32 audio at 16 kHz and its phones, for `model.speech.voices.synthesize`."""
    with tempfile.TemporaryDirectory(prefix="captalk-festival-") as folder:
        wav = Path(folder) / "speech.wav"
        script = Path(folder) / "speak.scm"
        script.write_text(_script(voice, text, rate, pitch, wav), encoding="ascii")
        printed = run_engine(["festival", "--batch", str(script)], Path(folder), f"festival ({voice.engine_voice})")
        if not wav.exists():
            raise SpeechError(f"festival ({voice.engine_voice}) wrote no audio: {printed[-500:]!r}")
        audio = load_audio(wav)
    segments = []
    for line in printed.splitlines():
        if line.startswith(_MARK):
            _, label, end = line.split()
            segments.append((label, float(end)))
    return audio, timed_phones(segments, audio.size / SAMPLE_RATE, FESTIVAL_RADIO, f"festival ({voice.engine_voice})")


def scheme_string(text: str) -> str:
    """``text`` as a Scheme string literal that reads back as exactly ``text``."""
    if any(char in text for char in "\n\r\0"):
        raise ValueError("newlines and NUL cannot go into the Festival script")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _script(voice: Voice, text: str, rate: float, pitch: float, wav: Path) -> str:
    if voice.engine_voice == "cmu_us_slt_arctic_hts":
        prosody = f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {rate:.6f}))))'
    else:
        prosody = f"""
(Parameter.set 'Duration_Stretch (/ (Parameter.get 'Duration_Stretch) {rate:.6f}))
(set! int_lr_params
  (mapcar
    (lambda (entry)
      (if (member (car entry) '(target_f0_mean target_f0_std))
          (list (car entry) (* {pitch:.6f} (car (cdr entry))))
          entry))
    int_lr_params))"""
    return f"""
(voice_{voice.engine_voice})
{prosody}
(set! captalk_utterance (utt.synth (Utterance Text {scheme_string(text)})))
(utt.save.wave captalk_utterance {scheme_string(str(wav))} 'riff)
(mapcar
  (lambda (segment)
    (format t "{_MARK} %s %f\\n" (item.name segment) (item.feat segment "end")))
  (utt.relation.items captalk_utterance 'Segment))
"""


@functools.lru_cache(maxsize=1)
def _installed_voices() -> frozenset[str]:
    try:
        listing = subprocess.run(
            ["festival", "--batch", "(print (voice.list))"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(listing.replace("(", " ").replace(")", " ").split())
