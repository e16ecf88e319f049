"""The voices of the data engine: one `synthesize` for every speech engine, returning
16 kHz audio and the phones the engine itself timed.

Engines (one module each, imported on first use so that a missing engine costs nothing):

========== ============================== ============== =================================
engine     voices                         rate           pitch
========== ============================== ============== =================================
flite      kal (kal16), awb, rms, slt     duration       f0_shift, except rms (its model
           (`flite_engine`)               stretch        has no F0 trees and ignores it)
festival   kal, ked (diphone), slt (HTS)  Duration_      diphone: the F0 target mean and
           (`festival_engine`)            Stretch / -r   spread; HTS slt: not supported
piper      joe (`piper_engine`)           length_scale   not supported (VITS has no F0
                                                         input)
========== ============================== ============== =================================

Bad arguments (unknown voice, rate or pitch out of range, pitch for a voice without pitch
control, empty or unreadable text) raise `ValueError`; an engine that is missing, fails,
times out or prints timings that do not fit its audio raises `SpeechError`.
"""
from __future__ import annotations

import importlib
import re
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from ..core.audio import SAMPLE_RATE

from .phones import PHONES, SILENCE, Phone
from ..core.errors import BadInput

RATE_RANGE = (0.5, 2.0)  # accepted; the useful range is about 0.75-1.3
PITCH_RANGE = (0.5, 2.0)  # accepted; the useful range is about 0.85-1.2
ENGINE_TIMEOUT_S = 120.0
# How far an engine's last phone may end from its audio's end before we call the timings
# wrong rather than rounded (flite/festival print milliseconds, pocketsphinx 10 ms frames).
TIMING_TOLERANCE_S = 0.05
_MIN_PAUSE_S = 0.01  # a shorter uncovered tail is given to the last phone, not a new pause


class SpeechError(BadInput):
    """A speech engine is missing or failed; the message says which and what to do."""


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker.

    ``engine``: "flite", "festival" or "piper"; ``engine_voice``: the engine's own name for
    it (flite ``-voice``, festival ``(voice_NAME)``, the Piper model); ``pitch_control``:
    whether `synthesize` can change its F0 (``pitch`` other than 1 raises otherwise).
    """

    voice_id: str
    engine: str
    sex: str
    description: str
    engine_voice: str
    pitch_control: bool


VOICES: dict[str, Voice] = {
    voice.voice_id: voice
    for voice in (
        Voice("festival_kal", "festival", "male", "Festival diphone voice kal, US English male",
              "kal_diphone", True),
        Voice("festival_ked", "festival", "male", "Festival diphone voice ked, US English male",
              "ked_diphone", True),
        Voice("festival_slt", "festival", "female", "Festival HTS voice slt (CMU Arctic), US English female",
              "cmu_us_slt_arctic_hts", False),
        Voice("flite_kal", "flite", "male", "Flite diphone voice kal (16 kHz), US English male",
              "kal16", True),
        Voice("flite_awb", "flite", "male", "Flite clustergen voice awb (CMU Arctic), Scottish English male",
              "awb", True),
        Voice("flite_rms", "flite", "male", "Flite clustergen voice rms (CMU Arctic), US English male",
              "rms", False),
        Voice("flite_slt", "flite", "female", "Flite clustergen voice slt (CMU Arctic), US English female",
              "slt", True),
        Voice("piper_joe", "piper", "male", "Piper VITS voice en_US-joe-medium, US English male",
              "en_US-joe-medium", False),
    )
}


@dataclass(frozen=True, eq=False)
class Utterance:
    """Synthesised speech: ``audio`` (N,) float32 mono at 16 kHz in [-1, 1], and
    ``phones`` contiguous from 0 to N / 16000 seconds (silences labelled "pau")."""

    audio: np.ndarray
    phones: tuple[Phone, ...]
    text: str
    voice_id: str

    def __post_init__(self) -> None:
        if self.audio.ndim != 1 or self.audio.dtype != np.float32:
            raise ValueError(f"audio must be (N,) float32, got {self.audio.shape} {self.audio.dtype}")
        check_phones(self.phones, self.duration)

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return self.audio.size / SAMPLE_RATE


def synthesize(voice_id: str, text: str, rate: float = 1.0, pitch: float = 1.0) -> Utterance:
    """Speak ``text`` with a voice of `VOICES`.

    ``rate``: speaking-rate factor, > 1 is faster (shorter audio); ``pitch``: factor on
    the mean F0, only for voices with ``pitch_control`` (see the module docstring for
    what each engine does with both).
    """
    voice = VOICES.get(voice_id)
    if voice is None:
        raise ValueError(f"unknown voice '{voice_id}'; known voices: {', '.join(VOICES)}")
    _check_range("rate", rate, RATE_RANGE)
    _check_range("pitch", pitch, PITCH_RANGE)
    if pitch != 1.0 and not voice.pitch_control:
        raise ValueError(
            f"voice '{voice_id}' cannot change pitch (see model.speech.voices); "
            f"use pitch=1.0 or one of: {', '.join(v.voice_id for v in VOICES.values() if v.pitch_control)}"
        )
    engine = _engine(voice.engine)
    problem = engine.missing(voice)
    if problem:
        raise SpeechError(f"voice '{voice_id}' is not available: {problem}")
    text = clean_text(text)
    audio, phones = engine.synthesize(voice, text, rate, pitch)
    return Utterance(np.clip(audio, -1.0, 1.0).astype(np.float32), phones, text, voice_id)


def available_voices() -> list[str]:
    """Ids of the voices whose engine and voice data are installed here."""
    return [voice.voice_id for voice in VOICES.values() if not _engine(voice.engine).missing(voice)]


def clean_text(text: str) -> str:
    """``text`` as every engine reads it the same way: ASCII, single spaces.

    Typographic quotes and dashes become ASCII, accents are dropped ("café" -> "cafe");
    other non-ASCII characters raise `ValueError`, as does text without letters or digits.
    """
    text = text.translate(_TYPOGRAPHY)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(char for char in text if not unicodedata.combining(char))
    text = " ".join(text.split())
    foreign = sorted({char for char in text if not (" " <= char <= "~")})
    if foreign:
        raise ValueError(f"text contains characters the voices cannot read: {' '.join(foreign)}")
    if not re.search(r"[A-Za-z0-9]", text):
        raise ValueError(f"text has nothing to speak: {text!r}")
    return text


_TYPOGRAPHY = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
    "\u2013": "-", "\u2014": " - ", "\u2026": "...", "\u00a0": " ",
})


def timed_phones(
    ends: Iterable[tuple[str, float]], duration: float, table: Mapping[str, str], source: str
) -> tuple[Phone, ...]:
    """An engine's phones as (label, end seconds), in order, each starting where the one
    before ends -> canonical phones covering exactly 0 .. ``duration`` seconds.

    Labels are mapped through ``table`` (see `model.speech.phones`); an unknown one raises
    `SpeechError` naming it. The timings must fit the audio: the last phone ends within
    `TIMING_TOLERANCE_S` of ``duration``, except that a final pause may run past the
    audio (diphone voices cut the waveform in the middle of the last pause). Then phones
    are clipped at ``duration``, empty ones dropped, adjacent pauses merged, and the last
    pause stretched (or one added) to ``duration``.
    """
    mapped: list[tuple[str, float]] = []
    for label, end in ends:
        phone = table.get(label)
        if phone is None:
            raise SpeechError(
                f"{source} produced the phone label {label!r}, which has no canonical phone; "
                "add it to its table in model/speech/phones.py"
            )
        if mapped and end < mapped[-1][1] - 1e-6:
            raise SpeechError(
                f"{source}: phone times go backwards at {label!r} ({end:.3f} s after {mapped[-1][1]:.3f} s)"
            )
        mapped.append((phone, float(end)))
    if not mapped:
        raise SpeechError(f"{source} produced no phones")
    speech_end = max((end for phone, end in mapped if phone != SILENCE), default=0.0)
    if speech_end > duration + TIMING_TOLERANCE_S or mapped[-1][1] < duration - TIMING_TOLERANCE_S:
        raise SpeechError(
            f"{source}: phone timings end at {mapped[-1][1]:.3f} s (speech at {speech_end:.3f} s) "
            f"but the audio lasts {duration:.3f} s"
        )
    phones: list[Phone] = []
    start = 0.0
    for phone, end in mapped:
        end = min(end, duration)
        if end <= start:
            continue
        if phones and phone == SILENCE == phones[-1].label:
            phones[-1] = Phone(SILENCE, phones[-1].start, end)
        else:
            phones.append(Phone(phone, start, end))
        start = end
    if not phones:
        return (Phone(SILENCE, 0.0, duration),)
    if start < duration:
        last = phones[-1]
        if last.label == SILENCE or duration - start < _MIN_PAUSE_S:
            phones[-1] = Phone(last.label, last.start, duration)
        else:
            phones.append(Phone(SILENCE, start, duration))
    return tuple(phones)


def check_phones(phones: tuple[Phone, ...], duration: float) -> None:
    """Raise `ValueError` unless ``phones`` are canonical, non-empty, contiguous and cover
    exactly 0 .. ``duration`` seconds."""
    if not phones:
        raise ValueError("no phones")
    unknown = sorted({phone.label for phone in phones} - set(PHONES))
    if unknown:
        raise ValueError(f"phone labels outside the canonical set: {', '.join(unknown)}")
    if phones[0].start != 0.0 or abs(phones[-1].end - duration) > 1e-9:
        raise ValueError(f"phones cover {phones[0].start:.3f}..{phones[-1].end:.3f} s, audio 0..{duration:.3f} s")
    for before, after in zip(phones, phones[1:]):
        if after.start != before.end:
            raise ValueError(f"phones not contiguous at {before.end:.3f} s")
    if any(phone.end <= phone.start for phone in phones):
        raise ValueError("phones of zero or negative length")


def run_engine(command: list[str], cwd: Path, name: str) -> str:
    """Run an engine's command in ``cwd``; its stdout, or `SpeechError` with its stderr."""
    try:
        result = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, errors="replace",
            timeout=ENGINE_TIMEOUT_S, check=False,
        )
    except subprocess.TimeoutExpired:
        raise SpeechError(f"{name} did not finish within {ENGINE_TIMEOUT_S:.0f} s") from None
    except OSError as exc:
        raise SpeechError(f"{name} could not be started: {exc}") from None
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip())[-2000:]
        raise SpeechError(f"{name} failed (exit status {result.returncode}): {detail}")
    return result.stdout


def _engine(name: str):
    # imported here, not at the top: the engine modules import this one, and Piper's
    # onnxruntime should only load for callers that use it
    return importlib.import_module(f"{__package__}.{name}_engine")


def _check_range(name: str, value: float, bounds: tuple[float, float]) -> None:
    if not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"{name} {value} is outside {bounds[0]}..{bounds[1]}")
