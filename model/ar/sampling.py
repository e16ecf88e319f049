"""Turning the AR model's per-bit logits into codes: classifier-free guidance on the
captions, temperature, top-p, and seeded randomness.

Guidance. Three caption conditions can be run as one batch: ``none`` (both captions
null), ``emotion`` (emotion caption only) and ``both``. With guidance scales g_s (style)
and g_e (emotion) the logits are

    l = l_none + g_e (l_emotion - l_none) + g_s (l_both - l_emotion)
      = (1 - g_e) l_none + (g_e - g_s) l_emotion + g_s l_both

(InstructPix2Pix's two-condition guidance: the emotion caption's effect, then the style
caption's effect on top of it). g_s = g_e = g gives the usual l_none + g (l_both - l_none)
from two passes, g_s = g_e = 1 gives the plain conditional l_both from one, and
conditions that are identical (a caption that is empty) merge, so an empty style or
emotion caption costs no pass. `guidance_terms` works out which passes are needed.

Sampling, per bit, from the 2-way distribution softmax(l / temperature): if the likelier
value has probability >= top_p it is taken, otherwise the bit is drawn (the 2-way form of
nucleus sampling; top_p <= 0.5 or temperature 0 is greedy, top_p = 1 plain sampling).
A uniform number is drawn for every bit whether it is used or not, from one CPU
`torch.Generator` per take: the random stream does not depend on the logits, the device
or the other takes, so a take is reproducible from its seed alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

CONDITIONS = ("none", "emotion", "both")


@dataclass(frozen=True)
class GuidanceTerm:
    condition: str  # one of CONDITIONS: which captions this pass keeps
    weight: float


def guidance_terms(style_guidance: float, emotion_guidance: float, has_style: bool,
                   has_emotion: bool) -> tuple[GuidanceTerm, ...]:
    """The passes (and their weights) that the guided logits need; see the module docstring.

    A missing caption makes conditions equal: without a style caption ``both`` is
    ``emotion``; without an emotion caption ``emotion`` is ``none``. Equal conditions are
    merged (weights added) into the one kept, and zero weights dropped.
    """
    weights = {"none": 1.0 - emotion_guidance, "emotion": emotion_guidance - style_guidance, "both": style_guidance}
    same = {"none": "none",
            "emotion": "emotion" if has_emotion else "none",
            "both": "both" if has_style else ("emotion" if has_emotion else "none")}
    # the kept condition of a merged group is the richest one, so "both" survives when equal
    keep = {}
    for condition in CONDITIONS:
        group = same[condition]
        members = [c for c in CONDITIONS if same[c] == group]
        keep[condition] = members[-1]
    merged: dict[str, float] = {}
    for condition in CONDITIONS:
        merged[keep[condition]] = merged.get(keep[condition], 0.0) + weights[condition]
    terms = tuple(GuidanceTerm(c, w) for c, w in merged.items() if w != 0.0)
    if len(terms) <= 1:  # the weights sum to 1: a lone term is the plain conditional, whatever the rounding
        return (GuidanceTerm(terms[0].condition if terms else "both", 1.0),)
    return terms


def guide(logits: torch.Tensor, terms: tuple[GuidanceTerm, ...]) -> torch.Tensor:
    """(len(terms) * B, ..., 2) logits, term-major -> (B, ..., 2) guided logits (float32).

    A single term of weight 1 returns its logits unchanged (the plain conditional).
    """
    parts = logits.float().chunk(len(terms), dim=0)
    if len(terms) == 1 and terms[0].weight == 1.0:
        return parts[0]
    out = terms[0].weight * parts[0]
    for term, part in zip(terms[1:], parts[1:]):
        out = out + term.weight * part
    return out


def generators(seed: int, takes: int) -> list[torch.Generator]:
    """One CPU generator per take, seeded ``seed + take``."""
    return [torch.Generator().manual_seed(int(seed) + i) for i in range(takes)]


def sample_bits(logits: torch.Tensor, temperature: float, top_p: float,
                rngs: list[torch.Generator]) -> torch.Tensor:
    """(B, N, L, 2) logits -> (B, N, L) bool codes (True = +1); one generator per row of B."""
    if logits.shape[0] != len(rngs):
        raise ValueError(f"{logits.shape[0]} rows of logits but {len(rngs)} generators")
    uniform = torch.stack([torch.rand(logits.shape[1:3], generator=g) for g in rngs]).to(logits.device)
    margin = (logits[..., 1] - logits[..., 0]).float()  # log-odds of True
    greedy = margin > 0
    if temperature <= 0:
        return greedy
    p_true = torch.sigmoid(margin / temperature)
    confident = torch.maximum(p_true, 1.0 - p_true) >= top_p
    return torch.where(confident, greedy, uniform < p_true)
