"""What one training step of the AR model sees: the contract between the data pipeline
(`model.train`) and the model (`model.ar`). Generation builds the same fields per window.

B windows, W = window frames, C channels, A = speech context frames on each side,
K = caption segments per window, L = caption tokens, Ds / Dt = speech / text widths.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

MAX_SEGMENTS = 3  # caption segments that can touch one 4 s window (changes are >= 1.5 s apart)


@dataclass
class ARBatch:
    motion: torch.Tensor  # (B, W, C) float, normalised (ChannelStats): the window to predict
    previous: torch.Tensor  # (B, W, C) float, normalised previous window (zeros if none)
    has_previous: torch.Tensor  # (B,) bool
    valid: torch.Tensor  # (B, W) bool: real frames (a short clip's window is padded)
    speech: torch.Tensor  # (B, W + 2A, Ds) float: features of frames [-A, W + A) around the window
    speech_valid: torch.Tensor  # (B, W + 2A) bool: False outside the clip (features are zeros there)
    style: torch.Tensor  # (B, K, L, Dt) float: token states of each segment's style caption
    style_mask: torch.Tensor  # (B, K, L) bool: real tokens; all False = no caption (empty or dropped)
    emotion: torch.Tensor  # (B, K, L, Dt) float
    emotion_mask: torch.Tensor  # (B, K, L) bool
    segment_start: torch.Tensor  # (B, K) long: frame (window-relative) where segment k begins;
    #                              segment 0 starts at 0; unused slots hold W (never in force)

    def to(self, device) -> "ARBatch":
        return ARBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def size(self) -> int:
        return int(self.motion.shape[0])
