"""Attention blocks of the AR model: rotary (time-aligned) attention and caption attention
mixed over caption segments by time coverage.

Shapes: B batch, N query tokens, M memory tokens, K caption segments, D width,
H heads, Dh = D / H.

Rotary positions are times in motion frames (floats): a code token sits at the centre of
the frames it covers, a speech feature at its frame index. RoPE rotates query and key by
angles proportional to their positions, so the score of a pair depends on their time
difference only: the same speech frame one frame later scores like the token one frame
later, wherever the window sits.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoid(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """(..., N) float positions -> (..., N, dim) sin/cos features (transformer-style, continuous)."""
    half = dim // 2
    freqs = torch.exp(-math.log(base) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.float()[..., None] * freqs
    out = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(out, (0, dim - 2 * half))


def rotary_tables(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) float positions -> (cos, sin), each (N, head_dim / 2)."""
    half = head_dim // 2
    freqs = torch.exp(-math.log(base) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.float()[:, None] * freqs
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(B, H, N, Dh) -> (B, H, N, Dh): pairs (i, i + Dh/2) rotated by the position's angles."""
    cos, sin = (t.to(x.dtype) for t in tables)
    first, second = x.chunk(2, dim=-1)
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class Attention(nn.Module):
    """Multi-head attention of ``x`` over ``memory`` (itself for self-attention).

    Split in two so that keys and values can be computed once and reused (a window's
    speech for all its scale steps; earlier tokens' self-attention keys): `keys_values`
    projects the memory, `attend` runs the queries against given keys and values.
    """

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        if width % heads or (width // heads) % 2:
            raise ValueError(f"width {width} must split into {heads} heads of even size")
        self.heads, self.dropout = heads, dropout
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, N, D) -> (B, H, N, Dh)

    def keys_values(self, memory: torch.Tensor, rotary: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """memory (B, M, D) -> keys, values (B, H, M, Dh); keys rotated by ``rotary`` tables."""
        key, value = (self._split(t) for t in self.key_value(memory).chunk(2, dim=-1))
        return (key if rotary is None else apply_rotary(key, rotary)), value

    def attend(self, x: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None = None,
               rotary: tuple | None = None) -> torch.Tensor:
        """x (B, N, D) against keys / values (B, H, M, Dh) -> (B, N, D).

        mask: bool, True = may attend, broadcastable to (B, H, N, M), at least one True per
        query row; rotary: the queries' tables from `rotary_tables`, or None.
        """
        query = self._split(self.query(x))
        if rotary is not None:
            query = apply_rotary(query, rotary)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out(out.transpose(1, 2).flatten(2))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None,
                rotary: tuple | None = None) -> torch.Tensor:
        """x (B, N, D), memory (B, M, D) -> (B, N, D); rotary: (query tables, key tables) or None."""
        key, value = self.keys_values(memory, None if rotary is None else rotary[1])
        return self.attend(x, key, value, mask, None if rotary is None else rotary[0])


class SegmentAttention(Attention):
    """Attention over caption segments, mixed by how much of each query's time span a
    segment covers.

    Each of the K segments is attended on its own (softmax over that segment's M tokens);
    the query's result is the coverage-weighted sum of the K results:

        out(q) = sum_k c_qk * softmax_m(q . k_km / sqrt(Dh)) v_km,    sum_k c_qk = 1

    so a token lying wholly inside one segment sees exactly that caption (c = 1, and the
    others contribute 0 * finite = 0), and a token straddling a change blends the two
    captions in proportion to time, whatever their token counts. (A single softmax over
    all segments with a log-coverage bias would weight a segment also by its number of
    tokens and their scores.) A window with one segment is plain cross-attention.
    """

    def keys_values(self, memory: torch.Tensor, rotary: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """memory (B, K, M, D) -> keys, values (B, H, K, M, Dh)."""
        return tuple(t.unflatten(-1, (self.heads, -1)).permute(0, 3, 1, 2, 4)
                     for t in self.key_value(memory).chunk(2, dim=-1))

    def attend(self, x: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None = None,
               coverage: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, D) against keys / values (B, H, K, M, Dh), mask (B, K, M) bool (>= 1 True
        per segment), coverage (B, N, K) -> (B, N, D)."""
        query = self._split(self.query(x))  # (B, H, N, Dh)
        scores = torch.einsum("bhnd,bhkmd->bhnkm", query, key) / math.sqrt(query.shape[-1])
        scores = scores.masked_fill(~mask[:, None, None], float("-inf"))
        weights = scores.softmax(-1) * coverage.to(scores.dtype)[:, None, :, :, None]
        if self.training and self.dropout:
            weights = F.dropout(weights, self.dropout)
        out = torch.einsum("bhnkm,bhkmd->bhnd", weights, value)
        return self.out(out.transpose(1, 2).flatten(2))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor,
                coverage: torch.Tensor) -> torch.Tensor:
        """x (B, N, D), memory (B, K, M, D), mask (B, K, M), coverage (B, N, K) -> (B, N, D)."""
        return self.attend(x, *self.keys_values(memory), mask, coverage)


def segment_coverage(spans: torch.Tensor, segment_start: torch.Tensor, window: int) -> torch.Tensor:
    """Share of each token's time span that each caption segment covers.

    spans: (N, 2) float frames [first, end) of each token; segment_start: (B, K) long,
    window-relative starts (segment 0 at 0, unused slots at ``window``); segment k lasts
    until the next start (the last until ``window``). Returns (B, N, K), rows summing to 1.

    Spans are clipped to the window; a token with no extent inside it (the previous-window
    prefix, before frame 0) takes the segment in force at its clipped point: segment 0.
    """
    starts = segment_start.to(torch.float32)
    ends = torch.cat([starts[:, 1:], torch.full_like(starts[:, :1], float(window))], dim=1)
    ends = torch.maximum(ends, starts)
    first = spans[:, 0].clamp(0, window)[None, :, None]
    last = spans[:, 1].clamp(0, window)[None, :, None]
    starts, ends = starts[:, None, :], ends[:, None, :]
    overlap = (torch.minimum(last, ends) - torch.maximum(first, starts)).clamp_min(0)
    length = last - first
    point = first.clamp(max=window - 1e-3)  # a point at the window's end belongs to the last segment
    inside = ((starts <= point) & (point < ends)).to(torch.float32)
    return torch.where(length > 0, overlap / length.clamp_min(1e-6), inside)
