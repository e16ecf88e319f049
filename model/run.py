"""Carry out one `GenerationRequest`: the one way every caller gets motion.

The worker (`model.serve.server`), ``python -m model generate``, the batch's
``--in-process`` and any script call these; the Blender side reaches them through the
worker. Two steps, so the worker can refuse a bad request before queueing it and a
command line can fail on bad audio before loading the model:

    prepared = prepare_request(request, max_audio_seconds)   # decode, crop, check: no model needed
    prepared = check_rig(prepared, generator.manifest)       # the model drives the rig, or an adapter maps it
    takes = run_prepared(generator, prepared, progress, cancel)   # list[MotionClip], one per take

`run_request` does all three. A FLAME rig is driven through the adapter built from the
user's own file at import (`model.core.flame_adapter`): the model generates its own
channels and `run_prepared` maps them onto the rig's.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace
from typing import Callable, Mapping

import numpy as np

from .core.checkpoint_manifest import CheckpointError, check_fits
from .core.audio import DEFAULT_MAX_SECONDS, SAMPLE_RATE, AudioError, crop_audio, load_audio
from .core.contract import GenerationRequest
from .core.flame_adapter import FlameAdapter, adapter_for_request, map_to_rig
from .core.motion_file import MotionClip


@dataclass(frozen=True)
class PreparedRequest:
    """A request whose audio is decoded, cropped and checked against its schedule."""

    request: GenerationRequest
    samples: np.ndarray  # (N,) float32, 16 kHz mono: what plays, from audio_start to audio_end
    adapter: FlameAdapter | None = None  # set by `check_rig` when the rig is a FLAME rig with an adapter


def prepare_request(request: GenerationRequest, max_audio_seconds: float = DEFAULT_MAX_SECONDS) -> PreparedRequest:
    """Decode and crop the request's audio and check its schedule fits it. Raises
    `AudioError` / `ScheduleError` (both `BadInput`) with the reason."""
    path = request.audio_path
    if path is not None and not os.path.exists(path):  # the loader refuses special files, saying which
        raise AudioError(f"'{path}': no such file (the back end reads it as user {_user_name()}, on this machine)")
    samples = crop_audio(load_audio(request.audio_source, max_seconds=max_audio_seconds), request.audio_start,
                         request.audio_end)
    request.schedule.check_duration(samples.size / SAMPLE_RATE)
    return PreparedRequest(request, samples)


def check_rig(prepared: PreparedRequest, manifest: Mapping) -> PreparedRequest:
    """The prepared request with the adapter its rig needs, if any; raises `CheckpointError`
    (or the adapter's `AdapterError` / `NoAdapter`) unless the checkpoint (its manifest)
    drives the request's rig, directly or through an adapter."""
    request = prepared.request
    adapter = adapter_for_request(dict(manifest), request.head_model, request.channels)
    if adapter is not None:
        return replace(prepared, adapter=adapter)
    if request.channels is not None:
        check_fits(manifest, list(request.channels), request.head_model)
    elif request.head_model and request.head_model != manifest.get("head_model"):
        raise CheckpointError(f"the model was trained for head model '{manifest.get('head_model')}', "
                              f"not '{request.head_model}'")
    return prepared


def run_prepared(generator, prepared: PreparedRequest, progress: Callable[[float, str], None] | None = None,
                 cancel: threading.Event | None = None) -> list[MotionClip]:
    """The request's takes from a loaded `model.generate.Generator` (one `MotionClip` each,
    in the rig's channels). Raises `GenerationCancelled` when ``cancel`` is set."""
    request = prepared.request
    takes = generator.generate(prepared.samples, request.schedule, request.options, progress=progress, cancel=cancel)
    if prepared.adapter is not None:
        takes = [map_to_rig(take, prepared.adapter) for take in takes]
    return takes


def run_request(generator, request: GenerationRequest, progress: Callable[[float, str], None] | None = None,
                cancel: threading.Event | None = None,
                max_audio_seconds: float = DEFAULT_MAX_SECONDS) -> list[MotionClip]:
    """`prepare_request`, `check_rig` and `run_prepared` in one call."""
    prepared = check_rig(prepare_request(request, max_audio_seconds), generator.manifest)
    return run_prepared(generator, prepared, progress, cancel)


def _user_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
