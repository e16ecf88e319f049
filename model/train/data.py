"""Training data held in memory and the batches both stages are built from.

Everything a step needs is in numpy arrays loaded once: the clips of a split as one
(N, C) array of normalised motion with per-clip offsets (`ClipTable`); for the AR stage
also the speech features the same way (`FeatureTable`). A batch is then a handful of
vectorised gathers, so data never holds up a CPU training step.

Windows follow `model.data.dataset` exactly: `sample_windows` is the vectorised form of
`random_windows` (clips drawn in proportion to their length, a uniform start, half the
starts snapped to a multiple of the window) and `cut_windows` gives what `window_at` gives
(a short clip padded with its last frame, ``valid`` marking real frames; the previous
window, zeros when there is none).

Randomness: step s of a run draws its whole global batch from ``step_rng(seed, stream,
s)``; a process keeps only its rows (`rank_rows`). So a step's windows do not depend on
the number of processes, and nothing random carries over between steps (resume).
"""
from __future__ import annotations

import threading
import zlib
from pathlib import Path
from collections import OrderedDict
from dataclasses import dataclass, fields

import numpy as np
import torch

from ..ar.batch import MAX_SEGMENTS, ARBatch
from ..core.audio import MOTION_FPS
from ..codec import ChannelStats
from ..data.captions import render_captions
from ..data.controls import ControlSegment, controls_from_dict
from ..data.dataset import WINDOW_FRAMES, BadClip, ClipRecord, DatasetError, open_dataset, read_info
from ..core.motion_file import MotionFileError, load_motion
from .distributed import DistEnv

CODEC_STREAM = 1  # the codec stage's windows
AR_STREAM = 2  # the AR stage's windows
CAPTION_STREAM = 3  # the AR stage's per-epoch captions
P_DROP_PREVIOUS = 0.1  # the codec decoder's "no previous window" path is trained on this share


def step_rng(seed: int, stream: int, step: int) -> np.random.Generator:
    """The generator of one step's global batch (the same on every process)."""
    return np.random.default_rng([seed, stream, step])


def rank_rows(batch: int, rank: int, world_size: int) -> slice:
    """Rows of a global batch that process ``rank`` trains on (``batch`` divides evenly)."""
    per_rank = batch // world_size
    return slice(rank * per_rank, (rank + 1) * per_rank)


@dataclass(frozen=True)
class ClipTable:
    """The clips of one split in memory: K clips, N frames in all.

    motion (N, C) float32 normalised, clip k at rows offsets[k] : offsets[k] + lengths[k].
    """

    records: tuple[ClipRecord, ...]
    motion: np.ndarray
    offsets: np.ndarray  # (K,) int64
    lengths: np.ndarray  # (K,) int64

    @classmethod
    def build(cls, records: list[ClipRecord], motions: list[np.ndarray], stats: ChannelStats) -> "ClipTable":
        """Records and their (T, C) motions in real units (`load_motions`) -> normalised table."""
        lengths = np.array([len(m) for m in motions], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        motion = (stats.normalise(np.concatenate(motions).astype(np.float32)).astype(np.float32) if motions
                  else np.zeros((0, stats.channels), np.float32))
        return cls(tuple(records), motion, offsets, lengths)

    @property
    def frames(self) -> int:
        return int(self.lengths.sum())

    def __len__(self) -> int:
        return len(self.records)


def load_motions(records: list[ClipRecord], channels: int) -> tuple[list[ClipRecord], list[np.ndarray], list[BadClip]]:
    """Every clip's (T, C) motion in real units: (records kept, their motions, clips left out and why)."""
    kept, motions, bad = [], [], []
    for record in records:
        try:
            motion = load_motion(record.motion).motion
        except (MotionFileError, OSError) as exc:
            bad.append(BadClip(record.clip_id, str(exc)))
            continue
        if motion.ndim != 2 or motion.shape[1] != channels or not len(motion) or not np.isfinite(motion).all():
            bad.append(BadClip(record.clip_id, f"motion of shape {motion.shape} is empty, not finite or not "
                                               f"{channels} channels"))
            continue
        kept.append(record)
        motions.append(motion)
    return kept, motions, bad


def open_training_data(root: Path, head_model: str, channels: tuple[str, ...], fix: str,
                       env: DistEnv) -> tuple[list[ClipRecord], list[ClipRecord]]:
    """Open and validate a dataset's train and val splits; report clips left out (rank 0).

    Returns (train records, val records). Raises `DatasetError` for a dataset made for
    another head model (``fix`` says what to do instead) or one without training clips;
    bad clips are only reported.
    """
    info = read_info(root)
    if info.head_model != head_model or tuple(info.channels) != tuple(channels):
        raise DatasetError(
            f"dataset '{root}' holds motion for head model '{info.head_model}' ({len(info.channels)} channels), "
            f"not for head model '{head_model}' ({len(channels)} channels) used here. {fix}"
        )
    dataset = open_dataset(root, splits=("train", "val"))
    if env.is_main:
        print(dataset.report())
    train_records, val_records = dataset.split("train"), dataset.split("val")
    if not train_records:
        raise DatasetError(f"dataset '{root}' has no usable clips in its train split")
    return train_records, val_records


def report_left_out(bad: list[BadClip], env: DistEnv) -> None:
    if bad and env.is_main:
        print(f"{len(bad)} more clips left out while loading:")
        for clip in bad:
            print(f"  {clip.clip_id}: {clip.reason}")


def sample_windows(lengths: np.ndarray, count: int, rng: np.random.Generator,
                   window: int = WINDOW_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random windows as (clip index (count,), start frame (count,)), the policy of
    `model.data.dataset.random_windows`."""
    probabilities = lengths / lengths.sum()
    clips = rng.choice(len(lengths), size=count, p=probabilities)
    last = np.maximum(lengths[clips] - window, 0)
    starts = rng.integers(0, last + 1)
    snap = rng.random(count) < 0.5  # half on the window grid, as generation cuts a clip
    starts = np.where(snap, (starts // window) * window, starts)
    return clips.astype(np.int64), starts.astype(np.int64)


def frame_index(offsets: np.ndarray, lengths: np.ndarray, clips: np.ndarray, first: np.ndarray,
                count: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of frames first[b] + 0..count-1 of clip clips[b] in a concatenated table.

    Returns index (B, count) int64, clamped into the clip (so a gather never leaves it),
    and inside (B, count) bool, False where the frame lies outside the clip.
    """
    frames = first[:, None] + np.arange(count)[None, :]
    length = lengths[clips][:, None]
    inside = (frames >= 0) & (frames < length)
    index = offsets[clips][:, None] + np.clip(frames, 0, length - 1)
    return index, inside


@dataclass
class CodecBatch:
    """B windows for the codec: motion, previous (B, W, C) float normalised; has_previous
    (B,) bool (False: a clip's first window, or dropped); valid (B, W) bool."""

    motion: torch.Tensor
    previous: torch.Tensor
    has_previous: torch.Tensor
    valid: torch.Tensor

    def to(self, device) -> "CodecBatch":
        return CodecBatch(**{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})

    @property
    def size(self) -> int:
        return int(self.motion.shape[0])


def cut_windows(table: ClipTable, clips: np.ndarray, starts: np.ndarray,
                window: int = WINDOW_FRAMES) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Windows [start, start + window) and the windows before them, as `window_at`.

    Returns motion (B, W, C), previous (B, W, C) (zeros where there is none), valid
    (B, W) bool and has_previous (B,) bool; a short clip's window repeats its last frame.
    """
    index, valid = frame_index(table.offsets, table.lengths, clips, starts, window)
    motion = table.motion[index]
    # frame_index clamps frames before 0 to frame 0: the left-padded prefix of `window_at`
    has_previous = starts > 0
    previous_index, _ = frame_index(table.offsets, table.lengths, clips, starts - window, window)
    previous = np.where(has_previous[:, None, None], table.motion[previous_index], 0.0).astype(np.float32)
    return motion, previous, valid, has_previous


def codec_batch(table: ClipTable, seed: int, step: int, batch: int, rows: slice,
                window: int = WINDOW_FRAMES, p_drop_previous: float = P_DROP_PREVIOUS) -> CodecBatch:
    """Rows ``rows`` of step ``step``'s global batch of ``batch`` random windows; each
    window's previous one is dropped with probability ``p_drop_previous``."""
    rng = step_rng(seed, CODEC_STREAM, step)
    clips, starts = sample_windows(table.lengths, batch, rng, window)
    keep_previous = rng.random(batch) >= p_drop_previous
    clips, starts, keep_previous = clips[rows], starts[rows], keep_previous[rows]
    motion, previous, valid, has_previous = cut_windows(table, clips, starts, window)
    return CodecBatch(torch.from_numpy(motion), torch.from_numpy(previous),
                      torch.from_numpy(has_previous & keep_previous), torch.from_numpy(valid))


def grid_windows(table: ClipTable, limit: int, window: int = WINDOW_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """Fixed validation windows: every clip cut on the window grid (as generation cuts it),
    at most ``limit`` of them spread evenly over the split. (clip (V,), start (V,))."""
    clips, starts = [], []
    for k, length in enumerate(table.lengths):
        for start in range(0, int(length) - 1, window):  # >= 2 real frames: the metrics need two
            clips.append(k)
            starts.append(start)
    clips, starts = np.array(clips, dtype=np.int64), np.array(starts, dtype=np.int64)
    if len(clips) > limit:
        pick = np.unique(np.linspace(0, len(clips) - 1, limit).round().astype(np.int64))
        clips, starts = clips[pick], starts[pick]
    return clips, starts


# ------------------------------------------------------------------------------ AR stage
@dataclass(frozen=True)
class FeatureTable:
    """Per-clip (T_k, D) frame features (speech) concatenated: features (N, D) float16
    (half the memory; the cache stores float16 anyway), clip k at offsets[k] + 0..lengths[k]."""

    features: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray

    @classmethod
    def build(cls, arrays: list[np.ndarray], dim: int) -> "FeatureTable":
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        features = np.concatenate(arrays).astype(np.float16) if arrays else np.zeros((0, dim), np.float16)
        return cls(features, offsets, lengths)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


def speech_windows(table: FeatureTable, clips: np.ndarray, starts: np.ndarray, window: int,
                   context: int) -> tuple[np.ndarray, np.ndarray]:
    """Features of frames [start - A, start + W + A) (A = ``context``): (B, W + 2A, D) float32,
    zeros outside the clip, and (B, W + 2A) bool, True inside it."""
    index, inside = frame_index(table.offsets, table.lengths, clips, starts - context, window + 2 * context)
    speech = table.features[index].astype(np.float32)
    speech *= inside[..., None]
    return speech, inside


def window_segments(frames: tuple[int, ...], start: int, window: int = WINDOW_FRAMES) -> list[tuple[int, int]]:
    """Caption segments in force in the window [start, start + window), as `window_at` finds
    them: [(window-relative start frame, segment index), ...], the first at frame 0."""
    touching = [(max(frame - start, 0), k) for k, frame in enumerate(frames) if frame - start < window]
    first = max(i for i, (frame, _) in enumerate(touching) if frame == 0)
    return touching[first:]


@dataclass(frozen=True)
class ClipCaptions:
    """A clip's caption segments: start frames, the stored captions, and for data-engine
    clips the hidden controls that new phrasings are rendered from each epoch."""

    clip_id: str
    frames: tuple[int, ...]
    stored: tuple[tuple[str, str], ...]  # (style, emotion) per segment
    controls: tuple[ControlSegment, ...] = ()  # empty: real data, the stored captions are all there is

    @classmethod
    def from_record(cls, record: ClipRecord, fps: float = MOTION_FPS) -> "ClipCaptions":
        frames = tuple(int(round(s.start * fps)) for s in record.segments)  # as window_at rounds
        stored = tuple((s.style, s.emotion) for s in record.segments)
        controls: tuple[ControlSegment, ...] = ()
        if record.controls:
            try:
                controls = tuple(controls_from_dict(c) for c in record.controls)
            except (KeyError, TypeError, ValueError):
                controls = ()  # unreadable controls: the stored captions still train
            if len(controls) != len(frames):
                controls = ()
        return cls(record.clip_id, frames, stored, controls)

    def captions(self, seed: int, epoch: int | None) -> tuple[tuple[str, str], ...]:
        """(style, emotion) per segment: re-rendered from the controls for ``epoch`` (the same
        within an epoch, new wording every epoch), or the stored ones (real data; epoch None)."""
        if not self.controls or epoch is None:
            return self.stored
        clip = zlib.crc32(self.clip_id.encode("utf-8"))
        rng = np.random.default_rng([seed, CAPTION_STREAM, epoch, clip])
        # no empty captions here: the AR model drops captions itself (ARConfig.drop_style/emotion)
        return tuple(render_captions(c, rng, p_empty_style=0.0, p_empty_emotion=0.0) for c in self.controls)


class CaptionStates:
    """Caption text -> (tokens, Dt) token states of a frozen text encoder, thread-safe.

    Stored captions (a fixed, small set) go through the on-disk `FeatureCache`; captions
    rendered per epoch are many and short-lived, so they are kept in memory only (an LRU
    of ``memory_items``) and never written to disk.
    """

    def __init__(self, encoder, cache, memory_items: int = 8192):
        self.encoder, self.cache, self.memory_items = encoder, cache, memory_items
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # fast tokenizers fail when used by two threads at once

    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    @property
    def encoder_id(self) -> str:
        return self.encoder.encoder_id

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The encoder's own `encode`, behind the lock: this object stands in for the text
        encoder wherever batches are being built in other threads (generation in validation)."""
        with self._lock:
            return self.encoder.encode(texts)

    def stored(self, texts: list[str]) -> dict[str, np.ndarray]:
        texts = [t for t in dict.fromkeys(texts) if t]
        if not texts:
            return {}
        with self._lock:
            states, mask = self.cache.text(self.encoder, texts)
        return {text: states[i][mask[i]] for i, text in enumerate(texts)}

    def rendered(self, texts: list[str]) -> dict[str, np.ndarray]:
        texts = [t for t in dict.fromkeys(texts) if t]
        with self._lock:
            found = {t: self._memory[t] for t in texts if t in self._memory}
            for text in found:
                self._memory.move_to_end(text)
            missing = [t for t in texts if t not in found]
            if missing:
                states, mask = self.encoder.encode(missing)
                for i, text in enumerate(missing):
                    found[text] = states[i][mask[i]].astype(np.float16)
                    self._memory[text] = found[text]
                while len(self._memory) > self.memory_items:
                    self._memory.popitem(last=False)
        return found


def caption_tensors(rows: list[list[str]], states: dict[str, np.ndarray],
                    dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B rows of K' captions ("" = none) -> (B, K, L, Dt) float, (B, K, L) bool; K = the most
    segments in a row, L = the longest caption (at least 1)."""
    segments = max(len(r) for r in rows)
    length = max([1] + [len(states[t]) for r in rows for t in r if t])
    out = np.zeros((len(rows), segments, length, dim), np.float32)
    mask = np.zeros((len(rows), segments, length), bool)
    for b, row in enumerate(rows):
        for k, text in enumerate(row):
            if text:
                tokens = states[text]
                out[b, k, : len(tokens)] = tokens
                mask[b, k, : len(tokens)] = True
    return torch.from_numpy(out), torch.from_numpy(mask)


class ARBatches:
    """`ARBatch`es of one split: motion and speech gathered from the tables, captions per
    window from the clips' segments (`window_segments`, at most MAX_SEGMENTS), token states
    from `CaptionStates`.

    Training batches (`step_batch`) use captions re-rendered every ``steps_per_epoch``
    steps for data-engine clips; `fixed_batch` (validation) uses the stored ones.
    """

    def __init__(self, table: ClipTable, speech: FeatureTable, captions: list[ClipCaptions], states: CaptionStates,
                 context: int, seed: int, steps_per_epoch: int, window: int = WINDOW_FRAMES):
        if not (len(table) == len(speech.lengths) == len(captions)):
            raise ValueError("motion, speech and caption tables must hold the same clips")
        self.table, self.speech, self.captions, self.states = table, speech, captions, states
        self.context, self.seed, self.window = context, seed, window
        self.steps_per_epoch = max(1, steps_per_epoch)

    def step_batch(self, step: int, batch: int, rows: slice) -> ARBatch:
        """Rows ``rows`` of step ``step``'s global batch of ``batch`` random windows."""
        rng = step_rng(self.seed, AR_STREAM, step)
        clips, starts = sample_windows(self.table.lengths, batch, rng, self.window)
        return self.fixed_batch(clips[rows], starts[rows], epoch=step // self.steps_per_epoch)

    def fixed_batch(self, clips: np.ndarray, starts: np.ndarray, epoch: int | None = None) -> ARBatch:
        """The windows (clip index, start frame); stored captions when ``epoch`` is None."""
        motion, previous, valid, has_previous = cut_windows(self.table, clips, starts, self.window)
        speech, speech_valid = speech_windows(self.speech, clips, starts, self.window, self.context)
        segment_start = np.full((len(clips), MAX_SEGMENTS), self.window, np.int64)
        style_rows, emotion_rows, stored, rendered = [], [], [], []
        for b, (k, start) in enumerate(zip(clips.tolist(), starts.tolist())):
            clip = self.captions[k]
            texts = clip.captions(self.seed, epoch)
            in_force = window_segments(clip.frames, start, self.window)[:MAX_SEGMENTS]
            for j, (frame, _) in enumerate(in_force):
                segment_start[b, j] = frame
            style_rows.append([texts[s][0] for _, s in in_force])
            emotion_rows.append([texts[s][1] for _, s in in_force])
            used = style_rows[-1] + emotion_rows[-1]
            (rendered if clip.controls and epoch is not None else stored).extend(used)
        states = {**self.states.stored(stored), **self.states.rendered(rendered)}
        style, style_mask = caption_tensors(style_rows, states, self.states.dim)
        emotion, emotion_mask = caption_tensors(emotion_rows, states, self.states.dim)
        return ARBatch(
            motion=torch.from_numpy(motion), previous=torch.from_numpy(previous),
            has_previous=torch.from_numpy(has_previous), valid=torch.from_numpy(valid),
            speech=torch.from_numpy(speech), speech_valid=torch.from_numpy(speech_valid),
            style=style, style_mask=style_mask, emotion=emotion, emotion_mask=emotion_mask,
            segment_start=torch.from_numpy(segment_start[:, : style.shape[1]].copy()),
        )
