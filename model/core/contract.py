"""The generation contract: what one request for motion says, in one typed form.

Every way of asking for motion builds a `GenerationRequest`: the panel's Generate and the
batch (`captalk_addon.generation.plan_jobs`), ``python -m model generate`` and the
worker's HTTP API (which receives it serialised by `model.link.protocol`, one function
each way). `model.run.run_request` is the one function that carries a request out. Nothing
here imports torch or Blender, so the add-on, the protocol and the CLI all read it.

    GenerationOptions  sampling: seed, caption guidance, temperature, top-p, takes,
                       smoothing, border blend, each with its default, bounds and help
                       text (the panel's properties and the CLI's flags are made from them)
    GenerationRequest  the audio (a path or the file's bytes, cropped to what plays), the
                       caption schedule (`model.core.schedule.Schedule`, default captions
                       included), the rig it is for, the options, who asked

Caption schedules and the caption limits are `model.core.schedule`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import BadInput
from .schedule import Schedule

MAX_TAKES = 8  # takes per request: each is a full generation in the same batch
SEED_MAX = 2**31 - 1  # Blender's IntProperty range, and take i's seed + i still fits torch's generators


class GenerationError(BadInput):
    """Bad generation settings (options, device); the message says which and why."""


@dataclass(frozen=True)
class OptionSpec:
    """What a user may set for one option: its text and bounds (the panel and the CLI show them)."""

    label: str
    description: str
    minimum: float | None = None
    maximum: float | None = None
    soft_maximum: float | None = None  # where a slider stops; typing may go up to ``maximum``


def _option(default, label: str, description: str, minimum=None, maximum=None, soft_maximum=None):
    return field(default=default, metadata={"spec": OptionSpec(label, description, minimum, maximum, soft_maximum)})


@dataclass(frozen=True)
class GenerationOptions:
    """How to sample the motion; invalid values raise `GenerationError` at construction."""

    seed: int = _option(0, "Seed", "Random seed: the same seed, captions and audio give the same motion "
                        "(take i uses seed + i)", 0, SEED_MAX)
    guidance: float = _option(2.0, "Caption Guidance", "How strongly the captions steer the motion (1: plain "
                              "conditional, higher: stronger, 0: captions ignored)", 0.0, 20.0, 5.0)
    style_guidance: float | None = _option(None, "Style Guidance", "The style caption's own guidance "
                                           "(default: Caption Guidance)", 0.0, 20.0, 5.0)
    emotion_guidance: float | None = _option(None, "Emotion Guidance", "The emotion caption's own guidance "
                                             "(default: Caption Guidance)", 0.0, 20.0, 5.0)
    # 0.3, not 1: at 1 the sampled codes blur real speech's lip closures (issue 17,
    # benchmarks/lip_sync_factors.py: /p b m/ closed 90% -> 99%, real-face jawOpen r 0.43 -> 0.49)
    temperature: float = _option(0.3, "Temperature", "Sampling randomness (0: always the likeliest motion, "
                                 "0.3: default, crisp lip closures, 1: as trained, looser lips, higher: wilder)",
                                 0.0, 5.0, 2.0)
    top_p: float = _option(0.97, "Top P", "Take the likelier code bit when its probability is at least this, "
                           "else sample it", 0.0, 1.0)
    takes: int = _option(1, "Takes", "How many different takes to generate at once (each with its own seed)",
                         1, MAX_TAKES)
    smoothing: bool = _option(True, "Smoothing", "Savitzky-Golay smoothing of the motion (as ARTalk)")
    border_blend: int = _option(8, "Border Blend", "Frames over which a jump at a window border fades out "
                                "(0: off)", 0, 100)

    def __post_init__(self) -> None:
        for spec_field in fields(self):
            _check_option(spec_field.name, getattr(self, spec_field.name), spec_field.default,
                          spec_field.metadata["spec"])
        if self.top_p == 0:
            raise GenerationError("top_p must be in (0, 1], got 0")

    @property
    def scales(self) -> tuple[float, float]:
        """(style, emotion) guidance scales."""
        style = self.guidance if self.style_guidance is None else self.style_guidance
        emotion = self.guidance if self.emotion_guidance is None else self.emotion_guidance
        return float(style), float(emotion)

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Any) -> "GenerationOptions":
        """A JSON object of options (keys left out keep their defaults); anything else is a
        `GenerationError` naming the key."""
        if not isinstance(data, dict):
            raise GenerationError("options must be an object of option names and values")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise GenerationError(f"unknown option(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
        return cls(**data)


def option_specs() -> dict[str, tuple[Any, OptionSpec]]:
    """{option name: (default, spec)} in declaration order (for UIs and command lines)."""
    return {f.name: (f.default, f.metadata["spec"]) for f in fields(GenerationOptions)}


def _check_option(name: str, value, default, spec: OptionSpec) -> None:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise GenerationError(f"{name} must be true or false, got {value!r}")
        return
    if value is None and default is None:
        return
    whole = isinstance(default, int)
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
        kind = "a whole number" if whole else "a number"
        raise GenerationError(f"{name} must be {kind}, got {value!r}")
    if not (whole or math.isfinite(value)) or not spec.minimum <= value <= spec.maximum:
        low, high = (spec.minimum, spec.maximum) if whole else (f"{spec.minimum:g}", f"{spec.maximum:g}")
        raise GenerationError(f"{name} must be between {low} and {high}, got {value!r}")


@dataclass(frozen=True)
class GenerationRequest:
    """One generation: which audio, which captions when, for which rig, how to sample.

    audio_path (absolute: the worker runs in its own folder) or audio_bytes (the file's
    bytes, e.g. a sound packed in a .blend); audio_start / audio_end crop it to the part
    that plays (a trimmed strip), in seconds, and the motion's frame 0 is at audio_start.
    schedule: captions over time, seconds from audio_start (`Schedule.constant()` for
    none). head_model / channels: the rig; a model that does not drive exactly these
    channels is refused. client: who asked, for the worker's status.
    """

    audio_path: str | None = None
    audio_bytes: bytes | None = None
    audio_start: float = 0.0
    audio_end: float | None = None
    schedule: Schedule = field(default_factory=Schedule.constant)
    head_model: str | None = None
    channels: tuple[str, ...] | None = None
    options: GenerationOptions = field(default_factory=GenerationOptions)
    client: str = ""

    def __post_init__(self) -> None:
        if (self.audio_path is None) == (self.audio_bytes is None):
            raise GenerationError("a request needs exactly one of audio_path and audio_bytes")
        if self.audio_path is not None and not (isinstance(self.audio_path, str) and os.path.isabs(self.audio_path)):
            raise GenerationError(f"audio_path must be an absolute path (the worker runs in its own folder): "
                                  f"{self.audio_path!r}")
        if self.audio_bytes is not None and not isinstance(self.audio_bytes, bytes):
            raise GenerationError("audio_bytes must be the audio file's bytes")
        start, end = self.audio_start, self.audio_end
        if not _seconds(start) or start < 0:
            raise GenerationError(f"audio_start must be a finite number of seconds >= 0, got {start!r}")
        if end is not None and not (_seconds(end) and end > start):
            raise GenerationError(f"audio_end must be a finite number of seconds after audio_start ({start:g}), "
                                  f"got {end!r}")
        if not isinstance(self.schedule, Schedule):
            raise GenerationError("schedule must be a model.core.schedule.Schedule (parse_schedule makes one)")
        if not isinstance(self.options, GenerationOptions):
            raise GenerationError("options must be GenerationOptions")
        if self.channels is not None and not (isinstance(self.channels, tuple)
                                              and all(isinstance(c, str) for c in self.channels)):
            raise GenerationError("channels must be a tuple of channel names")
        for name in ("head_model", "client"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise GenerationError(f"{name} must be text")

    @property
    def audio_source(self) -> str | bytes:
        """What `model.core.audio.load_audio` reads: the path or the bytes."""
        return self.audio_path if self.audio_path is not None else self.audio_bytes


def _seconds(value) -> bool:
    # an int is always finite, and math.isfinite overflows on one past float's range (10**400)
    return not isinstance(value, bool) and isinstance(value, (int, float)) and (isinstance(value, int)
                                                                               or math.isfinite(value))
