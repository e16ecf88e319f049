"""The codec's training loss: motion, head-vertex and lip-vertex reconstruction plus BSQ terms.

Shapes: B windows, W frames, C channels; N evaluated vertices (a fixed subset, below).

Terms (each a scalar; ``valid`` (B, W) masks padded frames out of the first three):

- ``motion``    mean squared error of the normalised channels;
- ``vertices``  mean over frames and the head-vertex subset of ||v_pred - v_true||^2 in cm^2,
                vertices from the denormalised motion through `TorchHeadModel`;
- ``lips``      the same over every lip vertex (``head.regions['lips']``);
- ``commitment``, ``codebook``, ``token_entropy``, ``codebook_entropy`` from the quantiser
  (`bsq` documents them).

    total = w_motion motion + w_vertices vertices + w_lips lips + w_commit commitment
            + w_codebook codebook + w_token token_entropy - w_cb codebook_entropy

Units and default weights. Vertex errors are taken in centimetres so that they sit on
the motion term's scale: on the open head, an error of one normalised unit (one data std)
in every channel moves vertices by about 1 cm RMS (1.1 cm over the head, 1.3 cm on the
lips, measured with stds of 0.15 for ARKit weights and 0.08 rad for the head), so with
weights 1 / 1 / 1 a normalised error of 1 costs about 1 in each of the three terms, and
the lip term doubles the weight of the mouth, the part the metrics (LVE, LODD) judge.
Commitment 0.25 as VQ-VAE; codebook 1; entropy 0.1 for both BSQ terms (gamma = 1).

Evaluating every vertex is the expensive part on a CPU (the open head has 4,538; the
full set costs about 3 s per 800 frames), so both terms use fixed random subsets
(``head_vertices`` of the head, ``lip_vertices`` of the lips, drawn once with ``seed``):
unbiased estimates of the full means, fixed so that the loss is deterministic. With 192
and 128 the loss costs about a third of what 512 plus all 299 lip vertices did, which
on a 2-core CPU is the difference between the loss and the codec dominating a step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core.head_model import HeadModel
from ..head_model_torch import TorchHeadModel
from .normalise import ChannelStats

CM_PER_METRE = 100.0


@dataclass(frozen=True)
class CodecLossConfig:
    motion: float = 1.0
    vertices: float = 1.0
    lips: float = 1.0
    commitment: float = 0.25
    codebook: float = 1.0
    token_entropy: float = 0.1
    codebook_entropy: float = 0.1
    head_vertices: int = 192  # size of the random head-vertex subset (all vertices if the head has fewer)
    lip_vertices: int = 128  # size of the random lip-vertex subset (all lip vertices if there are fewer)
    seed: int = 0  # picks that subset


def quantiser_loss(losses: dict[str, torch.Tensor], config: CodecLossConfig = CodecLossConfig()) -> torch.Tensor:
    """The weighted BSQ terms of a `CodecOutput.losses` dict (scalar)."""
    return (config.commitment * losses["commitment"] + config.codebook * losses["codebook"]
            + config.token_entropy * losses["token_entropy"] - config.codebook_entropy * losses["codebook_entropy"])


def vertex_subset(head: HeadModel, indices: np.ndarray) -> TorchHeadModel:
    """A `TorchHeadModel` that evaluates only vertices ``indices`` (N,): motion (..., C) -> (..., N, 3).

    Every per-vertex array enters the vertex formula row by row, so slicing them gives
    exactly those rows of the full evaluation at N / V of the cost.
    """
    twin = TorchHeadModel(head)
    index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    twin.template = twin.template[index]
    twin.expression_basis = twin.expression_basis[:, index]
    twin.lbs_weights = twin.lbs_weights[index]
    if twin.pose_basis is not None:
        twin.pose_basis = twin.pose_basis[:, index]
    for name in [n for n, _ in twin.named_buffers() if n.startswith("region_")]:
        delattr(twin, name)  # full-head vertex numbers: meaningless in the subset
    return twin


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, W, ...) ``values`` over the frames where ``mask`` (B, W) is True."""
    weights = mask.to(values.dtype).reshape(*mask.shape, *([1] * (values.ndim - 2)))
    count = weights.sum() * (values[0, 0].numel())
    return (values * weights).sum() / count.clamp(min=1)


class CodecLoss(nn.Module):
    """Loss of a codec reconstruction for one head model; `.to(device)` moves its arrays."""

    def __init__(self, head: HeadModel, stats: ChannelStats, config: CodecLossConfig = CodecLossConfig()):
        super().__init__()
        if stats.channels != head.num_channels:
            raise ValueError(f"statistics have {stats.channels} channels, head '{head.model_id}' {head.num_channels}")
        self.config = config
        rng = np.random.default_rng(config.seed)
        count = min(config.head_vertices, head.num_vertices)
        sampled = rng.choice(head.num_vertices, size=count, replace=False)
        lips = np.asarray(head.regions["lips"], dtype=np.int64)
        lips = np.sort(rng.choice(lips, size=min(config.lip_vertices, lips.size), replace=False))
        evaluated = np.unique(np.concatenate([sampled, lips]))  # each vertex evaluated once
        self.vertices = vertex_subset(head, evaluated)
        self.register_buffer("head_index", torch.as_tensor(np.searchsorted(evaluated, np.sort(sampled))))
        self.register_buffer("lip_index", torch.as_tensor(np.searchsorted(evaluated, lips)))
        mean, std = stats.tensors()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
                quantiser_losses: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Named loss terms and their weighted ``total`` (module docstring).

        reconstruction, target: (B, W, C) normalised motion; valid: (B, W) bool, None = all
        frames; quantiser_losses: `CodecOutput.losses` (left out: reconstruction terms only).
        """
        if reconstruction.shape != target.shape:
            raise ValueError(f"reconstruction {tuple(reconstruction.shape)} and target {tuple(target.shape)} differ")
        if valid is None:
            valid = torch.ones(target.shape[:2], dtype=torch.bool, device=target.device)
        cfg = self.config
        terms = {"motion": masked_mean((reconstruction - target).square(), valid)}
        predicted = self.vertices(reconstruction * self.std + self.mean)  # (B, W, N, 3) metres
        with torch.no_grad():
            true = self.vertices(target * self.std + self.mean)
        squared = (predicted - true).square().sum(-1) * CM_PER_METRE**2  # (B, W, N) cm^2
        terms["vertices"] = masked_mean(squared[..., self.head_index], valid)
        terms["lips"] = masked_mean(squared[..., self.lip_index], valid)
        total = cfg.motion * terms["motion"] + cfg.vertices * terms["vertices"] + cfg.lips * terms["lips"]
        if quantiser_losses is not None:
            terms.update(quantiser_losses)
            total = total + quantiser_loss(quantiser_losses, cfg)
        terms["total"] = total
        return terms
