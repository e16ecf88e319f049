"""Per-channel motion normalisation: real units (ARKit weights, radians, PCA coefficients)
<-> the zero-mean, unit-spread space the codec and the AR model work in.

    normalised = (motion - mean) / std        motion = normalised * std + mean

per channel, over the last axis of (..., C) arrays or tensors. ``std`` is floored at
``min_std`` (default 0.01, in the channel's own unit): a channel that never moves in the
data (an unused blendshape, a joint the tracker never turns) would otherwise divide by
zero, and one that barely moves would have its noise blown up to unit size. For ARKit
weights in [0, 1] and rotations in radians, 0.01 is below any motion that matters.

Stored in a checkpoint's JSON config as plain lists (`to_dict` / `from_dict`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

DEFAULT_MIN_STD = 0.01


@dataclass(frozen=True)
class ChannelStats:
    """mean (C,) and floored std (C,) of each motion channel, as float tuples."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"mean and std must be equally long and non-empty ({len(self.mean)} vs {len(self.std)})")
        if not all(np.isfinite(self.mean)) or not all(np.isfinite(s) and s > 0 for s in self.std):
            raise ValueError("mean must be finite and std finite and positive")

    @property
    def channels(self) -> int:
        return len(self.mean)

    @classmethod
    def from_motions(cls, motions: Iterable[np.ndarray], min_std: float = DEFAULT_MIN_STD) -> "ChannelStats":
        """Statistics over every frame of (T, C) motions, e.g. a dataset's training clips:
        ``ChannelStats.from_motions(load_motion(c.motion).motion for c in dataset.split('train'))``.
        """
        count, total, squares = 0, None, None
        for motion in motions:
            motion = np.asarray(motion, dtype=np.float64)
            if motion.ndim != 2 or (total is not None and motion.shape[1] != len(total)):
                raise ValueError(f"motions must be (T, C) with one C, got {motion.shape}")
            if total is None:
                total, squares = np.zeros(motion.shape[1]), np.zeros(motion.shape[1])
            count += len(motion)
            total += motion.sum(0)
            squares += np.square(motion).sum(0)
        if not count:
            raise ValueError("no motion frames to compute statistics from")
        mean = total / count
        variance = np.maximum(squares / count - np.square(mean), 0.0)  # rounding can go below 0
        return cls(tuple(mean), tuple(np.maximum(np.sqrt(variance), min_std)))

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> "ChannelStats":
        return cls(tuple(data["mean"]), tuple(data["std"]))

    def tensors(self, device=None, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean (C,), std (C,)) as torch tensors."""
        return (torch.tensor(self.mean, dtype=dtype, device=device),
                torch.tensor(self.std, dtype=dtype, device=device))

    def _arrays(self, like):
        """mean and std as arrays or tensors matching ``like``'s type, device and dtype."""
        if like.shape[-1] != self.channels:
            raise ValueError(f"expected {self.channels} channels in the last axis, got shape {tuple(like.shape)}")
        if isinstance(like, torch.Tensor):
            return self.tensors(like.device, like.dtype)
        dtype = like.dtype if like.dtype.kind == "f" else np.float32
        return np.asarray(self.mean, dtype=dtype), np.asarray(self.std, dtype=dtype)

    def normalise(self, motion):
        """(..., C) real units -> normalised; numpy in, numpy out; torch in, torch out (same device)."""
        motion = motion if isinstance(motion, torch.Tensor) else np.asarray(motion)
        mean, std = self._arrays(motion)
        return (motion - mean) / std

    def denormalise(self, motion):
        """(..., C) normalised -> real units; numpy or torch, as `normalise`."""
        motion = motion if isinstance(motion, torch.Tensor) else np.asarray(motion)
        mean, std = self._arrays(motion)
        return motion * std + mean
