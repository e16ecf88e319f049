"""CapTalk checkpoints: safetensors weights plus JSON, never pickle.

A checkpoint is a folder::

    captalk.json          the manifest (below)
    codec.safetensors     MotionCodec weights (stage 1)
    ar.safetensors        autoregressive model weights (stage 2), once trained

``captalk.json``::

    format            "captalk-checkpoint"
    format_version    1
    head_model        head-model id the motion is for (e.g. "captalk-open-head-v1")
    channels          the motion channel names, in order (the rig must have them)
    channel_signature HeadModel.channel_signature() of that head
    stats             ChannelStats.to_dict(): per-channel normalisation
    codec             CodecConfig.to_dict()
    ar                the AR model's config dict (absent before stage 2)
    speech_encoder    speech encoder id (model.encoders)
    text_encoder      text encoder id
    training          free-form summary: data, steps, time, seeds, metrics

The manifest is read and checked by `model.core.checkpoint_manifest` (torch-free, for the
worker's start); this module holds the weights.

Training state for resuming (optimiser moments, step, RNG) is stored the same way
(`save_state` / `load_state`): nested dicts of tensors flattened into safetensors keys,
everything else in JSON.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .core.atomic import atomic_write
from .core.checkpoint_manifest import CheckpointError

_SEPARATOR = "/"


def save_weights(folder: str | os.PathLike, name: str, module: torch.nn.Module) -> Path:
    """``module``'s state dict -> ``<folder>/<name>.safetensors`` (contiguous CPU copies)."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    path = Path(folder) / f"{name}.safetensors"
    atomic_write(path, lambda temporary: save_file(state, temporary))
    return path


def load_weights(folder: str | os.PathLike, name: str, module: torch.nn.Module, device="cpu") -> torch.nn.Module:
    """Load ``<folder>/<name>.safetensors`` into ``module`` strictly; clear errors on mismatch,
    on tensors that are not floating point where the module's are, and on NaN / infinite weights."""
    path = Path(folder) / f"{name}.safetensors"
    try:
        state = load_file(str(path), device=str(device))
    except FileNotFoundError:
        raise CheckpointError(f"'{folder}' has no {name} weights ({path.name})") from None
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"'{path}' cannot be read ({exc})") from None
    expected = module.state_dict()
    for key, tensor in state.items():
        if key in expected and expected[key].is_floating_point() and not tensor.is_floating_point():
            raise CheckpointError(f"'{path}': '{key}' holds {tensor.dtype} values where the model has "
                                  f"{expected[key].dtype} weights")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"'{path}': '{key}' contains NaN or infinite weights; the checkpoint is damaged")
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"'{path}' does not match this model's architecture ({str(exc).splitlines()[-1].strip()})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"'{path}' does not match this model's architecture "
            f"(missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]})"
        )
    return module


def stored_elements(folder: str | os.PathLike, name: str) -> int:
    """How many numbers ``<folder>/<name>.safetensors`` holds, from its header alone."""
    path = Path(folder) / f"{name}.safetensors"
    try:
        with safe_open(str(path), framework="pt") as weights:
            return sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())
    except FileNotFoundError:
        raise CheckpointError(f"'{folder}' has no {name} weights ({path.name})") from None
    except Exception as exc:
        raise CheckpointError(f"'{path}' cannot be read ({exc})") from None


def load_module(folder: str | os.PathLike, name: str, module_class, config, device="cpu") -> torch.nn.Module:
    """``module_class(config)`` with ``<folder>/<name>.safetensors`` loaded into it, but only
    after the weights file is known to hold at least ``config.min_parameters()`` numbers: a
    manifest must not make us build a model bigger than its weights (7.7 GB for a crafted
    ``layers`` once)."""
    stored, needed = stored_elements(folder, name), config.min_parameters()
    if needed > stored:
        raise CheckpointError(f"'{folder}': the manifest describes a {name} model of at least {needed:,} parameters "
                              f"but {name}.safetensors holds {stored:,}; the manifest does not belong to these weights")
    return load_weights(folder, name, module_class(config), device)


def _flatten(tree: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Tensors -> ``tensors[key]`` and a JSON placeholder; containers recurse; scalars kept."""
    if isinstance(tree, torch.Tensor):
        tensors[prefix] = tree.detach().to("cpu").contiguous()
        return {"__tensor__": prefix}
    if isinstance(tree, Mapping):
        return {"__dict__": [[_flatten(k, f"{prefix}{_SEPARATOR}k{i}", tensors), _flatten(v, f"{prefix}{_SEPARATOR}{i}", tensors)]
                             for i, (k, v) in enumerate(tree.items())]}
    if isinstance(tree, (list, tuple)):
        return {"__list__": [_flatten(v, f"{prefix}{_SEPARATOR}{i}", tensors) for i, v in enumerate(tree)],
                "tuple": isinstance(tree, tuple)}
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(f"cannot store {type(tree).__name__} in a checkpoint state")


def _unflatten(tree: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__dict__" in tree:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in tree["__dict__"]}
        if "__list__" in tree:
            items = [_unflatten(v, tensors) for v in tree["__list__"]]
            return tuple(items) if tree.get("tuple") else items
    return tree


def save_state(path_stem: str | os.PathLike, state: Any) -> None:
    """Any nest of dicts/lists/tensors/scalars (an optimiser's state_dict, RNG states, the
    step) -> ``<stem>.safetensors`` + ``<stem>.json``; written tensors first, JSON last, so a
    JSON file on disk always has its tensors."""
    stem = Path(path_stem)
    tensors: dict[str, torch.Tensor] = {}
    structure = _flatten(state, "s", tensors)
    atomic_write(stem.with_suffix(".safetensors"), lambda temporary: save_file(tensors, temporary))
    atomic_write(stem.with_suffix(".json"), lambda temporary: Path(temporary).write_text(json.dumps(structure)))


def load_state(path_stem: str | os.PathLike, device="cpu") -> Any:
    stem = Path(path_stem)
    try:
        structure = json.loads(stem.with_suffix(".json").read_text())
        tensors = load_file(str(stem.with_suffix(".safetensors")), device=str(device))
    except FileNotFoundError:
        raise CheckpointError(f"no training state at '{stem}'") from None
    except Exception as exc:  # RecursionError (deeply nested JSON) included
        raise CheckpointError(f"training state '{stem}' cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from None
    try:
        return _unflatten(structure, tensors)
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"training state '{stem}' is damaged ({type(exc).__name__})") from None
