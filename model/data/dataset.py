"""The CapTalk dataset format and its loader (no torch: training wraps it).

A dataset is a folder::

    dataset.json       {"format": "captalk-dataset", "format_version": 1, "head_model": id,
                        "channels": [C names], "fps": 25.0, "sample_rate": 16000, ...}
    manifest.jsonl     one JSON object per clip (below), any order
    clips/...          the files the manifest points to (paths relative to the folder)

A clip entry (JSON Lines, one per line):

    id         unique string
    split      "train" | "val" | "test"
    audio      16 kHz mono WAV (other rates are resampled on load, see model.core.audio)
    motion     motion file (model.core.motion_file): (T, C) float32 at 25 fps, channel names,
               the head-model id in its meta; T within one frame of the audio's length
    style      style caption (free text, "" = none)
    emotion    emotion caption (free text, "" = none)
    segments   optional: [{"start": s, "style": ..., "emotion": ...}, ...] sorted by start,
               the first at 0: captions that change during the clip (start in seconds);
               when present, ``style``/``emotion`` equal the first segment's
    voice      speaker or voice id (used to hold voices out of training)
    text       optional transcript
    phones     optional: [[label, start, end], ...] timed phones (seconds, model.speech.phones)
    controls   optional: the data engine's hidden attributes per segment (evaluation only)

Real data (e.g. FLAME parameters tracked from video) uses the same format with its own
head model: channels are whatever that head model defines, nothing here is ARKit-bound.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..core.audio import MOTION_FPS, SAMPLE_RATE, frame_count
from ..core.motion_file import MotionFileError, load_motion
from ..core.errors import BadInput
from ..core.schedule import MAX_CAPTION_CHARS, CaptionSegment

FORMAT_NAME = "captalk-dataset"
FORMAT_VERSION = 1
INFO_FILE = "dataset.json"
MANIFEST_FILE = "manifest.jsonl"
SPLITS = ("train", "val", "test")
WINDOW_FRAMES = 100


class DatasetError(BadInput):
    """A dataset that cannot be used at all (missing or foreign files); the message says why."""


@dataclass(frozen=True)
class ClipRecord:
    """One manifest entry, paths resolved."""

    clip_id: str
    split: str
    audio: Path
    motion: Path
    segments: tuple[CaptionSegment, ...]
    voice: str
    text: str = ""
    controls: tuple = ()
    entry: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def style(self) -> str:
        return self.segments[0].style

    @property
    def emotion(self) -> str:
        return self.segments[0].emotion


@dataclass(frozen=True)
class BadClip:
    clip_id: str
    reason: str


@dataclass(frozen=True)
class DatasetInfo:
    root: Path
    head_model: str
    channels: tuple[str, ...]
    fps: float
    extra: dict = field(default_factory=dict, repr=False)


def write_info(root: str | os.PathLike, head_model: str, channels, **extra) -> Path:
    path = Path(root) / INFO_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "head_model": head_model,
            "channels": list(channels), "fps": MOTION_FPS, "sample_rate": SAMPLE_RATE, **extra}
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(info, indent=2))
    os.replace(temporary, path)
    return path


def read_info(root: str | os.PathLike) -> DatasetInfo:
    root = Path(root)
    try:
        info = json.loads((root / INFO_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"'{root}' is not a CapTalk dataset: cannot read {INFO_FILE} ({exc})") from None
    if info.get("format") != FORMAT_NAME:
        raise DatasetError(f"'{root / INFO_FILE}' is not a {FORMAT_NAME} file")
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise DatasetError(f"'{root}' was written by a newer CapTalk (format {info['format_version']})")
    extra = {k: v for k, v in info.items() if k not in ("head_model", "channels", "fps")}
    return DatasetInfo(root, str(info["head_model"]), tuple(info["channels"]), float(info.get("fps", MOTION_FPS)), extra)


def parse_entry(root: Path, entry: dict) -> ClipRecord:
    """A manifest entry -> `ClipRecord`; raises ValueError/KeyError/TypeError with the field at fault."""
    split = entry["split"]
    if split not in SPLITS:
        raise ValueError(f"split '{split}' is not one of {SPLITS}")
    raw = entry.get("segments") or [{"start": 0.0, "style": entry.get("style", ""), "emotion": entry.get("emotion", "")}]
    segments = tuple(CaptionSegment(float(s["start"]), str(s.get("style", "")), str(s.get("emotion", ""))) for s in raw)
    if segments[0].start != 0 or any(b.start <= a.start for a, b in zip(segments, segments[1:])):
        raise ValueError("segments must start at 0 and be sorted by start time")
    for segment in segments:
        if len(segment.style) > MAX_CAPTION_CHARS or len(segment.emotion) > MAX_CAPTION_CHARS:
            raise ValueError(f"a caption is longer than {MAX_CAPTION_CHARS} characters")
    return ClipRecord(
        clip_id=str(entry["id"]), split=split, audio=root / entry["audio"], motion=root / entry["motion"],
        segments=segments, voice=str(entry.get("voice", "")), text=str(entry.get("text", "")),
        controls=tuple(entry.get("controls", ())), entry=entry,
    )


def read_manifest(root: str | os.PathLike) -> tuple[list[ClipRecord], list[BadClip]]:
    """All entries of ``manifest.jsonl``: (parsed records, entries that could not be parsed)."""
    root = Path(root)
    records, bad = [], []
    try:
        lines = (root / MANIFEST_FILE).read_text().splitlines()
    except OSError as exc:
        raise DatasetError(f"'{root}': cannot read {MANIFEST_FILE} ({exc})") from None
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = parse_entry(root, json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            bad.append(BadClip(f"line {number}", f"bad manifest entry: {exc!r}"))
            continue
        if record.clip_id in seen:
            bad.append(BadClip(record.clip_id, f"line {number}: duplicate id"))
            continue
        seen.add(record.clip_id)
        records.append(record)
    return records, bad


def check_clip(record: ClipRecord, info: DatasetInfo) -> str | None:
    """Why ``record`` cannot be trained on, or None if it is fine.

    Checks: the audio reads and is finite; the motion file reads, is finite, has the
    dataset's channels, and has within one frame as many frames as the audio lasts;
    segment starts lie inside the clip.
    """
    import soundfile

    try:
        audio_info = soundfile.info(str(record.audio))
    except (RuntimeError, OSError, soundfile.LibsndfileError) as exc:
        return f"audio '{record.audio.name}' unreadable ({exc})"
    if audio_info.frames == 0:
        return f"audio '{record.audio.name}' is empty"
    if audio_info.subtype.startswith(("FLOAT", "DOUBLE")):
        samples, _ = soundfile.read(str(record.audio), dtype="float32")
        if not np.isfinite(samples).all():
            return f"audio '{record.audio.name}' contains NaN or infinite samples"
    try:
        clip = load_motion(record.motion)
    except MotionFileError as exc:
        return str(exc)
    if clip.channels != info.channels:
        return f"motion channels differ from the dataset's ({len(clip.channels)} vs {len(info.channels)} for '{info.head_model}')"
    if clip.meta.get("head_model", info.head_model) != info.head_model:
        return f"motion is for head model '{clip.meta['head_model']}', the dataset is '{info.head_model}'"
    expected = frame_count(int(round(audio_info.frames * SAMPLE_RATE / audio_info.samplerate)))
    if abs(clip.num_frames - expected) > 1:
        return f"motion has {clip.num_frames} frames but the audio lasts {expected} frames"
    if record.segments[-1].start >= audio_info.frames / audio_info.samplerate:
        return "a caption segment starts after the end of the clip"
    return None


@dataclass
class Dataset:
    """A validated dataset: ``clips`` can be trained on, ``bad`` says what was left out and why."""

    info: DatasetInfo
    clips: list[ClipRecord]
    bad: list[BadClip]

    def split(self, name: str) -> list[ClipRecord]:
        return [c for c in self.clips if c.split == name]

    def report(self) -> str:
        lines = [f"{self.info.root}: {len(self.clips)} usable clips "
                 + ", ".join(f"{s} {len(self.split(s))}" for s in SPLITS)
                 + f"; head model '{self.info.head_model}' ({len(self.info.channels)} channels)"]
        if self.bad:
            lines.append(f"{len(self.bad)} clips left out:")
            lines += [f"  {b.clip_id}: {b.reason}" for b in self.bad]
        return "\n".join(lines)


def open_dataset(root: str | os.PathLike, channels: tuple[str, ...] | None = None,
                 splits: tuple[str, ...] = SPLITS) -> Dataset:
    """Read and validate a dataset; bad clips are reported in ``Dataset.bad``, never raised.

    ``channels``: the channel names of the head model to be trained (a checkpoint's or a
    rig's); a dataset for another head raises `DatasetError`.
    """
    info = read_info(root)
    if channels is not None and tuple(channels) != info.channels:
        raise DatasetError(
            f"'{root}' holds motion for head model '{info.head_model}' ({len(info.channels)} channels), "
            f"not for the {len(channels)} channels asked for"
        )
    records, bad = read_manifest(root)
    good = []
    for record in records:
        if record.split not in splits:
            continue
        reason = check_clip(record, info)
        if reason:
            bad.append(BadClip(record.clip_id, reason))
        else:
            good.append(record)
    return Dataset(info, good, bad)


@dataclass(frozen=True)
class Window:
    """A training window of ``WINDOW_FRAMES`` frames starting at frame ``start``.

    motion (W, C) and previous (W, C) float32; ``valid`` (W,) bool marks real frames
    (clips shorter than a window are padded with their last frame); ``has_previous``
    is False for a window at frame 0 (``previous`` is then zeros); a window starting
    before frame W has a previous window left-padded with the clip's first frame, the
    prefix generation gives a caption change that falls that early. ``segments``
    holds the captions that touch the window, starts in frames relative to ``start``
    (the first clamped to 0).
    """

    clip_id: str
    start: int
    motion: np.ndarray
    previous: np.ndarray
    valid: np.ndarray
    has_previous: bool
    segments: tuple[tuple[int, str, str], ...]


def window_at(record: ClipRecord, motion: np.ndarray, start: int, length: int = WINDOW_FRAMES,
              fps: float = MOTION_FPS) -> Window:
    """Cut the window [start, start + length) and the one before it from a clip's (T, C) motion."""
    num_frames = len(motion)
    current = motion[start:start + length]
    valid = np.zeros(length, dtype=bool)
    valid[:len(current)] = True
    if len(current) < length:
        current = np.concatenate([current, np.repeat(current[-1:], length - len(current), axis=0)])
    has_previous = start > 0
    previous = motion[max(start - length, 0):start] if has_previous else np.zeros_like(current)
    if len(previous) < length:
        previous = np.concatenate([np.repeat(previous[:1], length - len(previous), axis=0), previous])
    segments = []
    for segment in record.segments:
        frame = int(round(segment.start * fps)) - start
        if frame < length:
            segments.append((max(frame, 0), segment.style, segment.emotion))
    # only the last segment starting at or before the window start matters among those clamped to 0
    first = max(i for i, s in enumerate(segments) if s[0] == 0)
    return Window(record.clip_id, start, current.astype(np.float32), previous.astype(np.float32), valid,
                  has_previous, tuple(segments[first:]))


def random_windows(dataset: Dataset, split: str, rng: np.random.Generator,
                   length: int = WINDOW_FRAMES) -> Iterator[Window]:
    """Endless random windows from ``split``, clips drawn in proportion to their length.

    Half the windows start on a multiple of ``length`` (as generation cuts a clip), the
    rest anywhere, so the model sees every phase of speech at a window border.
    """
    clips = dataset.split(split)
    if not clips:
        raise DatasetError(f"no usable clips in split '{split}'")
    motions = [load_motion(c.motion).motion for c in clips]
    lengths = np.array([len(m) for m in motions], dtype=float)
    probabilities = lengths / lengths.sum()
    while True:
        k = rng.choice(len(clips), p=probabilities)
        last = max(len(motions[k]) - length, 0)
        start = int(rng.integers(0, last + 1))
        if rng.random() < 0.5:
            start = (start // length) * length
        yield window_at(clips[k], motions[k], start, length)
