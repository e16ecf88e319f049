"""Controllability: do captions the caption generator never produces move the face the way
they say? (issue 5, "Controllability")

The test captions (`control_captions.json`, read with `load_control_captions`) are written
in phrasings the training data never had: synonyms, other word orders, terse tags
("S = man | E = angry | I = strong"), long descriptive sentences. Each names one attribute
it should move and the direction. Every caption is generated on the same audios (and,
through the ``generate`` callable, the same seed and options) as the neutral reference
`NEUTRAL`, and the attribute is compared with the reference's.

Attributes, each a function of (motion (T, C), channel names (C,)) -> float, T frames at
25 fps, channel names as `model.core.head_model` defines them (the open head: the 52 ARKit
names plus ``head.rx/ry/rz``):

================ ==================================================== ==========
attribute        measure                                              unit
================ ==================================================== ==========
mouth_amplitude  std_t jawOpen_t                                      weight
head_motion      sqrt(mean_t angle(Rbar^T R_t)^2), Rbar = clip mean  degrees
smile            mean_t,c mouthSmile{Left,Right}                      weight
frown            mean_t,c mouthFrown{Left,Right}                      weight
brow_raise       mean_t,c browInnerUp, browOuterUp{Left,Right}        weight
eye_widening     mean_t,c eyeWide{Left,Right}                         weight
================ ==================================================== ==========

A rig without a channel a measure needs (FLAME's PCA expressions have no ARKit names)
raises `ControllabilityError` naming it: a share computed on a silently missing channel
would be wrong, so the report must say the rig cannot be measured instead.

Success (`ControlRow.ok`): the caption's mean over the audios, v, against the
reference's, n, moved the stated way by more than m = max(`RELATIVE_MARGIN` * |n|,
`ABSOLUTE_FLOOR`[attribute]): v - n > m for "up", n - v > m for "down". Two runs with
different captions sample different codes, so amplitudes differ by a few percent even
when the caption has no effect; 10% is above that, and far below every effect the
captions ask for (the data engine's wide mouth is +45%, narrow -40%, a still head -94%,
lively +100%). The floors cover references near zero (no smile, frown or eye widening in
a neutral face), where a relative margin would count noise as a move.

Unseen (`why_unseen`): a caption counts as one the generator never produces when it has
held-out syntax (``=``, ``|``, ``:``), a held-out word (`HELD_OUT_WORDS`), or a word
outside the generator's lexicon (`generator_lexicon`: every word of every string literal
in `model.data.captions` and `model.data.controls` except the held-out lists, a superset
of what it can write, since it only joins those literals with spaces and punctuation).
"""
from __future__ import annotations

import ast
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..core.errors import BadInput
from ..metrics import MEASURES

ATTRIBUTES = ("mouth_amplitude", "head_motion", "smile", "frown", "brow_raise", "eye_widening")
DIRECTIONS = ("up", "down")
FORMS = ("synonym", "word_order", "tag", "long_sentence")
UNITS = {"mouth_amplitude": "std of jawOpen (weight)", "head_motion": "RMS deviation (degrees)",
         "smile": "mean weight", "frown": "mean weight", "brow_raise": "mean weight", "eye_widening": "mean weight"}

# The default style and a neutral emotion, worded as the generator words them (both are
# among its most frequent captions for those controls), so the reference is in-distribution.
NEUTRAL = ("A person is speaking.", "Neutral")

RELATIVE_MARGIN = 0.10
ABSOLUTE_FLOOR = {"mouth_amplitude": 0.005, "head_motion": 0.1, "smile": 0.02, "frown": 0.02, "brow_raise": 0.02,
                  "eye_widening": 0.02}
SHARE_AIM = 0.9
CAPTIONS_FILE = Path(__file__).with_name("control_captions.json")

Generate = Callable[[object, str, str], "tuple[np.ndarray, Sequence[str]]"]


class ControllabilityError(BadInput):
    """Motion that cannot be measured (a missing channel, a bad shape) or a bad caption entry."""


# ----------------------------------------------------------------------------- captions


@dataclass(frozen=True)
class ControlCaption:
    """One test: a caption pair, the attribute it should move, which way, and its form."""

    style: str
    emotion: str
    attribute: str
    direction: str
    form: str

    def __post_init__(self) -> None:
        for name, value, allowed in (("attribute", self.attribute, ATTRIBUTES),
                                     ("direction", self.direction, DIRECTIONS), ("form", self.form, FORMS)):
            if value not in allowed:
                raise ControllabilityError(f"{name} '{value}' is not one of {', '.join(allowed)}")
        if not isinstance(self.style, str) or not isinstance(self.emotion, str):
            raise ControllabilityError("style and emotion captions must be text")

    @property
    def pair(self) -> tuple[str, str]:
        return self.style, self.emotion


def load_control_captions(path: str | os.PathLike = CAPTIONS_FILE) -> tuple[ControlCaption, ...]:
    """The test captions: a JSON list of {style, emotion, attribute, direction, form}
    objects, or an object holding it under "captions"."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    entries = data["captions"] if isinstance(data, dict) else data
    captions = []
    for number, entry in enumerate(entries, start=1):
        try:
            captions.append(ControlCaption(**entry))
        except (TypeError, ControllabilityError) as exc:
            raise ControllabilityError(f"{path}: caption {number}: {exc}") from None
    return tuple(captions)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


@lru_cache(maxsize=1)
def generator_lexicon() -> frozenset[str]:
    """Every word ([a-z]+, lower case) of every string literal in the caption generator's
    modules, docstrings included, except the held-out lists: a superset of its output's words."""
    root = Path(__file__).resolve().parents[1] / "data"
    words: set[str] = set()
    for name in ("captions.py", "controls.py"):
        tree = ast.parse((root / name).read_text(encoding="utf-8"))
        held_out = {id(node) for statement in ast.walk(tree) if isinstance(statement, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id.startswith("HELD_OUT") for t in statement.targets)
                    for node in ast.walk(statement.value)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in held_out:
                words.update(_words(node.value))
    return frozenset(words)


def why_unseen(text: str) -> str | None:
    """Why the generator cannot have written ``text``: held-out syntax, a held-out word or
    a word outside `generator_lexicon` (the first found); None if nothing shows it."""
    from ..data.captions import HELD_OUT_SYNTAX, HELD_OUT_WORDS

    for mark in HELD_OUT_SYNTAX:
        if mark in text:
            return f"held-out syntax '{mark}'"
    lower = text.lower()
    for levels in HELD_OUT_WORDS.values():
        for words in levels.values():
            for word in words:
                if re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", lower):
                    return f"held-out word '{word}'"
    lexicon = generator_lexicon()
    new = [word for word in _words(text) if word not in lexicon]
    return f"new word '{new[0]}'" if new else None


# ----------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class ControlRow:
    """One caption's result: attribute values (means over the audios) and the verdict."""

    caption: ControlCaption
    neutral: float  # the reference's value
    value: float  # the caption's value
    margin: float  # how far it must move to count: max(relative margin * |neutral|, floor)

    @property
    def change(self) -> float:
        return self.value - self.neutral

    @property
    def relative(self) -> float | None:
        """change / |neutral|; None where the reference is within the margin of zero (no meaningful ratio)."""
        return self.change / abs(self.neutral) if abs(self.neutral) > self.margin else None

    @property
    def ok(self) -> bool:
        signed = self.change if self.caption.direction == "up" else -self.change
        return bool(signed > self.margin)


@dataclass(frozen=True)
class ControllabilityResult:
    rows: tuple[ControlRow, ...]
    neutral: tuple[str, str]
    audios: int
    relative_margin: float

    @property
    def share(self) -> float:
        """Share of captions that moved their attribute the stated way."""
        return sum(r.ok for r in self.rows) / len(self.rows)

    @property
    def failures(self) -> tuple[ControlRow, ...]:
        return tuple(r for r in self.rows if not r.ok)

    @property
    def meets_aim(self) -> bool:
        return self.share >= SHARE_AIM

    def counts_by(self, key: str) -> dict[str, tuple[int, int]]:
        """``key`` ("attribute", "direction" or "form") -> (moved the right way, captions), in first-seen order."""
        totals, good = Counter(), Counter()
        for row in self.rows:
            group = getattr(row.caption, key)
            totals[group] += 1
            good[group] += row.ok
        return {group: (good[group], total) for group, total in totals.items()}

    def summary(self) -> dict:
        """The figures, JSON-ready."""
        return {
            "neutral": {"style": self.neutral[0], "emotion": self.neutral[1]}, "audios": self.audios,
            "relative_margin": self.relative_margin, "share": self.share, "meets_aim": self.meets_aim,
            "by_attribute": {k: list(v) for k, v in self.counts_by("attribute").items()},
            "by_form": {k: list(v) for k, v in self.counts_by("form").items()},
            "rows": [{"style": r.caption.style, "emotion": r.caption.emotion, "attribute": r.caption.attribute,
                      "direction": r.caption.direction, "form": r.caption.form, "neutral": r.neutral,
                      "value": r.value, "margin": r.margin, "ok": r.ok} for r in self.rows],
        }


def measure_controllability(generate: Generate, audios: Iterable, captions: Iterable[ControlCaption],
                            neutral: tuple[str, str] = NEUTRAL, relative_margin: float = RELATIVE_MARGIN,
                            floors: dict[str, float] | None = None) -> ControllabilityResult:
    """Each caption's attribute against the neutral reference's, on the same audios.

    ``generate(audio, style, emotion) -> (motion (T, C), channel names (C,))`` must be
    deterministic for a given input (fixed seed and options), so that only the captions
    differ. Values are means over ``audios``; each distinct caption pair is generated once
    per audio, the reference once per audio. Margins and floors: see the module docstring.
    """
    audios, captions = list(audios), tuple(captions)
    if not audios:
        raise ValueError("no audio to generate on")
    if not captions:
        raise ValueError("no captions to measure")
    if not 0 <= relative_margin < 1:
        raise ValueError(f"relative_margin must be in [0, 1), got {relative_margin}")
    floors = dict(ABSOLUTE_FLOOR if floors is None else floors)
    neutral = (str(neutral[0]), str(neutral[1]))
    needed: dict[tuple[str, str], set[str]] = {neutral: set()}
    for caption in captions:
        needed[neutral].add(caption.attribute)
        needed.setdefault(caption.pair, set()).add(caption.attribute)

    values: dict[tuple[str, str], dict[str, float]] = {}
    for pair, attributes in needed.items():
        per_audio = {attribute: [] for attribute in attributes}
        for audio in audios:
            motion, channels = generate(audio, *pair)
            for attribute in attributes:
                per_audio[attribute].append(MEASURES[attribute](np.asarray(motion), tuple(channels)))
        values[pair] = {attribute: float(np.mean(v)) for attribute, v in per_audio.items()}

    rows = []
    for caption in captions:
        reference = values[neutral][caption.attribute]
        margin = max(relative_margin * abs(reference), floors[caption.attribute])
        rows.append(ControlRow(caption, reference, values[caption.pair][caption.attribute], margin))
    return ControllabilityResult(tuple(rows), neutral, len(audios), relative_margin)


def generator_fn(generator, options=None) -> Generate:
    """``generate`` for `measure_controllability` from a loaded `model.generate.Generator`:
    constant captions, the same ``options`` (default: seed 0) for every call."""
    from ..core.contract import GenerationOptions
    from ..core.schedule import parse_schedule

    options = GenerationOptions(seed=0) if options is None else options
    if options.takes != 1:
        raise ValueError("controllability compares single takes; use options with takes=1")

    def generate(audio, style: str, emotion: str):
        take = generator.generate(audio, parse_schedule(None, style, emotion), options)[0]
        return take.motion, take.channels

    return generate


# ----------------------------------------------------------------------------- report


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if text else "*(empty)*"


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def _share_table(title: str, counts: dict[str, tuple[int, int]]) -> list[str]:
    lines = [f"| {title} | moved the right way | share |", "|---|---:|---:|"]
    lines += [f"| {group} | {good} / {total} | {good / total:.0%} |" for group, (good, total) in counts.items()]
    return lines


def controllability_markdown(result: ControllabilityResult) -> str:
    """Every caption's row, the shares per attribute and per form, and the failures."""
    good = sum(r.ok for r in result.rows)
    lines = [
        f"Reference: style \"{result.neutral[0]}\", emotion \"{result.neutral[1]}\"; values are means over "
        f"{result.audios} audio clip(s), each caption on the same audio and seed as the reference. A caption "
        f"counts when its attribute moved the stated way by more than max({result.relative_margin:.0%} of the "
        "reference, a floor per attribute).",
        "",
        "| # | style caption | emotion caption | form | attribute | direction | neutral | value | change | ok |",
        "|---:|---|---|---|---|---|---:|---:|---:|---|",
    ]
    for number, row in enumerate(result.rows, start=1):
        c = row.caption
        change = _signed(row.change) + (f" ({row.relative:+.0%})" if row.relative is not None else "")
        lines.append(f"| {number} | {_cell(c.style)} | {_cell(c.emotion)} | {c.form} | {c.attribute} | "
                     f"{c.direction} | {row.neutral:.3f} | {row.value:.3f} | {change} | "
                     f"{'yes' if row.ok else '**no**'} |")
    verdict = "met" if result.meets_aim else "not met"
    lines += ["", f"**{good} of {len(result.rows)} captions ({result.share:.0%}) moved the right way** "
                  f"(aim: {SHARE_AIM:.0%}, {verdict}).", ""]
    lines += _share_table("attribute", result.counts_by("attribute")) + [""]
    lines += _share_table("form", result.counts_by("form")) + [""]
    lines.append("Units: " + "; ".join(f"{a}: {u}" for a, u in UNITS.items()) + ".")
    lines += ["", "Failures:" if result.failures else "Failures: none.", ""]
    for number, row in enumerate(result.rows, start=1):
        if not row.ok:
            c = row.caption
            lines.append(f"- #{number} ({c.form}) \"{c.style}\" / \"{c.emotion}\": {c.attribute} should go "
                         f"{c.direction} by more than {row.margin:.3f}; it went from {row.neutral:.3f} to "
                         f"{row.value:.3f} ({_signed(row.change)}).")
    return "\n".join(lines).rstrip() + "\n"
