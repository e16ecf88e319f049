"""Multi-scale binary spherical quantisation (BSQ) of a codec latent, VAR-style.

Shapes: B windows, W = ``window`` frames, L = ``bits``, S = len(``scales``), s_k = scales[k].

Quantising a latent z (B, W, L), with r_0 = z::

    for k, s_k in enumerate(scales):
        p_k   = down(r_k, s_k)                      (B, s_k, L)   area (average) pooling
        b_k   = p_k > 0                             (B, s_k, L)   the codes; True = +1
        c_k   = where(b_k, +1, -1) / sqrt(L)        unit vectors: sign(p_k / |p_k|) / sqrt(L)
        t_k   = g_k * up(c_k, W)                    (B, W, L)     this scale's term
        r_k+1 = r_k - t_k
    zq = t_0 + t_1 + ... + t_{S-1}                  (B, W, L)

``down`` is area resizing (the mean of the W / s_k frames each code covers, so every
scale divides W); ``up`` is linear interpolation with align_corners=False, i.e. each code
sits at the centre of the frames it covers and the latent is piecewise linear between
code centres (constant for s = 1, clamped at the window ends). Linear rather than nearest because motion is smooth: a
nearest-upsampled coarse scale puts steps into the latent every W / s_k frames that the
finer scales would have to spend bits cancelling. The AR model must build its inputs
with the same two functions: use `scale_input` / `scale_inputs` / `codes_to_latent`.

g_k > 0 is a learned gain per scale (stored as its log, initialised to
``initial_gain_decay ** k``). It is our addition to plain BSQ: every code has unit norm,
so without gains each scale would add a unit vector and a finer scale could never be a
smaller correction of a coarser one; with them the sum is a true residual (coarse to
fine) decomposition. The gains are codebook parameters: they depend on no input, so the
codes alone still determine the latent.

Gradients. The output is ``zq.detach() + (z - z.detach())``: its value is exactly the sum
above (bit-identical to `codes_to_latent` of the codes), its gradient reaches z unchanged
(the straight-through estimator through sign(), applied to the whole multi-scale sum as
VAR does). The gains learn from the codebook term only, as a VQ-VAE codebook does.

Losses (scalars, each a mean over tokens; weights are applied by the caller):

- ``commitment`` = E ||z - sg(zq)||^2 (sum over bits), pulls the encoder to its codes;
- ``codebook``   = E ||sg(z) - zq||^2, fits the gains;
- ``token_entropy`` and ``codebook_entropy``, BSQ's entropy terms, per scale on
  u = p_k / |p_k| and then averaged over scales. BSQ's soft assignment of u to the code
  set {-1/sqrt(L), +1/sqrt(L)}^L is q(c | u) = softmax_c(tau c.u), which factorises over
  bits: q(c_d = +1/sqrt(L) | u) = sigmoid(2 tau u_d / sqrt(L)) =: q_d(u). We take
  tau = ``inv_temperature`` * L, so a latent sitting exactly on a code (|u_d| = 1/sqrt(L))
  has per-bit logits of +-2 * inv_temperature. With h the binary entropy,

      token_entropy    = E_u [ sum_d h(q_d(u)) ] / (L ln 2)      minimise: confident bits
      codebook_entropy = sum_d h(E_u [q_d(u)]) / (L ln 2)        maximise: all codes used

  the second being BSQ's factorised approximation of the entropy H(E_u[q(c|u)]) of the
  average assignment (the sum of per-bit entropies, an upper bound of the joint one),
  E_u over the batch's tokens of that scale. Both are in [0, 1] (bits per bit). BSQ's
  entropy loss is token_entropy - gamma * codebook_entropy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class BSQConfig:
    bits: int = 32
    scales: tuple[int, ...] = (1, 5, 25, 50, 100)
    window: int = 100
    inv_temperature: float = 1.0
    initial_gain_decay: float = 0.5

    def __post_init__(self) -> None:
        scales = tuple(int(s) for s in self.scales)
        object.__setattr__(self, "scales", scales)
        if not scales or any(b <= a for a, b in zip(scales, scales[1:])) or scales[0] < 1:
            raise ValueError(f"scales must be increasing positive lengths, got {scales}")
        if scales[-1] != self.window:
            raise ValueError(f"the last scale must be the window ({self.window} frames), got {scales[-1]}")
        if any(self.window % s for s in scales):
            raise ValueError(f"every scale must divide the window ({self.window} frames), got {scales}")
        if self.bits < 1 or self.inv_temperature <= 0 or self.initial_gain_decay <= 0:
            raise ValueError("bits, inv_temperature and initial_gain_decay must be positive")


def down(x: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T, D) -> (B, length, D): area resizing, each output the mean of the T / length
    frames it covers (``length`` divides T; a reshape rather than F.interpolate's area
    mode, whose CUDA backward is not deterministic)."""
    batch, frames, dims = x.shape
    if frames % length:
        raise ValueError(f"cannot pool {frames} frames into {length} equal blocks")
    return x.reshape(batch, length, frames // length, dims).mean(2)


def up(x: torch.Tensor, length: int) -> torch.Tensor:
    """(B, s, D) -> (B, length, D): linear interpolation between code centres (align_corners=False)."""
    if x.shape[1] == length:
        return x
    return F.interpolate(x.transpose(1, 2), size=length, mode="linear", align_corners=False).transpose(1, 2)


def bits_to_vectors(bits: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(..., L) bool -> (..., L) unit vectors with entries +-1/sqrt(L) (True = +)."""
    value = 1.0 / math.sqrt(bits.shape[-1])
    return torch.where(bits, value, -value).to(dtype)


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Elementwise entropy (nats) of a Bernoulli(p); 0 at p in {0, 1}."""
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p))


class BSQOutput(NamedTuple):
    latent: torch.Tensor  # (B, W, L) quantised latent, equal to codes_to_latent(codes)
    codes: list[torch.Tensor]  # S tensors (B, s_k, L) bool
    losses: dict[str, torch.Tensor]  # commitment, codebook, token_entropy, codebook_entropy


class MultiScaleBSQ(nn.Module):
    """Residual multi-scale BSQ of a (B, W, L) latent; see the module docstring for the maths."""

    def __init__(self, config: BSQConfig = BSQConfig()):
        super().__init__()
        self.config = config
        decay = torch.tensor(config.initial_gain_decay, dtype=torch.float64)
        self.log_gain = nn.Parameter((torch.arange(len(config.scales)) * decay.log()).float())

    @property
    def gains(self) -> torch.Tensor:
        """(S,) the gain of each scale's unit codes."""
        return self.log_gain.exp()

    def contribution(self, k: int, bits: torch.Tensor) -> torch.Tensor:
        """Scale k's term of the latent: (B, s_k, L) bool -> (B, W, L)."""
        gain = self.gains[k]
        # gain after up (equal, up being linear): no gradient through interpolation,
        # whose CUDA backward is not deterministic
        return gain * up(bits_to_vectors(bits, gain.dtype), self.config.window)

    def codes_to_latent(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """The first len(codes) scales' codes [(B, s_k, L) bool] -> (B, W, L) partial latent.

        With all S scales this is bit-for-bit the quantiser's ``latent`` for those codes.
        """
        if not 1 <= len(codes) <= len(self.config.scales):
            raise ValueError(f"expected 1 to {len(self.config.scales)} scales of codes, got {len(codes)}")
        latent = None
        for k, bits in enumerate(codes):
            self._check_codes(k, bits)
            term = self.contribution(k, bits)
            latent = term if latent is None else latent + term  # same order as forward: bit-exact
        return latent

    def scale_input(self, partial_latent: torch.Tensor, k: int) -> torch.Tensor:
        """Next-scale predictor input for scale k: (B, W, L) sum of scales < k -> (B, s_k, L)."""
        return down(partial_latent, self.config.scales[k])

    def scale_inputs(self, codes: list[torch.Tensor]) -> list[torch.Tensor]:
        """Teacher-forcing inputs for every scale: S tensors (B, s_k, L), zeros for k = 0.

        Input k is `codes_to_latent(codes[:k])` resized to s_k (VAR's next-scale input).
        ``codes`` holds at least the first S - 1 scales (the last one is never an input).
        """
        scales = self.config.scales
        if len(codes) < max(1, len(scales) - 1):
            raise ValueError(f"need the codes of at least {len(scales) - 1} scales, got {len(codes)}")
        first = codes[0]
        zeros = torch.zeros(first.shape[0], scales[0], self.config.bits, device=first.device, dtype=self.gains.dtype)
        return [zeros] + [self.scale_input(self.codes_to_latent(codes[:k]), k) for k in range(1, len(scales))]

    def forward(self, z: torch.Tensor) -> BSQOutput:
        """(B, W, L) latent -> `BSQOutput` (quantised latent, codes per scale, losses)."""
        cfg = self.config
        if z.ndim != 3 or z.shape[1:] != (cfg.window, cfg.bits):
            raise ValueError(f"latent must be (B, {cfg.window}, {cfg.bits}), got {tuple(z.shape)}")
        residual, latent = z, None
        codes, token_entropy, codebook_entropy = [], [], []
        norm = cfg.bits * math.log(2.0)
        for k, length in enumerate(cfg.scales):
            pooled = down(residual, length)  # (B, s_k, L)
            bits = pooled > 0  # sign of the L2-normalised vector: normalising does not change it
            term = self.contribution(k, bits)
            latent = term if latent is None else latent + term
            # the residual carries z's gradient (for the entropy terms) but not the gains'
            residual = residual - term.detach()
            u = F.normalize(pooled, dim=-1)
            q = torch.sigmoid(2.0 * cfg.inv_temperature * math.sqrt(cfg.bits) * u)  # P(bit = +)
            token_entropy.append(binary_entropy(q).sum(-1).mean() / norm)
            codebook_entropy.append(binary_entropy(q.flatten(0, 1).mean(0)).sum() / norm)
            codes.append(bits)
        losses = {
            "commitment": (z - latent.detach()).square().sum(-1).mean(),
            "codebook": (z.detach() - latent).square().sum(-1).mean(),
            "token_entropy": torch.stack(token_entropy).mean(),
            "codebook_entropy": torch.stack(codebook_entropy).mean(),
        }
        # value: exactly `latent` (x - x is +0 in IEEE arithmetic); gradient: identity to z
        return BSQOutput(latent.detach() + (z - z.detach()), codes, losses)

    def _check_codes(self, k: int, bits: torch.Tensor) -> None:
        expected = (self.config.scales[k], self.config.bits)
        if bits.dtype != torch.bool or bits.ndim != 3 or tuple(bits.shape[1:]) != expected:
            raise ValueError(f"codes of scale {k} must be (B, {expected[0]}, {expected[1]}) bool, "
                             f"got {tuple(bits.shape)} {bits.dtype}")
