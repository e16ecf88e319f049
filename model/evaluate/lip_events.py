"""Lip events of real speech: facts a mouth must show, whoever animates it (issue 17).

Given the inner-lip gap g (T,) in mm at ``fps`` (`real_speech.mouth_opening`), the gap of
the face at rest g_rest (mm), and the phones of the recording from forced alignment
(label, start, end in seconds; frame i shows time t_i = i / fps):

- **closures**: every /p b m/ phone lasting >= `CLOSURE_MIN_S` (30 ms) is *closed* when
  min over frames with start - 1/fps <= t_i <= end + 1/fps of (g_i - g_rest) <= `CLOSED_MM`
  (1 mm): the lips touch on some frame of the phone, give or take a frame.
  Share = closed / counted.
- **open vowels**: every AA AE AH AO AW AY EH lasting >= `OPEN_MIN_S` (80 ms) is *open*
  when max over frames with start <= t_i < end of (g_i - g_rest) >= `OPEN_MM` (3 mm).
  Share = open / counted.
- **pauses**: for every silence lasting >= `PAUSE_MIN_S` (300 ms), its inner frames,
  start + `PAUSE_MARGIN_S` <= t_i <= end - `PAUSE_MARGIN_S` (away from the 100 ms in
  which the lips leave and reach rest), are *at rest* when g_i - g_rest <= `CLOSED_MM`.
  Share = frames at rest / inner frames (frames, not pauses: a long pause weighs more).

The aims of issue 17: each share >= 95%.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..core.audio import MOTION_FPS
from ..speech.phones import SILENCE, Phone

BILABIALS = ("p", "b", "m")
OPEN_VOWELS = ("aa", "ae", "ah", "ao", "aw", "ay", "eh")
CLOSURE_MIN_S = 0.03
OPEN_MIN_S = 0.08
PAUSE_MIN_S = 0.3
PAUSE_MARGIN_S = 0.1
CLOSED_MM = 1.0
OPEN_MM = 3.0
AIM = 0.95


@dataclass(frozen=True)
class Miss:
    """A phone where the lips did not do what speech does: ``gap_mm`` is the gap above rest
    that decided it (the smallest for a closure, the largest for a vowel)."""

    label: str
    time: float  # s: the phone's start
    gap_mm: float
    recording: str = ""


@dataclass(frozen=True)
class LipEvents:
    """Counts and misses of one or more recordings (they add up with ``+``)."""

    closures: int = 0
    closed: int = 0
    vowels: int = 0
    opened: int = 0
    pause_frames: int = 0
    rested: int = 0
    missed_closures: tuple[Miss, ...] = ()
    missed_vowels: tuple[Miss, ...] = ()

    def __add__(self, other: "LipEvents") -> "LipEvents":
        return LipEvents(self.closures + other.closures, self.closed + other.closed, self.vowels + other.vowels,
                         self.opened + other.opened, self.pause_frames + other.pause_frames,
                         self.rested + other.rested, self.missed_closures + other.missed_closures,
                         self.missed_vowels + other.missed_vowels)

    @staticmethod
    def _share(hits: int, total: int) -> float:
        return hits / total if total else float("nan")

    @property
    def closure_share(self) -> float:
        return self._share(self.closed, self.closures)

    @property
    def open_share(self) -> float:
        return self._share(self.opened, self.vowels)

    @property
    def pause_share(self) -> float:
        return self._share(self.rested, self.pause_frames)

    @property
    def meets_aims(self) -> bool:
        return all(share >= AIM for share in (self.closure_share, self.open_share, self.pause_share))

    def summary(self) -> dict:
        return {"closures": self.closures, "closed": self.closed, "closure_share": self.closure_share,
                "vowels": self.vowels, "opened": self.opened, "open_share": self.open_share,
                "pause_frames": self.pause_frames, "rested": self.rested, "pause_share": self.pause_share,
                "missed_closures": [vars(m) for m in self.missed_closures],
                "missed_vowels": [vars(m) for m in self.missed_vowels], "meets_aims": self.meets_aims}


def _frames_between(first_s: float, last_s: float, frames: int, fps: float) -> np.ndarray:
    """Indices i in [0, frames) with first_s <= i / fps <= last_s (a small tolerance for rounding)."""
    lo = max(0, int(np.ceil(first_s * fps - 1e-6)))
    hi = min(frames - 1, int(np.floor(last_s * fps + 1e-6)))
    return np.arange(lo, hi + 1)


def lip_events(gap_mm: np.ndarray, rest_mm: float, phones: Sequence[Phone], fps: float = MOTION_FPS,
               recording: str = "") -> LipEvents:
    """(T,) inner-lip gap in mm + the face's rest gap + the recording's phones -> `LipEvents`
    (formulas in the module docstring). Phones past the motion's end are not counted;
    ``recording`` names the misses."""
    above = np.asarray(gap_mm, np.float64) - float(rest_mm)
    if above.ndim != 1 or not len(above):
        raise ValueError(f"expected a (T,) gap curve, got shape {np.shape(gap_mm)}")
    frames, step = len(above), 1.0 / fps
    closures = closed = vowels = opened = pause_frames = rested = 0
    missed_closures, missed_vowels = [], []
    for phone in phones:
        duration = phone.end - phone.start
        if phone.label in BILABIALS and duration >= CLOSURE_MIN_S - 1e-9:
            index = _frames_between(phone.start - step, phone.end + step, frames, fps)
            if len(index):
                closures += 1
                smallest = float(above[index].min())
                if smallest <= CLOSED_MM:
                    closed += 1
                else:
                    missed_closures.append(Miss(phone.label, phone.start, smallest, recording))
        elif phone.label in OPEN_VOWELS and duration >= OPEN_MIN_S - 1e-9:
            index = _frames_between(phone.start, phone.end - 1e-6, frames, fps)
            if len(index):
                vowels += 1
                largest = float(above[index].max())
                if largest >= OPEN_MM:
                    opened += 1
                else:
                    missed_vowels.append(Miss(phone.label, phone.start, largest, recording))
        elif phone.label == SILENCE and duration >= PAUSE_MIN_S - 1e-9:
            index = _frames_between(phone.start + PAUSE_MARGIN_S, phone.end - PAUSE_MARGIN_S, frames, fps)
            pause_frames += len(index)
            rested += int((above[index] <= CLOSED_MM).sum())
    return LipEvents(closures, closed, vowels, opened, pause_frames, rested, tuple(missed_closures),
                     tuple(missed_vowels))


def lip_events_markdown(rows: Sequence[tuple[str, LipEvents]]) -> str:
    """One row per (system, `LipEvents`): the three shares with their counts, then the missed closures."""
    lines = ["| system | lips close on /p b m/ (≥ 30 ms) | open on AA AE AH AO AW AY EH (≥ 80 ms) | "
             "rest closed in pauses (≥ 300 ms, inner frames) |", "|---|---:|---:|---:|"]
    for name, events in rows:
        lines.append(f"| {name} | {events.closure_share:.0%} ({events.closed}/{events.closures}) | "
                     f"{events.open_share:.0%} ({events.opened}/{events.vowels}) | "
                     f"{events.pause_share:.0%} ({events.rested}/{events.pause_frames}) |")
    lines += ["", f"Closed: within {CLOSED_MM:g} mm of the rest gap on some frame of the phone ±1 frame; open: "
              f"≥ {OPEN_MM:g} mm above rest on some frame of the vowel; pause frames at rest: within {CLOSED_MM:g} mm "
              f"of it, more than {PAUSE_MARGIN_S * 1000:.0f} ms inside the pause (`model.evaluate.lip_events`). "
              f"Aim: ≥ {AIM:.0%} each."]
    for name, events in rows:
        if events.missed_closures:
            lines.append(f"- {name}, missed closures: " + ", ".join(
                f"{m.recording} {m.label} at {m.time:.2f} s ({m.gap_mm:+.1f} mm)".lstrip() for m in events.missed_closures))
    return "\n".join(lines)
