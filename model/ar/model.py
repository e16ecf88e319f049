"""The stage-2 model: next-scale prediction of a window's codec codes from speech, the
previous window and two captions (style, emotion).

Shapes: B windows, W = ``window`` frames, C channels, L = ``bits``, S = len(``scales``),
s_k = scales[k], P = ``prefix_tokens``, A = ``speech_context``, K caption segments,
T caption tokens, Ds / Dt speech / text widths, D = ``width``.

Token sequence of a window (VAR-style, one group per scale)::

    [ prefix: P tokens | start: 1 token | scale-1 inputs: s_1 | ... | scale-(S-1) inputs ]
      group 0            group 1          group 2                 group S

- prefix: the previous window's normalised motion area-pooled to P tokens (bsq.down) and
  projected, or a learned "no previous" vector where there is none (or it was dropped);
- start: a learned token; its output predicts the scale-0 codes;
- scale-k inputs: ``MultiScaleBSQ.scale_inputs(codes)[k]`` (the latent of scales < k resized
  to s_k), projected; their outputs predict the scale-k codes.

Each token adds a learned group embedding and a sinusoid of its time: the centre of the
frames it covers (code token i of scale s: (i + 0.5) W / s - 0.5, in frames; prefix tokens
before frame 0). Self-attention is block-causal: a token sees every token of its own and
earlier groups, so all codes of a scale are predicted at once from coarser ones (and the
prefix). The output is 2 logits per bit: (B, s_0 + ... + s_k, L, 2) for scales 0..k.

Each layer (pre-norm, residual): self-attention; speech cross-attention with rotary
positions aligned in time (tokens at their centres, speech row j at frame j - A, so the
A context rows on either side sit at negative frames and frames >= W); style and emotion
cross-attention, two separate token sets without positions, mixed over caption segments
by time coverage (`attention.SegmentAttention`); feed-forward.

Captions: every segment's tokens get one learned "null caption" token in front, the only
valid one when the caption is empty or dropped (all-False mask), so "no caption" is a
learned condition and classifier-free guidance can compare against it.

Use: training runs all scales at once (`CapTalkAR.forward`, `CapTalkAR.loss`);
generation predicts scale by scale (`begin`, then `step` per scale), feeding only the new
scale's tokens each step: block-causality makes earlier tokens' keys and values final, so
they are kept (`ARState`), as are the speech and caption keys and values of the window.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..codec.bsq import down
from ..codec.codec import CodecConfig, MotionCodec, check_ranges
from .attention import Attention, SegmentAttention, rotary_tables, segment_coverage, sinusoid
from .batch import ARBatch


# Sizes a config may have, checked before anything is built (see codec.CODEC_RANGES).
AR_RANGES = {"channels": (1, 4096), "speech_dim": (1, 8192), "text_dim": (1, 8192), "width": (1, 8192),
             "layers": (1, 64), "heads": (1, 256), "bits": (1, 64), "window": (1, 1000), "speech_context": (0, 1000),
             "prefix_tokens": (1, 1000), "max_caption_tokens": (1, 4096), "feedforward": (1, 16),
             "dropout": (0.0, 0.999), "bit_flip": (0.0, 0.999), "drop_previous": (0.0, 0.999),
             "drop_style": (0.0, 0.999), "drop_emotion": (0.0, 0.999), "rope_base": (1.0, 1e9)}


@dataclass(frozen=True)
class ARConfig:
    channels: int  # motion channels of the prefix (the codec's)
    speech_dim: int  # Ds: the speech encoder's feature width
    text_dim: int  # Dt: the text encoder's token width
    width: int = 256
    layers: int = 6
    heads: int = 4
    bits: int = 32
    scales: tuple[int, ...] = (1, 5, 25, 50, 100)
    window: int = 100
    speech_context: int = 10  # A: speech frames seen beyond each end of the window
    prefix_tokens: int = 25  # P: previous-window tokens (W / P frames pooled into each)
    max_caption_tokens: int = 128  # longer captions are cut (the text encoders cut at 128 too)
    feedforward: int = 4  # feed-forward width as a multiple of ``width``
    dropout: float = 0.1
    bit_flip: float = 0.1  # training: flip each input bit with this probability
    drop_previous: float = 0.1  # training: drop each of these, independently, per window
    drop_style: float = 0.1
    drop_emotion: float = 0.1
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        check_ranges(self, AR_RANGES)
        object.__setattr__(self, "scales", tuple(int(s) for s in self.scales))
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ValueError(f"width {self.width} must split into {self.heads} heads of even size")
        if min(self.channels, self.speech_dim, self.text_dim, self.layers, self.bits, self.max_caption_tokens) < 1:
            raise ValueError("channels, speech_dim, text_dim, layers, bits and max_caption_tokens must be positive")
        scales = self.scales
        if not scales or scales[-1] != self.window or any(b <= a for a, b in zip(scales, scales[1:])) \
                or any(self.window % s for s in scales):
            raise ValueError(f"scales {scales} must increase to the window ({self.window}) and divide it")
        if self.prefix_tokens < 1 or self.window % self.prefix_tokens:
            raise ValueError(f"prefix_tokens {self.prefix_tokens} must divide the window ({self.window})")
        if self.speech_context < 0:
            raise ValueError("speech_context must be >= 0")
        for name in ("dropout", "bit_flip", "drop_previous", "drop_style", "drop_emotion"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def min_parameters(self) -> int:
        """A lower bound of the model's parameter count, computed without building it."""
        w = self.width
        return w * (self.channels + self.speech_dim + self.text_dim + 3 * self.bits) \
            + self.layers * (4 + 2 * self.feedforward) * w * w

    @property
    def tokens(self) -> int:
        """Code tokens per window: s_0 + ... + s_{S-1}."""
        return sum(self.scales)

    def to_dict(self) -> dict:
        """JSON-able (the manifest's "ar" entry); `from_dict` reverses it."""
        return {**asdict(self), "scales": list(self.scales)}

    @classmethod
    def from_dict(cls, data: dict) -> "ARConfig":
        return cls(**data)

    def check_codec(self, codec: CodecConfig) -> None:
        """Raise ValueError unless this model predicts that codec's codes."""
        ours = (self.channels, self.bits, self.scales, self.window)
        theirs = (codec.channels, codec.bits, tuple(codec.scales), codec.window)
        if ours != theirs:
            raise ValueError(f"AR model (channels, bits, scales, window) {ours} does not match the codec's {theirs}")


class ARContext(NamedTuple):
    """A window's conditioning, projected once and reused by every scale step."""

    prefix: torch.Tensor  # (B, P, D)
    speech: torch.Tensor  # (B, W + 2A, D)
    speech_mask: torch.Tensor  # (B, 1, 1, W + 2A) bool
    style: torch.Tensor  # (B, K, 1 + T, D): null token, then caption tokens
    style_mask: torch.Tensor  # (B, K, 1 + T) bool
    emotion: torch.Tensor  # (B, K, 1 + T, D)
    emotion_mask: torch.Tensor  # (B, K, 1 + T) bool
    segment_start: torch.Tensor  # (B, K) long


class ARState:
    """One window's prediction in progress: its context, the conditioning's keys and values
    per layer (computed once), and each layer's self-attention keys and values of the
    tokens fed so far. Block-causality makes those keys final once computed, so each
    scale step runs only its own tokens (`CapTalkAR.step`)."""

    def __init__(self, context: ARContext, memory: list[tuple]):
        self.context = context
        self.memory = memory  # per layer: (speech, style, emotion) (keys, values)
        self.keys: list[torch.Tensor] = []  # per layer (B, H, tokens, Dh)
        self.values: list[torch.Tensor] = []
        self.tokens = 0  # tokens fed so far, prefix included
        self.scales = 0  # scales predicted so far


class ARLayer(nn.Module):
    def __init__(self, config: ARConfig):
        super().__init__()
        width, heads, dropout = config.width, config.heads, config.dropout
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(5))
        self.self_attention = Attention(width, heads, dropout)
        self.speech_attention = Attention(width, heads, dropout)
        self.style_attention = SegmentAttention(width, heads, dropout)
        self.emotion_attention = SegmentAttention(width, heads, dropout)
        self.feed_forward = nn.Sequential(
            nn.Linear(width, config.feedforward * width), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(config.feedforward * width, width),
        )
        self.drop = nn.Dropout(dropout)

    def memory(self, context: ARContext, speech_rotary: tuple) -> tuple:
        """The conditioning's keys and values for this layer (speech keys rotated to their times)."""
        return (self.speech_attention.keys_values(context.speech, speech_rotary),
                self.style_attention.keys_values(context.style),
                self.emotion_attention.keys_values(context.emotion))

    def forward(self, x: torch.Tensor, state: ARState, index: int, self_mask: torch.Tensor | None,
                speech_rotary: tuple, coverage: torch.Tensor) -> torch.Tensor:
        """x (B, n, D): the next n tokens -> (B, n, D); their keys join ``state``'s layer ``index``."""
        context = state.context
        speech, style, emotion = state.memory[index]
        h = self.norms[0](x)
        key, value = self.self_attention.keys_values(h)
        if index < len(state.keys):
            key, value = torch.cat([state.keys[index], key], 2), torch.cat([state.values[index], value], 2)
            state.keys[index], state.values[index] = key, value
        else:
            state.keys.append(key)
            state.values.append(value)
        x = x + self.drop(self.self_attention.attend(h, key, value, self_mask))
        x = x + self.drop(self.speech_attention.attend(self.norms[1](x), *speech, context.speech_mask, speech_rotary))
        x = x + self.drop(self.style_attention.attend(self.norms[2](x), *style, context.style_mask, coverage))
        x = x + self.drop(self.emotion_attention.attend(self.norms[3](x), *emotion, context.emotion_mask, coverage))
        return x + self.drop(self.feed_forward(self.norms[4](x)))


class CapTalkAR(nn.Module):
    """Next-scale code prediction; see the module docstring for the token layout."""

    def __init__(self, config: ARConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.previous_in = nn.Linear(config.channels, width)
        self.no_previous = nn.Parameter(torch.randn(width) * 0.02)
        self.start = nn.Parameter(torch.randn(width) * 0.02)
        self.code_in = nn.Linear(config.bits, width)
        self.group_embedding = nn.Parameter(torch.randn(len(config.scales) + 1, width) * 0.02)
        self.speech_in = nn.Sequential(nn.LayerNorm(config.speech_dim), nn.Linear(config.speech_dim, width))
        self.text_in = nn.Sequential(nn.LayerNorm(config.text_dim), nn.Linear(config.text_dim, width))
        self.null_style = nn.Parameter(torch.randn(width) * 0.02)
        self.null_emotion = nn.Parameter(torch.randn(width) * 0.02)
        self.layers = nn.ModuleList(ARLayer(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 2 * config.bits)
        self._register_layout()

    # ------------------------------------------------------------------ layout
    def _register_layout(self) -> None:
        """Per-token group, time centre and frame span of the full sequence (constants)."""
        cfg = self.config
        window, pooled = cfg.window, cfg.window // cfg.prefix_tokens
        groups, spans = [], []
        for j in range(cfg.prefix_tokens):
            groups.append(0)
            spans.append((j * pooled - window, (j + 1) * pooled - window))
        for k, scale in enumerate(cfg.scales):
            step = window // scale
            for i in range(scale):
                groups.append(k + 1)
                spans.append((i * step, (i + 1) * step))
        spans = torch.tensor(spans, dtype=torch.float32)
        time = spans.mean(1) - 0.5  # frame i covers [i, i + 1): its index is its centre - 0.5
        self._groups = groups  # the same as a list: deciding on masks without a device sync
        self.register_buffer("token_group", torch.tensor(groups), persistent=False)
        self.register_buffer("token_span", spans, persistent=False)
        self.register_buffer("token_time", time, persistent=False)
        self.register_buffer("time_embedding", sinusoid(time, cfg.width), persistent=False)
        speech_time = torch.arange(-cfg.speech_context, window + cfg.speech_context, dtype=torch.float32)
        self.register_buffer("speech_time", speech_time, persistent=False)  # speech row j: frame j - A

    def scale_offsets(self) -> list[int]:
        """Index of each scale's first code token in the logits: [0, s_0, s_0 + s_1, ...]."""
        offsets = [0]
        for scale in self.config.scales:
            offsets.append(offsets[-1] + scale)
        return offsets

    # ------------------------------------------------------------------ conditioning
    def context(self, previous: torch.Tensor, has_previous: torch.Tensor, speech: torch.Tensor,
                speech_valid: torch.Tensor, style: torch.Tensor, style_mask: torch.Tensor,
                emotion: torch.Tensor, emotion_mask: torch.Tensor, segment_start: torch.Tensor) -> ARContext:
        """Project a window's conditioning (the `ARBatch` fields of the same names) once.

        previous (B, W, C) normalised, has_previous (B,) bool, speech (B, W + 2A, Ds),
        speech_valid (B, W + 2A) bool, style / emotion (B, K, T, Dt), masks (B, K, T) bool,
        segment_start (B, K) long.
        """
        cfg = self.config
        batch = previous.shape[0]
        frames = cfg.window + 2 * cfg.speech_context
        if previous.shape[1:] != (cfg.window, cfg.channels):
            raise ValueError(f"previous must be (B, {cfg.window}, {cfg.channels}), got {tuple(previous.shape)}")
        if speech.shape != (batch, frames, cfg.speech_dim) or speech_valid.shape != (batch, frames):
            raise ValueError(f"speech must be ({batch}, {frames}, {cfg.speech_dim}) with a ({batch}, {frames}) "
                             f"mask, got {tuple(speech.shape)} and {tuple(speech_valid.shape)}")
        if not bool((segment_start[:, 0] == 0).all()):
            raise ValueError("caption segment 0 must start at frame 0 of the window")
        tokens = self.previous_in(down(previous, cfg.prefix_tokens))
        prefix = torch.where(has_previous.bool()[:, None, None], tokens, self.no_previous.to(tokens.dtype))
        style, style_mask = self._captions(style, style_mask, self.null_style, "style")
        emotion, emotion_mask = self._captions(emotion, emotion_mask, self.null_emotion, "emotion")
        return ARContext(prefix, self.speech_in(speech), speech_valid.bool()[:, None, None, :],
                         style, style_mask, emotion, emotion_mask, segment_start.long())

    def _captions(self, tokens: torch.Tensor, mask: torch.Tensor, null: torch.Tensor, name: str):
        """(B, K, T, Dt), (B, K, T) -> (B, K, 1 + T', D), (B, K, 1 + T'): null token in front, T' <= max."""
        if tokens.ndim != 4 or tokens.shape[-1] != self.config.text_dim or mask.shape != tokens.shape[:3]:
            raise ValueError(f"{name} must be (B, K, T, {self.config.text_dim}) with a (B, K, T) mask, "
                             f"got {tuple(tokens.shape)} and {tuple(mask.shape)}")
        limit = self.config.max_caption_tokens
        tokens, mask = tokens[:, :, :limit], mask[:, :, :limit].bool()
        projected = self.text_in(tokens)
        empty = ~mask.any(-1, keepdim=True)  # the null token is the caption only when there is none
        null = null.to(projected.dtype).expand(*projected.shape[:2], 1, -1)
        return torch.cat([null, projected], dim=2), torch.cat([empty, mask], dim=2)

    # ------------------------------------------------------------------ prediction
    def begin(self, context: ARContext) -> ARState:
        """Start predicting a window: its conditioning's keys and values, no tokens yet."""
        cfg = self.config
        speech_rotary = rotary_tables(self.speech_time, cfg.width // cfg.heads, cfg.rope_base)
        return ARState(context, [layer.memory(context, speech_rotary) for layer in self.layers])

    def step(self, state: ARState, scale_input: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the next scale k = ``state.scales``: (B, s_k, L, 2) logits.

        scale_input: None for k = 0 (the prefix and start token go in), else (B, s_k, L),
        ``MultiScaleBSQ.scale_input`` of the codes of scales < k. Equal to the matching
        slice of `forward` (up to float rounding), at about half the cost over a window.
        """
        cfg, k = self.config, state.scales
        if k >= len(cfg.scales):
            raise ValueError(f"all {len(cfg.scales)} scales of this window are predicted already")
        if (scale_input is None) != (k == 0):
            raise ValueError("scale 0 takes no input; every later scale takes its scale input")
        batch = state.context.prefix.shape[0]
        if k == 0:
            tokens = self._first_tokens(state.context)
        else:
            tokens = self._code_tokens(scale_input, k, batch)
        hidden = self._run(state, tokens)
        state.scales += 1
        return self.head(self.norm(hidden[:, hidden.shape[1] - cfg.scales[k]:])).unflatten(-1, (cfg.bits, 2))

    def forward(self, context: ARContext, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits of scales 0..k from the inputs of scales 1..k (k = len(inputs) < S), in one pass.

        inputs[j - 1]: (B, s_j, L) float, ``MultiScaleBSQ.scale_input`` of the codes of
        scales < j. Returns (B, s_0 + ... + s_k, L, 2); block-causality makes the logits of
        scale j the same whatever finer inputs are given.
        """
        cfg = self.config
        if len(inputs) >= len(cfg.scales):
            raise ValueError(f"at most {len(cfg.scales) - 1} scales of inputs, got {len(inputs)}")
        batch = context.prefix.shape[0]
        parts = [self._first_tokens(context)] + [self._code_tokens(x, j, batch) for j, x in enumerate(inputs, start=1)]
        hidden = self._run(self.begin(context), torch.cat(parts, dim=1))
        return self.head(self.norm(hidden[:, cfg.prefix_tokens:])).unflatten(-1, (cfg.bits, 2))

    def _first_tokens(self, context: ARContext) -> torch.Tensor:
        """(B, P + 1, D): the prefix and the start token."""
        start = self.start.to(context.prefix.dtype).expand(context.prefix.shape[0], 1, -1)
        return torch.cat([context.prefix, start], dim=1)

    def _code_tokens(self, x: torch.Tensor, k: int, batch: int) -> torch.Tensor:
        """Scale k's input (B, s_k, L) -> (B, s_k, D) tokens."""
        cfg = self.config
        if x.shape != (batch, cfg.scales[k], cfg.bits):
            raise ValueError(f"input of scale {k} must be ({batch}, {cfg.scales[k]}, {cfg.bits}), "
                             f"got {tuple(x.shape)}")
        # scale inputs are sums of +-1/sqrt(L) codes times gains: sqrt(L) brings them to ~unit size
        return self.code_in(x * math.sqrt(cfg.bits))

    def _run(self, state: ARState, x: torch.Tensor) -> torch.Tensor:
        """The next tokens (B, n, D) through every layer -> (B, n, D) hidden states."""
        cfg = self.config
        first, count = state.tokens, x.shape[1]
        span = slice(first, first + count)
        group = self.token_group[span]
        x = x + self.group_embedding[group] + self.time_embedding[span].to(x.dtype)
        # a token sees its own and earlier groups; tokens of one new group see everything so far
        groups = self._groups[span]
        self_mask = None if groups[0] == groups[-1] else group[:, None] >= self.token_group[None, :first + count]
        speech_rotary = rotary_tables(self.token_time[span], cfg.width // cfg.heads, cfg.rope_base)
        coverage = segment_coverage(self.token_span[span], state.context.segment_start, cfg.window)
        for index, layer in enumerate(self.layers):
            x = layer(x, state, index, self_mask, speech_rotary, coverage)
        state.tokens += count
        return x

    # ------------------------------------------------------------------ training
    def loss(self, batch: ARBatch, codec: MotionCodec) -> dict[str, torch.Tensor]:
        """One training step's losses on a batch; the codec is frozen (eval mode, no_grad).

        In training mode the input codes get bit flips (``bit_flip``) and previous window,
        style and emotion are dropped per window independently (``drop_*``); targets are
        the clean codes. Returns ``loss`` (per-bit cross-entropy, mean over bits and over
        the code tokens that cover at least one valid frame), ``bit_accuracy`` and
        ``bit_accuracy_scale{k}`` (argmax vs target, same weights; detached).
        """
        cfg = self.config
        if codec.training:
            raise ValueError("the codec must be in eval mode (frozen) when training the AR model")
        cfg.check_codec(codec.config)
        size, device = batch.size, batch.motion.device
        has_previous = batch.has_previous.bool()
        style_mask, emotion_mask = batch.style_mask.bool(), batch.emotion_mask.bool()
        with torch.no_grad():
            codes = codec.encode(batch.motion)
            noisy = codes
            if self.training:
                def kept(p: float) -> torch.Tensor:
                    return torch.rand(size, device=device) >= p
                has_previous = has_previous & kept(cfg.drop_previous)
                style_mask = style_mask & kept(cfg.drop_style)[:, None, None]
                emotion_mask = emotion_mask & kept(cfg.drop_emotion)[:, None, None]
                if cfg.bit_flip:
                    noisy = [c ^ (torch.rand(c.shape, device=device) < cfg.bit_flip) for c in codes]
            inputs = codec.quantiser.scale_inputs(noisy)[1:]
        context = self.context(batch.previous, has_previous, batch.speech, batch.speech_valid, batch.style,
                               style_mask, batch.emotion, emotion_mask, batch.segment_start)
        logits = self(context, inputs).float()  # (B, N, L, 2)
        targets = torch.cat(codes, dim=1).long()  # (B, N, L)
        valid = batch.valid.to(logits.dtype)[..., None]
        # a code matters when it shapes at least one real frame
        weights = torch.cat([(down(valid, s)[..., 0] > 0).to(logits.dtype) for s in cfg.scales], dim=1)  # (B, N)
        entropy = F.cross_entropy(logits.flatten(0, 2), targets.flatten(), reduction="none").view_as(targets)
        norm = (weights.sum() * cfg.bits).clamp_min(1.0)
        correct = (logits.argmax(-1) == targets).to(logits.dtype) * weights[..., None]
        result = {"loss": (entropy * weights[..., None]).sum() / norm, "bit_accuracy": correct.sum().detach() / norm}
        offsets = self.scale_offsets()
        for k in range(len(cfg.scales)):
            part = slice(offsets[k], offsets[k + 1])
            count = (weights[:, part].sum() * cfg.bits).clamp_min(1.0)
            result[f"bit_accuracy_scale{k}"] = (correct[:, part].sum() / count).detach()
        return result
