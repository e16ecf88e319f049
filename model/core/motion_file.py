"""The motion file: what `generate` writes, the dataset stores per clip and `metrics` reads.

A ``.npz`` (read with ``allow_pickle=False``) holding

    motion    (T, C) float32   channels as `head_model` defines them, frame i at i / fps
    channels  (C,) str         channel names (``HeadModel.channel_names``)
    fps       () float         frames per second (25.0 for everything CapTalk makes)
    meta      () str           JSON object: head-model id and whatever the writer records
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .audio import MOTION_FPS
from .errors import BadInput
from .safe_npz import read_npz


class MotionFileError(BadInput):
    """A motion file that cannot be read or does not fit; the message says why."""


@dataclass(frozen=True)
class MotionClip:
    motion: np.ndarray  # (T, C) float32
    channels: tuple[str, ...]
    fps: float = MOTION_FPS
    meta: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])


def save_motion(path: str | os.PathLike, clip: MotionClip) -> Path:
    """Write atomically, so a reader (or a resumed job) never sees half a file."""
    path = Path(path)
    if clip.motion.ndim != 2 or clip.motion.shape[1] != len(clip.channels):
        raise MotionFileError(f"motion {clip.motion.shape} does not match {len(clip.channels)} channels")
    return atomic_write(path, lambda name: np.savez(
        name,
        motion=np.asarray(clip.motion, dtype=np.float32),
        channels=np.array(clip.channels),
        fps=np.float64(clip.fps),
        meta=np.array(json.dumps(clip.meta)),
    ), suffix=".npz")


def load_motion(path: str | os.PathLike) -> MotionClip:
    """Read and check a motion file (sizes before inflating, types, shape, channel count,
    finite values, a positive frame rate)."""
    arrays = read_npz(path, keys=("motion", "channels", "fps", "meta"), kinds="biufU", error=MotionFileError)
    if "motion" not in arrays or "channels" not in arrays:
        raise MotionFileError(f"'{path}' is not a motion file (it has no motion or channel names)")
    motion, channels = arrays["motion"], arrays["channels"]
    fps, meta = arrays.get("fps", np.float64(MOTION_FPS)), arrays.get("meta", np.array("{}"))
    if motion.dtype.kind not in "iuf" or channels.dtype.kind != "U" or channels.ndim != 1:
        raise MotionFileError(f"'{path}': motion must be numbers and channels a list of names")
    if fps.shape != () or fps.dtype.kind not in "iuf" or not (0 < float(fps) < 1e4):
        raise MotionFileError(f"'{path}': the frame rate must be one positive number of frames per second")
    try:
        meta = json.loads(str(meta)) if meta.shape == () and meta.dtype.kind == "U" else None
    except (ValueError, RecursionError):
        meta = None
    if not isinstance(meta, dict):
        raise MotionFileError(f"'{path}': its 'meta' entry is not a JSON object")
    if motion.ndim != 2 or motion.shape[1] != len(channels):
        raise MotionFileError(f"'{path}': motion {motion.shape} does not match {len(channels)} channel names")
    motion = motion.astype(np.float32)
    if not np.isfinite(motion).all():
        raise MotionFileError(f"'{path}': motion contains NaN or infinite values")
    return MotionClip(motion=motion, channels=tuple(str(name) for name in channels), fps=float(fps), meta=meta)
