"""Caption schedules: which style and emotion captions are in force when.

A schedule is a list of segments sorted by start time (seconds); each segment's captions
hold from its start until the next segment starts (the last until the end of the audio).
As a JSON file (``--schedule FILE.json``) it is a list of objects, or ``{"segments": [...]}``::

    [{"start": 0, "style": "a calm old man, small head movements", "emotion": "neutral"},
     {"start": 5.3, "emotion": "very happy"}]

- ``start``: seconds, >= 0; may be left out for the first segment (then 0);
- ``style`` / ``emotion``: free text of at most 1,000 characters; "" means no caption;
  a key left out keeps the previous segment's caption (so a segment can change just one);
- when the first segment starts after 0, the default captions (``--style`` / ``--emotion``,
  "" if none) are in force before it.

Segments are sorted by start; two starting on the same motion frame are an error.

Frames: a segment starting at t seconds takes effect from the first motion frame at or
after t (frame ceil(t * fps)), so every frame shown before t keeps the earlier captions.
"""
from __future__ import annotations

import json
import math
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from .audio import MOTION_FPS
from .errors import BadInput

MAX_CAPTION_CHARS = 1000  # per caption: a paragraph of direction; the text encoder reads at most 256 tokens
_KEYS = ("start", "style", "emotion")
LATEST_START_SECONDS = 1e12  # later starts read as this: past any audio (check_duration says so), and
# their frames stay exact integers


class ScheduleError(BadInput):
    """A caption schedule that cannot be used; the message says which entry and why."""


@dataclass(frozen=True)
class CaptionSegment:
    """Captions in force from ``start`` seconds on ("" = no caption)."""

    start: float
    style: str
    emotion: str


def start_frame(seconds: float, fps: float = MOTION_FPS) -> int:
    """The first frame at or after ``seconds`` (frame i shows time i / fps)."""
    return int(math.ceil(round(seconds * fps, 6)))  # rounding first: 4.0 * 25 is 100.00000000000001


@dataclass(frozen=True)
class Schedule:
    """Caption segments sorted by start, the first at 0 s (build with `parse_schedule`)."""

    segments: tuple[CaptionSegment, ...]

    def __post_init__(self) -> None:
        if not self.segments or self.segments[0].start != 0:
            raise ScheduleError("a schedule's first segment must start at 0 s")
        if any(b.start <= a.start for a, b in zip(self.segments, self.segments[1:])):
            raise ScheduleError("schedule segments must be sorted by start time")

    @classmethod
    def constant(cls, style: str = "", emotion: str = "") -> "Schedule":
        return parse_schedule(None, style, emotion)

    def start_frames(self, fps: float = MOTION_FPS) -> tuple[int, ...]:
        """The frame each segment takes effect from (the first is 0)."""
        return tuple(start_frame(s.start, fps) for s in self.segments)

    def change_frames(self, fps: float = MOTION_FPS) -> tuple[int, ...]:
        """Frames where the captions change (every segment start but the first)."""
        return self.start_frames(fps)[1:]

    def at_frame(self, frame: int, fps: float = MOTION_FPS) -> CaptionSegment:
        """The segment in force at ``frame``."""
        index = max(i for i, f in enumerate(self.start_frames(fps)) if f <= max(frame, 0))
        return self.segments[index]

    def window(self, start: int, length: int, fps: float = MOTION_FPS) -> tuple[tuple[int, str, str], ...]:
        """Captions over frames [start, start + length): ((offset, style, emotion), ...), offsets
        relative to ``start``, the first 0 (the segment in force at ``start``), as
        `model.data.dataset.Window.segments` and `ARBatch.segment_start` expect."""
        frames = self.start_frames(fps)
        first = self.at_frame(start, fps)
        view = [(0, first.style, first.emotion)]
        view += [(f - start, s.style, s.emotion) for f, s in zip(frames, self.segments) if start < f < start + length]
        return tuple(view)

    def check_duration(self, seconds: float, fps: float = MOTION_FPS) -> None:
        """Raise `ScheduleError` if a caption change lies at or after the end of the audio."""
        frames = max(1, int(round(seconds * fps)))
        late = [s for s, f in zip(self.segments[1:], self.change_frames(fps)) if f >= frames]
        if late:
            raise ScheduleError(f"a caption change at {late[0].start:g} s is after the end of the audio "
                                f"({seconds:.2f} s); schedule starts are in seconds")

    def to_list(self) -> list[dict]:
        """JSON-able: [{"start", "style", "emotion"}, ...] (what `parse_schedule` reads back)."""
        return [{"start": s.start, "style": s.style, "emotion": s.emotion} for s in self.segments]

    @property
    def has_changes(self) -> bool:
        return len(self.segments) > 1


def _caption(value, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise ScheduleError(f"{where}: {key} must be text, got {type(value).__name__}")
    if len(value) > MAX_CAPTION_CHARS:  # before any other look at it: a huge caption costs nothing to refuse
        raise ScheduleError(f"{where}: the {key} caption has {len(value)} characters; the limit is {MAX_CAPTION_CHARS}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (e.g. from undecodable bytes): the text encoder cannot read it
        raise ScheduleError(f"{where}: the {key} caption is not valid text (it holds an unpaired surrogate)") from None
    # line breaks and tabs read as spaces; other control characters are no words
    value = " ".join(value.split())
    control = next((c for c in value if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        raise ScheduleError(f"{where}: the {key} caption holds the control character {control!r}; write plain text")
    return value


def _entry(raw, index: int) -> dict:
    """One schedule entry -> {"start"?, "style"?, "emotion"?} (keys absent = not given)."""
    where = f"schedule entry {index + 1}"
    if isinstance(raw, CaptionSegment):
        return {"start": raw.start, "style": raw.style, "emotion": raw.emotion}
    if isinstance(raw, (list, tuple)) and len(raw) == 3:
        return dict(zip(_KEYS, raw))
    if not isinstance(raw, Mapping):
        raise ScheduleError(f"{where}: expected an object with start, style and emotion, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise ScheduleError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; use {', '.join(_KEYS)}")
    return dict(raw)


def _start(value, index: int) -> float:
    where = f"schedule entry {index + 1}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScheduleError(f"{where}: start must be a number of seconds, got {value!r}")
    # ints are checked apart: math.isfinite overflows on one past float's range (10**400)
    if not (isinstance(value, int) or math.isfinite(value)) or value < 0:
        raise ScheduleError(f"{where}: start must be a finite number of seconds >= 0, got {value!r}")
    return float(min(value, LATEST_START_SECONDS))


def parse_schedule(entries: Iterable | Schedule | None = None, style: str = "", emotion: str = "",
                   fps: float = MOTION_FPS) -> Schedule:
    """A list of entries (dicts, `CaptionSegment`s or (start, style, emotion) tuples), a
    `Schedule`, or None -> a validated `Schedule`; ``style`` / ``emotion`` are the default
    captions (in force before the first entry, and inherited by keys it leaves out)."""
    if isinstance(entries, Schedule):
        return entries
    if isinstance(entries, (str, bytes, Mapping)):
        raise ScheduleError("a schedule is a list of entries (use load_schedule for a file)")
    defaults = {"style": _caption(style, "default captions", "style"),
                "emotion": _caption(emotion, "default captions", "emotion")}
    raw = [_entry(e, i) for i, e in enumerate(entries or [])]
    timed = []
    for index, entry in enumerate(raw):
        if "start" not in entry and index > 0:
            raise ScheduleError(f"schedule entry {index + 1}: start is missing (only the first entry may leave it out)")
        timed.append((_start(entry.get("start", 0.0), index), index, entry))
    timed.sort(key=lambda item: item[0])
    segments, current = [], dict(defaults)
    if not timed or timed[0][0] > 0:
        segments.append(CaptionSegment(0.0, current["style"], current["emotion"]))
    for start, index, entry in timed:
        for key in ("style", "emotion"):
            if key in entry:
                current[key] = _caption(entry[key], f"schedule entry {index + 1}", key)
        segments.append(CaptionSegment(start, current["style"], current["emotion"]))
    frames = [start_frame(s.start, fps) for s in segments]
    for (a, b), (fa, fb) in zip(zip(segments, segments[1:]), zip(frames, frames[1:])):
        if fa == fb:
            raise ScheduleError(f"caption changes at {a.start:g} s and {b.start:g} s fall on the same motion frame "
                                f"({1000 / fps:.0f} ms apart at least)")
    return Schedule(tuple(segments))


def load_schedule(path: str | os.PathLike, style: str = "", emotion: str = "", fps: float = MOTION_FPS) -> Schedule:
    """Read a JSON schedule file (a list, or an object with "segments"); see the module docstring."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScheduleError(f"schedule file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ScheduleError(f"schedule file '{path}' is not readable JSON ({exc})") from None
    if isinstance(data, Mapping):
        if set(data) != {"segments"}:
            raise ScheduleError(f"schedule file '{path}': expected a list or {{\"segments\": [...]}}")
        data = data["segments"]
    if not isinstance(data, list):
        raise ScheduleError(f"schedule file '{path}': expected a list of segments, got {type(data).__name__}")
    try:
        return parse_schedule(data, style, emotion, fps)
    except ScheduleError as exc:
        raise ScheduleError(f"schedule file '{path}': {exc}") from None
