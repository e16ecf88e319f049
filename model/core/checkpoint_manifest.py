"""A checkpoint's manifest (``captalk.json``), read and checked without torch: the worker
answers and checks requests from it while the weights still load (`model.checkpoint`
holds the weights half and documents the folder's layout).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from .atomic import atomic_write
from .errors import BadInput
from .paths import default_checkpoint_dir

FORMAT_NAME = "captalk-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "captalk.json"


class CheckpointError(BadInput):
    """A checkpoint that is missing, damaged, or does not fit what it is asked to do."""


def write_manifest(folder: str | os.PathLike, manifest: Mapping[str, Any]) -> Path:
    """Write ``captalk.json`` (format fields added); other keys as given."""
    path = Path(folder) / MANIFEST
    content = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **manifest}
    atomic_write(path, lambda name: Path(name).write_text(json.dumps(content, indent=2)))
    return path


MAX_MANIFEST_BYTES = 16 << 20  # the default model's captalk.json is 7 KB
_MANIFEST_TYPES = {"head_model": str, "channel_signature": str, "speech_encoder": str, "text_encoder": str,
                   "stats": dict, "codec": dict, "ar": dict, "training": dict}


def checkpoint_folder(checkpoint_dir: str | os.PathLike | None) -> Path:
    """``checkpoint_dir`` (None: the bundled default, `default_checkpoint_dir`) as a Path;
    `CheckpointError` when it is not a folder, saying so for the default location."""
    folder = Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir()
    if not folder.is_dir():
        where = " (the default location: no model has been installed there yet; pass --checkpoint DIR)" \
            if not checkpoint_dir else ""
        raise CheckpointError(f"no checkpoint at '{folder}'{where}")
    return folder


def read_manifest(folder: str | os.PathLike) -> dict:
    """``captalk.json`` as a dict, its format and the types of its known entries checked
    (CheckpointError names what is wrong); the configs' values are checked by their
    ``from_dict``."""
    path = Path(folder) / MANIFEST
    try:
        if not path.is_file():
            raise FileNotFoundError
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise CheckpointError(f"'{path}' is larger than {MAX_MANIFEST_BYTES >> 20} MB; it is not a CapTalk manifest")
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"'{folder}' is not a CapTalk checkpoint (no {MANIFEST})") from None
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or not UTF-8
        raise CheckpointError(f"'{path}' cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise CheckpointError(f"'{path}' is not a {FORMAT_NAME} manifest")
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"'{path}' has the format version {str(version)[:20]!r}, not a whole number >= 1")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"'{folder}' was written by a newer CapTalk (format {version})")
    for key, kind in _MANIFEST_TYPES.items():
        if key in manifest and not isinstance(manifest[key], kind):
            raise CheckpointError(f"'{path}': '{key}' must be {'text' if kind is str else 'an object'}")
    channels = manifest.get("channels", [])
    if not (isinstance(channels, list) and all(isinstance(c, str) for c in channels)):
        raise CheckpointError(f"'{path}': 'channels' must be a list of channel names")
    return manifest


def check_fits(manifest: Mapping[str, Any], channels: list[str] | tuple[str, ...], head_model: str | None = None) -> None:
    """Raise `CheckpointError` unless the checkpoint drives exactly these motion channels."""
    theirs = list(manifest.get("channels", []))
    if list(channels) == theirs:
        return
    missing = [c for c in theirs if c not in channels]
    extra = [c for c in channels if c not in theirs]
    raise CheckpointError(
        f"the model was trained for head model '{manifest.get('head_model')}' ({len(theirs)} channels) and does "
        f"not fit {'head model ' + repr(head_model) if head_model else 'this rig'} ({len(channels)} channels; "
        f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}, extra {extra[:4]}{'...' if len(extra) > 4 else ''}). "
        "Use a checkpoint trained for this head model, or the head model this checkpoint was trained for."
    )
