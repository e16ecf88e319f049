"""The motion codec: normalised motion windows <-> multi-scale binary codes.

Shapes: B windows, W = ``window`` frames, C channels, P = ``context`` frames of the
previous window, L = ``bits``, S = len(``scales``), s_k = scales[k].

    encoder  motion (B, W, C) -> linear -> + positions -> transformer -> linear -> z (B, W, L)
    quantise z -> MultiScaleBSQ -> codes [(B, s_k, L) bool] and latent zq (B, W, L)
    decoder  [previous (B, P, C) -> linear  |  zq -> linear] -> + positions -> transformer
             -> last W tokens -> linear -> motion (B, W, C)

Units: the module works in normalised space only (``ChannelStats`` of `normalise` maps
real units in and out). Every motion argument and result here is normalised.

The encoder sees the current window only, so a window's codes describe that window's
motion and nothing else; the AR model predicts them the same way whatever came before.
Continuity across windows is the decoder's job: it reads the last P frames of the
previous window (normalised) as a prefix, attends over prefix and latent together
(bidirectionally), and outputs only the current window. When a window has no previous
one (``has_previous`` False: a clip's start, or the caller dropping it at training so the
no-previous path stays trained) every prefix token is one learned "no previous" vector
instead (plus its position). Positions are learned: P prefix positions then W window
positions, so the prefix sits right before frame 0.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn

from .bsq import BSQConfig, MultiScaleBSQ


# Sizes a config may have (checked before anything is built: a crafted checkpoint asked for
# 10**6 layers, or 0 heads). Far above any model CapTalk trains.
CODEC_RANGES = {"channels": (1, 4096), "width": (1, 8192), "layers": (1, 64), "heads": (1, 256), "bits": (1, 64),
                "window": (1, 1000), "context": (0, 1000), "feedforward": (1, 16), "dropout": (0.0, 0.999),
                "inv_temperature": (1e-6, 1e6), "initial_gain_decay": (1e-6, 1.0)}


def check_ranges(config, ranges: dict) -> None:
    """Raise ValueError unless each named field is a number of the range's type (int for int
    bounds, no bools) within [low, high], and every scale an int in 1..window."""
    for name, (low, high) in ranges.items():
        value = getattr(config, name)
        kind = int if isinstance(low, int) else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
            raise ValueError(f"{name} must be a{'n integer' if kind is int else ' number'} in {low}..{high}, "
                             f"got {str(value)[:40]!r}")
    scales = config.scales
    if not (isinstance(scales, (list, tuple)) and 0 < len(scales) <= 64
            and all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= config.window for s in scales)):
        raise ValueError(f"scales must be a list of up to 64 frame counts in 1..{config.window}")


@dataclass(frozen=True)
class CodecConfig:
    channels: int
    width: int = 256
    layers: int = 4  # in the encoder and again in the decoder
    heads: int = 4
    bits: int = 32
    scales: tuple[int, ...] = (1, 5, 25, 50, 100)
    window: int = 100
    context: int = 100  # previous-window frames the decoder sees (its last ones)
    dropout: float = 0.1
    feedforward: int = 4  # feed-forward width as a multiple of ``width``
    inv_temperature: float = 1.0  # BSQ entropy sharpness, see bsq
    initial_gain_decay: float = 0.5  # BSQ per-scale gains start at decay ** k

    def __post_init__(self) -> None:
        check_ranges(self, CODEC_RANGES)
        object.__setattr__(self, "scales", tuple(int(s) for s in self.scales))
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        if not 0 <= self.context <= self.window:
            raise ValueError(f"context must be within 0..{self.window} frames, got {self.context}")
        if self.channels < 1:
            raise ValueError("channels must be positive")
        _ = self.bsq  # constructing it validates bits, scales and window

    def min_parameters(self) -> int:
        """A lower bound of the codec's parameter count (linear layers, positions, transformer
        weights), computed without building it: a checkpoint's weights must hold at least this."""
        w = self.width
        return w * (3 * self.channels + 2 * self.window + self.context + 2 * self.bits) \
            + 2 * self.layers * (4 + 2 * self.feedforward) * w * w

    @property
    def bsq(self) -> BSQConfig:
        return BSQConfig(self.bits, self.scales, self.window, self.inv_temperature, self.initial_gain_decay)

    def to_dict(self) -> dict:
        """JSON-able (lists, numbers); `from_dict` reverses it."""
        return {**asdict(self), "scales": list(self.scales)}

    @classmethod
    def from_dict(cls, data: dict) -> "CodecConfig":
        return cls(**data)


class CodecOutput(NamedTuple):
    reconstruction: torch.Tensor  # (B, W, C) normalised
    codes: list[torch.Tensor]  # S tensors (B, s_k, L) bool
    losses: dict[str, torch.Tensor]  # the quantiser's: commitment, codebook, token_entropy, codebook_entropy


def transformer(config: CodecConfig) -> nn.TransformerEncoder:
    """A pre-norm transformer stack (B, N, width) -> (B, N, width), final LayerNorm included."""
    layer = nn.TransformerEncoderLayer(
        config.width, config.heads, config.feedforward * config.width, config.dropout,
        activation="gelu", batch_first=True, norm_first=True,
    )
    return nn.TransformerEncoder(layer, config.layers, norm=nn.LayerNorm(config.width), enable_nested_tensor=False)


class MotionCodec(nn.Module):
    """Normalised motion windows <-> codes; see the module docstring."""

    def __init__(self, config: CodecConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.motion_in = nn.Linear(config.channels, width)
        self.encoder_positions = nn.Parameter(torch.randn(config.window, width) * 0.02)
        self.encoder = transformer(config)
        self.to_bits = nn.Linear(width, config.bits)
        self.quantiser = MultiScaleBSQ(config.bsq)
        self.from_bits = nn.Linear(config.bits, width)
        self.previous_in = nn.Linear(config.channels, width)
        self.no_previous = nn.Parameter(torch.randn(width) * 0.02)
        self.decoder_positions = nn.Parameter(torch.randn(config.context + config.window, width) * 0.02)
        self.decoder = transformer(config)
        self.motion_out = nn.Linear(width, config.channels)

    # ------------------------------------------------------------------ encoder
    def latent(self, motion: torch.Tensor) -> torch.Tensor:
        """(B, W, C) normalised motion -> (B, W, L) continuous latent (before quantising)."""
        self._check_motion(motion, "motion")
        hidden = self.motion_in(motion) + self.encoder_positions
        return self.to_bits(self.encoder(hidden))

    def encode(self, motion: torch.Tensor) -> list[torch.Tensor]:
        """(B, W, C) normalised motion -> codes, S tensors (B, s_k, L) bool (True = +1).

        The encoder sees this window only (module docstring), so no previous window here.
        """
        return self.quantiser(self.latent(motion)).codes

    # ------------------------------------------------------------------ decoder
    def decode(self, codes: list[torch.Tensor] | torch.Tensor, previous: torch.Tensor | None = None,
               has_previous: torch.Tensor | None = None) -> torch.Tensor:
        """Codes (S tensors (B, s_k, L) bool) or a quantised latent (B, W, L) -> (B, W, C).

        previous: (B, W, C) normalised motion of the window before (only its last P frames
        are used), or None for "no previous window" everywhere. has_previous: (B,) bool,
        False where ``previous`` is to be ignored; None means all True when ``previous``
        is given. Fewer than S scales of codes decode a coarse preview.
        """
        latent = self.quantiser.codes_to_latent(codes) if isinstance(codes, (list, tuple)) else codes
        cfg = self.config
        if latent.ndim != 3 or latent.shape[1:] != (cfg.window, cfg.bits):
            raise ValueError(f"latent must be (B, {cfg.window}, {cfg.bits}), got {tuple(latent.shape)}")
        batch = latent.shape[0]
        prefix = self._prefix(batch, previous, has_previous, latent.device, latent.dtype)
        hidden = torch.cat([prefix, self.from_bits(latent)], dim=1) + self.decoder_positions
        return self.motion_out(self.decoder(hidden)[:, cfg.context:])

    def _prefix(self, batch: int, previous: torch.Tensor | None, has_previous: torch.Tensor | None,
                device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(B, P, width) prefix tokens: the previous window's last P frames or "no previous"."""
        empty = self.no_previous.to(dtype).expand(batch, self.config.context, -1)
        if previous is None:
            return empty
        self._check_motion(previous, "previous")
        if has_previous is None:
            has_previous = torch.ones(batch, dtype=torch.bool, device=device)
        if has_previous.shape != (batch,):
            raise ValueError(f"has_previous must be ({batch},), got {tuple(has_previous.shape)}")
        tokens = self.previous_in(previous[:, previous.shape[1] - self.config.context:])
        return torch.where(has_previous.to(device=device, dtype=torch.bool)[:, None, None], tokens, empty)

    # ------------------------------------------------------------------ both
    def forward(self, motion: torch.Tensor, previous: torch.Tensor | None = None,
                has_previous: torch.Tensor | None = None) -> CodecOutput:
        """(B, W, C) normalised motion [+ previous window] -> `CodecOutput`.

        Gradients reach the encoder through the quantiser's straight-through estimator.
        """
        quantised = self.quantiser(self.latent(motion))
        reconstruction = self.decode(quantised.latent, previous, has_previous)
        return CodecOutput(reconstruction, quantised.codes, quantised.losses)

    def _check_motion(self, motion: torch.Tensor, name: str) -> None:
        cfg = self.config
        if motion.ndim != 3 or motion.shape[1:] != (cfg.window, cfg.channels):
            raise ValueError(f"{name} must be (B, {cfg.window}, {cfg.channels}), got {tuple(motion.shape)}")
