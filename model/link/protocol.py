"""What the worker and its clients say to each other (JSON over HTTP on 127.0.0.1).

Every request carries the session token in the ``X-CapTalk-Token`` header.

    GET  /health                          the worker: version, device, checkpoint, channels, queue, memory
    POST /jobs          GenerationRequest -> 202 {"job": id, "ahead": jobs queued before it}
    GET  /jobs/ID/events?after=N&wait=S   progress events after seq N (waits up to S s for one)
    GET  /jobs/ID/result                  the motion of a finished job (one entry per take)
    POST /jobs/ID/cancel                  stop it (queued: at once; running: between windows)
    POST /attach {"pid": P}               keep running while process P lives
    POST /detach {"pid": P}               P is done; the worker exits when no attached process is left
    POST /shutdown                        exit now (jobs in flight are cancelled)

Errors are ``{"error": message}`` with status 400 (bad request: the message is for the
user), 401 (no or wrong token), 404, 409 (result asked for too early), 411/413 (body
length missing / over the limit) or 500 (a bug: the message names it, the worker lives on).

Motion comes back as float32 little-endian bytes, base64 in JSON (about 0.5 MB for 60 s
of the open head): small next to the audio, and readable from any language.
"""
from __future__ import annotations

import base64
import math
import os
import tomllib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Mapping

import numpy as np

from ..core.audio import DEFAULT_MAX_SECONDS
from ..data.dataset import MAX_CAPTION_CHARS
from ..core.motion_file import MotionClip
from ..core.paths import REPO_ROOT
from ..core.errors import BadInput

PROTOCOL_VERSION = 1
TOKEN_HEADER = "X-CapTalk-Token"
MAX_TAKES = 8
_OPTION_KEYS = ("seed", "guidance", "style_guidance", "emotion_guidance", "temperature", "top_p", "takes",
                "smoothing", "border_blend")


class RequestError(BadInput):
    """A request the worker refuses; ``status`` is the HTTP status, the message is for the user."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@lru_cache(maxsize=1)
def addon_version() -> str:
    """The extension's version from its manifest ("unknown" if the manifest is missing)."""
    try:
        with open(REPO_ROOT / "blender_manifest.toml", "rb") as handle:
            return str(tomllib.load(handle)["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; the worker reports these on /health."""

    max_audio_seconds: float = DEFAULT_MAX_SECONDS
    max_caption_chars: int = MAX_CAPTION_CHARS
    max_body_bytes: int = 256 * 2**20  # a 10-minute 48 kHz stereo WAV in base64 is about 150 MB

    def __post_init__(self) -> None:
        if not (self.max_audio_seconds > 0 and self.max_body_bytes > 0):
            raise ValueError(f"limits must be positive: {self}")


@dataclass(frozen=True)
class GenerationRequest:
    """One generation: audio (a path the worker can read, or the file's bytes), captions,
    the rig it is for, and sampling options. audio_start / audio_end crop the audio (the
    part a trimmed sound strip plays); the motion's frame 0 is at audio_start.

    schedule: caption entries as `model.core.schedule.parse_schedule` takes them (start in
    seconds from the audio's start); style / emotion: the captions before the first.
    head_model / channels: the target rig; the worker refuses a checkpoint that does
    not drive exactly these channels. options: `model.generate.GenerationOptions` fields.
    """

    audio_path: str | None = None
    audio_bytes: bytes | None = None
    audio_start: float = 0.0  # seconds into the audio where the clip starts (a trimmed strip)
    audio_end: float | None = None  # where it ends; None: the audio's end
    schedule: tuple[Mapping[str, Any], ...] = ()
    style: str = ""
    emotion: str = ""
    head_model: str | None = None
    channels: tuple[str, ...] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    client: str = ""

    def __post_init__(self) -> None:
        if (self.audio_path is None) == (self.audio_bytes is None):
            raise RequestError("a request needs exactly one of audio_path and audio_bytes")
        if self.audio_path is not None and not os.path.isabs(self.audio_path):
            raise RequestError(f"audio_path must be absolute (the worker runs in its own folder): {self.audio_path!r}")
        start, end = self.audio_start, self.audio_end
        # ints are finite (math.isfinite(10**400) raises OverflowError: found by tests/fuzz/fuzz_request.py)
        if isinstance(start, bool) or not isinstance(start, (int, float)) or start < 0 \
                or not (isinstance(start, int) or math.isfinite(start)):
            raise RequestError(f"audio_start must be a number of seconds >= 0, got {start!r}")
        if end is not None and (isinstance(end, bool) or not isinstance(end, (int, float)) or not end > start):
            raise RequestError(f"audio_end must be a number of seconds after audio_start ({start:g}), got {end!r}")
        for name in ("style", "emotion"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise RequestError(f"{name} must be text")
            if len(value) > MAX_CAPTION_CHARS:
                raise RequestError(f"the {name} caption has {len(value)} characters; the limit is {MAX_CAPTION_CHARS}")
        unknown = sorted(set(self.options) - set(_OPTION_KEYS))
        if unknown:
            raise RequestError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(_OPTION_KEYS)}")
        takes = self.options.get("takes", 1)
        if isinstance(takes, int) and takes > MAX_TAKES:
            raise RequestError(f"takes is {takes}; at most {MAX_TAKES} takes per request")

    def to_json(self) -> dict:
        data = asdict(self)
        data["schedule"] = [dict(entry) for entry in self.schedule]
        data["options"] = dict(self.options)
        data["audio_bytes"] = None if self.audio_bytes is None else base64.b64encode(self.audio_bytes).decode()
        return data

    @classmethod
    def from_json(cls, data: Any) -> "GenerationRequest":
        """Parse a request body; anything malformed is a `RequestError` (400)."""
        if not isinstance(data, Mapping):
            raise RequestError("the request body must be a JSON object")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise RequestError(f"unknown field(s) {', '.join(unknown)}")
        values = dict(data)
        if values.get("audio_bytes") is not None:
            try:
                values["audio_bytes"] = base64.b64decode(values["audio_bytes"], validate=True)
            except (ValueError, TypeError):
                raise RequestError("audio_bytes is not valid base64") from None
        schedule = values.get("schedule") or ()
        if not isinstance(schedule, (list, tuple)):
            raise RequestError("schedule must be a list of {start, style, emotion} entries")
        values["schedule"] = tuple(schedule)
        channels = values.get("channels")
        if channels is not None:
            if not (isinstance(channels, (list, tuple)) and all(isinstance(c, str) for c in channels)):
                raise RequestError("channels must be a list of channel names")
            values["channels"] = tuple(channels)
        if not isinstance(values.get("options", {}), Mapping):
            raise RequestError("options must be an object")
        for name in ("audio_path", "head_model", "client"):
            if values.get(name) is not None and not isinstance(values[name], str):
                raise RequestError(f"{name} must be text")
        return cls(**values)


def encode_motion(clip: MotionClip) -> dict:
    """A motion clip -> JSON-ready dict (see the module docstring)."""
    motion = np.ascontiguousarray(clip.motion, dtype="<f4")
    return {"frames": int(motion.shape[0]), "channels": list(clip.channels), "fps": float(clip.fps),
            "motion": base64.b64encode(motion.tobytes()).decode(), "meta": _json_safe(clip.meta)}


def decode_motion(payload: Mapping[str, Any]) -> MotionClip:
    """`encode_motion`'s dict -> a `MotionClip` with (frames, channels) float32 motion."""
    channels = tuple(payload["channels"])
    motion = np.frombuffer(base64.b64decode(payload["motion"]), dtype="<f4")
    motion = motion.reshape(int(payload["frames"]), len(channels)).astype(np.float32)
    return MotionClip(motion=motion, channels=channels, fps=float(payload["fps"]), meta=dict(payload.get("meta", {})))


def _json_safe(value):
    """Meta as JSON can carry it (numpy scalars -> numbers, non-finite -> None)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
