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
length missing / over the limit), 414/431 (request line / headers too long), 429 (queue
full), 501/505 (method / HTTP version), 503 (busy: try again) or 500 (a bug: the message
names it, the worker lives on).

Motion comes back as float32 little-endian bytes, base64 in JSON (about 0.5 MB for 60 s
of the open head): small next to the audio, and readable from any language.
"""
from __future__ import annotations

import base64
import math
import tomllib
from dataclasses import dataclass, fields
from enum import Enum
from functools import lru_cache
from typing import Any, Mapping

import numpy as np

from ..core.audio import DEFAULT_MAX_SECONDS
from ..core.contract import GenerationOptions, GenerationRequest
from ..core.schedule import MAX_CAPTION_CHARS, parse_schedule
from ..core.motion_file import MotionClip
from ..core.paths import REPO_ROOT
from ..core.errors import BackendFailure, BadInput, CapTalkError, Cancelled

PROTOCOL_VERSION = 2  # 2: the schedule carries the default captions; options are checked as GenerationOptions
TOKEN_HEADER = "X-CapTalk-Token"
_REQUEST_FIELDS = tuple(f.name for f in fields(GenerationRequest))


class JobState(str, Enum):
    """A job's life: queued -> running -> done | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class FailureKind(str, Enum):
    """Why a job failed, as the worker reports it: the client raises the matching error."""

    BAD_INPUT = "bad input"  # the request could not be carried out as asked (the message says why)
    CANCELLED = "cancelled"
    ERROR = "error"  # a bug in the worker

    @classmethod
    def of(cls, error: BaseException) -> "FailureKind":
        if isinstance(error, Cancelled):
            return cls.CANCELLED
        return cls.BAD_INPUT if isinstance(error, BadInput) else cls.ERROR

    def error(self, message: str) -> CapTalkError:
        """The error a client raises for a job that failed this way."""
        kind = {FailureKind.BAD_INPUT: BadInput, FailureKind.CANCELLED: Cancelled}.get(self, BackendFailure)
        return kind(message)


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


def request_to_json(request: GenerationRequest) -> dict:
    """A request as the worker receives it (audio bytes in base64; the schedule in full,
    default captions included; every option)."""
    return {"audio_path": request.audio_path,
            "audio_bytes": None if request.audio_bytes is None else base64.b64encode(request.audio_bytes).decode(),
            "audio_start": request.audio_start, "audio_end": request.audio_end,
            "schedule": request.schedule.to_list(), "head_model": request.head_model,
            "channels": None if request.channels is None else list(request.channels),
            "options": request.options.to_json(), "client": request.client}


def request_from_json(data: Any) -> GenerationRequest:
    """`request_to_json`'s dict -> the request; anything malformed or invalid is a
    `model.core.errors.BadInput` whose message names the field (the worker answers 400)."""
    if not isinstance(data, dict):
        raise RequestError("the request body must be a JSON object")
    unknown = sorted(set(data) - set(_REQUEST_FIELDS))
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(_REQUEST_FIELDS)}")
    values = {key: data[key] for key in _REQUEST_FIELDS if key in data}
    if values.get("audio_bytes") is not None:
        if not isinstance(values["audio_bytes"], str):
            raise RequestError("audio_bytes must be base64 text")
        try:
            values["audio_bytes"] = base64.b64decode(values["audio_bytes"], validate=True)
        except ValueError:
            raise RequestError("audio_bytes is not valid base64") from None
    schedule = values.get("schedule") or []
    if not isinstance(schedule, list):
        raise RequestError("schedule must be a list of {start, style, emotion} entries")
    values["schedule"] = parse_schedule(schedule)
    channels = values.get("channels")
    if channels is not None:
        if not (isinstance(channels, list) and all(isinstance(c, str) for c in channels)):
            raise RequestError("channels must be a list of channel names")
        values["channels"] = tuple(channels)
    options = values.get("options")
    values["options"] = GenerationOptions.from_json({} if options is None else options)
    return GenerationRequest(**values)


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
