"""The FLAME adapter file and the per-frame mapping it drives (numpy only).

A bundled model speaks the open head's channels (52 ARKit weights + head rotation). A
FLAME rig has its own channels (expression coefficients + global/neck/jaw/eye
rotations). `model.flame_bridge` builds, from the user's own FLAME head-model file, an
*adapter*: per ARKit channel the FLAME joint rotation it makes (``rates``) and the
expression coefficients of the rest of its displacement (``psi``), plus what the
per-frame lip-gap solve needs. `map_to_rig` turns a clip in the model's channels into a
clip in the FLAME rig's channels, so the writer, NLA, Bake and the batch need nothing new.

Per frame (weights w (S,), the model's head rotation h (3,)):

    rotations   theta_j = sum_s w_s rates[s, j]          (jaw, eyes), neck = head_map @ h
    expression  psi = argmin (psi - w psi_s)^T M (psi - w psi_s) + mu |g(psi, theta) - g*|^2

where g is FLAME's posed inner-lip gap vectors (upper minus lower vertex of each lip
pair, in the head's frame) and g* the gap the open head has at that frame, carried over
as a *change* of the FLAME rig's own rest gap: an opening above rest adds, a closing
scales the rest gap down, so closed lips stay closed and never interpenetrate. The
solve is a quasi-Newton iteration with the constant Jacobian of the un-posed gaps, so
every frame shares one factorised E x E matrix (``solve_data``, ``solve_gap``).

On disk: ``<data>/adapters/<head-model id>.npz`` (``allow_pickle=False``), arrays below
plus a JSON ``meta`` (ids, channel names, residual report, status).

================ ============= ===============================================
key              shape         meaning
================ ============= ===============================================
psi              (S, E)        expression coefficients per unit weight of shape s
rates            (S, J, 3)     axis-angle per unit weight, target motion joints
head_map         (3, 3)        source axes -> target axes (similarity rotation)
solve_data       (E, E)        N^-1 M
solve_gap        (E, 3K)       mu N^-1 J0^T
gap_jacobian     (3K, E)       J0: un-posed gap per coefficient
gap_rest_target  (K, 3)        FLAME's rest gap per lip pair
gap_rest_source  (K, 3)        the open head's rest gap at the same places
gap_delta        (S, K, 3)     gap change per unit weight of shape s
gap_normal       (K, 3)        opening direction of each pair
lip_rest         (2K, 3)       rest positions of the pair vertices (upper, lower)
lip_basis        (E, 2K, 3)    their expression offsets
lip_weights      (2K, J)       their skinning weights
lip_pose         (P, 2K, 3)    their pose correctives (P = 0: none)
joints           (J, 3)        target rest joints; joint_parents (J,) int; head_joint () int
shapes           (S, V, 3)     optional: the transferred ARKit shapes (shape keys)
================ ============= ===============================================
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .errors import BadInput, MissingPart
from .head_model import pose_features, rotation_channel_names, skinning_transforms
from .motion_file import MotionClip
from .paths import shared_data_dir
from .rotations import axis_angle_to_matrix

ADAPTER_FORMAT = "captalk-flame-adapter"
ADAPTER_VERSION = 1
ADAPTERS_DIR = "adapters"
GAP_ITERATIONS = 3
_ARRAYS = ("psi", "rates", "head_map", "solve_data", "solve_gap", "gap_jacobian", "gap_rest_target",
           "gap_rest_source", "gap_delta", "gap_normal", "lip_rest", "lip_basis", "lip_weights", "lip_pose",
           "joints", "joint_parents", "head_joint")


class AdapterError(BadInput):
    """An adapter file that cannot be read, or a clip it cannot map; the message says why."""


class NoAdapter(MissingPart):
    """The rig has no adapter (never built, or its registration failed)."""


@dataclass(frozen=True, eq=False)
class FlameAdapter:
    """Everything `map_to_rig` needs (shapes in the module docstring).

    shape_names (S,): the source expression channels that drive it; unmapped: source
    channels it cannot carry (tongueOut); source_joints / target_joints: rotation channels
    copied across (source joint -> target joint, e.g. head -> neck).
    """

    target_model_id: str
    target_channels: tuple[str, ...]
    source_model_id: str
    source_channels: tuple[str, ...]
    shape_names: tuple[str, ...]
    unmapped: tuple[str, ...]
    motion_joints: tuple[str, ...]  # the target's, in channel order
    joint_map: dict  # source joint -> target joint (rotation channels)
    arrays: dict = field(repr=False)
    report: dict = field(default_factory=dict)  # channel -> residual figures
    notes: tuple[str, ...] = ()
    shapes: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        missing = [k for k in _ARRAYS if k not in self.arrays]
        if missing:
            raise AdapterError(f"the FLAME adapter lacks {', '.join(missing)}; rebuild it (Import FLAME again)")
        E, S = self.arrays["psi"].shape[1], len(self.shape_names)
        if self.arrays["psi"].shape[0] != S or self.arrays["rates"].shape[:2] != (S, len(self.motion_joints)):
            raise AdapterError("the FLAME adapter's arrays do not match its channel lists; rebuild it")
        if len(self.target_channels) != E + 3 * len(self.motion_joints):
            raise AdapterError("the FLAME adapter's channel layout does not match its expression count; rebuild it")

    @property
    def num_expressions(self) -> int:
        return int(self.arrays["psi"].shape[1])

    # --------------------------------------------------------------------- io
    def meta(self) -> dict:
        return {"format": ADAPTER_FORMAT, "format_version": ADAPTER_VERSION,
                "target_model_id": self.target_model_id, "target_channels": list(self.target_channels),
                "source_model_id": self.source_model_id, "source_channels": list(self.source_channels),
                "shape_names": list(self.shape_names), "unmapped": list(self.unmapped),
                "motion_joints": list(self.motion_joints), "joint_map": dict(self.joint_map),
                "report": self.report, "notes": list(self.notes)}

    def save(self, path: str | os.PathLike) -> Path:
        arrays = {k: np.asarray(v) for k, v in self.arrays.items()}
        if self.shapes is not None:
            arrays["shapes"] = np.asarray(self.shapes, dtype=np.float32)

        def write(temporary: str) -> None:
            with open(temporary, "wb") as handle:
                np.savez(handle, meta=np.array(json.dumps(self.meta())), **arrays)

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FlameAdapter":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            meta = json.loads(str(arrays.pop("meta")))
        except FileNotFoundError:
            raise NoAdapter(f"no FLAME adapter at {path}; import the FLAME file again to build it") from None
        except Exception as exc:  # zip, header, JSON or a missing 'meta': not our file
            raise AdapterError(f"'{path.name}' is not a readable FLAME adapter ({exc}); "
                               "import the FLAME file again to rebuild it") from None
        if meta.get("format") != ADAPTER_FORMAT or meta.get("format_version") != ADAPTER_VERSION:
            raise AdapterError(f"'{path.name}' is not a version-{ADAPTER_VERSION} FLAME adapter; rebuild it")
        shapes = arrays.pop("shapes", None)
        return cls(target_model_id=meta["target_model_id"], target_channels=tuple(meta["target_channels"]),
                   source_model_id=meta["source_model_id"], source_channels=tuple(meta["source_channels"]),
                   shape_names=tuple(meta["shape_names"]), unmapped=tuple(meta["unmapped"]),
                   motion_joints=tuple(meta["motion_joints"]), joint_map=dict(meta["joint_map"]),
                   arrays=arrays, report=meta.get("report", {}), notes=tuple(meta.get("notes", ())), shapes=shapes)


def adapters_dir() -> Path:
    return shared_data_dir() / ADAPTERS_DIR


def adapter_path(model_id: str) -> Path:
    """Where the adapter of head model ``model_id`` lives (the id carries the FLAME file's hash)."""
    if not model_id or "/" in model_id or model_id.startswith("."):
        raise AdapterError(f"not a head-model id: {model_id!r}")
    return adapters_dir() / f"{model_id}.npz"


def failure_path(model_id: str) -> Path:
    """Where a failed build leaves its reason (so the rig can say why it cannot be driven)."""
    return adapters_dir() / f"{model_id}.failed.txt"


def find_adapter(model_id: str | None) -> FlameAdapter | None:
    """The adapter for ``model_id`` if one was built; `NoAdapter` with the reason if its build failed."""
    if not model_id:
        return None
    path = adapter_path(model_id)
    if path.is_file():
        return FlameAdapter.load(path)
    failed = failure_path(model_id)
    if failed.is_file():
        raise NoAdapter(f"the bundled model cannot drive head model '{model_id}': {failed.read_text().strip()}")
    return None


# ----------------------------------------------------------------- mapping
def map_to_rig(clip: MotionClip, adapter: FlameAdapter) -> MotionClip:
    """A clip in the model's channels (T, C_source) -> the FLAME rig's (T, C_target).

    The mapped clip's meta adds ``unmapped`` (source channels with no FLAME target) and
    ``mapped_from`` (the source head-model id).
    """
    if tuple(clip.channels) != adapter.source_channels:
        raise AdapterError(f"the clip's {len(clip.channels)} channels are not the ones the FLAME adapter maps "
                           f"(those of '{adapter.source_model_id}')")
    a = adapter.arrays
    motion = np.asarray(clip.motion, dtype=np.float64)
    T = motion.shape[0]
    index = {name: i for i, name in enumerate(clip.channels)}
    weights = motion[:, [index[name] for name in adapter.shape_names]]  # (T, S)

    rotations = (weights @ a["rates"].reshape(len(adapter.shape_names), -1)).reshape(T, -1, 3)  # (T, J, 3)
    for source, target in adapter.joint_map.items():
        src = [index[c] for c in rotation_channel_names(source)]
        rotations[:, adapter.motion_joints.index(target)] += motion[:, src] @ a["head_map"].T

    psi_bar = weights @ a["psi"]  # (T, E): the fixed-matrix projection
    target_gap = _target_gaps(weights, a)  # (T, K, 3)
    base = psi_bar @ a["solve_data"].T
    jac = a["gap_jacobian"]
    psi = psi_bar
    for _ in range(GAP_ITERATIONS):
        gap = lip_gaps(psi, rotations, a)  # (T, K, 3)
        step = (target_gap - gap).reshape(T, -1) + psi @ jac.T
        psi = base + step @ a["solve_gap"].T

    out = np.concatenate([psi, rotations.reshape(T, -1)], axis=1).astype(np.float32)
    meta = {**clip.meta, "head_model": adapter.target_model_id, "mapped_from": adapter.source_model_id,
            "unmapped": list(adapter.unmapped)}
    return MotionClip(motion=out, channels=adapter.target_channels, fps=clip.fps, meta=meta)


def _target_gaps(weights: np.ndarray, a: dict) -> np.ndarray:
    """(T, S) weights -> (T, K, 3) inner-lip gaps the FLAME rig should have.

    The transferred gap is the FLAME rest gap plus the open head's change; along the
    opening direction the open head's *opening* is carried over: above its rest opening
    by adding the change, below it by scaling the FLAME rest opening, so lips the open
    head closes are closed on FLAME too, and FLAME's lips cross only where the open
    head's do (its rest lips are parted about 1.8 mm; FLAME's may touch at rest).
    """
    S, K = a["gap_delta"].shape[:2]
    delta = (weights @ a["gap_delta"].reshape(S, -1)).reshape(-1, K, 3)
    moved = a["gap_rest_target"] + delta
    n = a["gap_normal"]
    open_src = np.sum((a["gap_rest_source"] + delta) * n, axis=-1)
    rest_src = np.einsum("kc,kc->k", a["gap_rest_source"], n)
    rest_tgt = np.einsum("kc,kc->k", a["gap_rest_target"], n)
    closing = rest_tgt * open_src / np.maximum(rest_src, 1e-6)
    opening = open_src - rest_src + rest_tgt
    wanted = np.where(open_src >= rest_src, opening, closing)
    return moved + (wanted - np.sum(moved * n, axis=-1))[..., None] * n


def lip_gaps(psi: np.ndarray, rotations: np.ndarray, a: dict) -> np.ndarray:
    """FLAME's posed gaps (upper minus lower) of the lip pairs, in the head's frame.

    psi (T, E), rotations (T, J, 3) axis-angle -> (T, K, 3). Only the 2K pair vertices
    are skinned, so this costs little per frame.
    """
    # matmul, not einsum: einsum without path optimisation made this 30x slower
    E, V2 = a["lip_basis"].shape[:2]
    T = psi.shape[0]
    rest = a["lip_rest"][None] + (psi @ a["lip_basis"].reshape(E, -1)).reshape(T, V2, 3)
    R = axis_angle_to_matrix(rotations)  # (T, J, 3, 3)
    if a["lip_pose"].shape[0]:
        rest = rest + (pose_features(R) @ a["lip_pose"].reshape(len(a["lip_pose"]), -1)).reshape(T, V2, 3)
    transforms = skinning_transforms(R, a["joints"], a["joint_parents"])  # (T, J, 3, 4)
    blended = np.matmul(a["lip_weights"], transforms.reshape(T, transforms.shape[1], 12)).reshape(T, V2, 3, 4)
    posed = np.matmul(blended[..., :3], rest[..., None])[..., 0] + blended[..., 3]
    K = posed.shape[1] // 2
    gap = posed[:, :K] - posed[:, K:]
    # Back into the head's frame: both lips ride on the head joint's world rotation.
    head = _world_rotation(R, a["joint_parents"], int(a["head_joint"]))
    return np.matmul(gap, head)


def _world_rotation(R: np.ndarray, parents: np.ndarray, joint: int) -> np.ndarray:
    chain = [joint]
    while parents[chain[-1]] >= 0:
        chain.append(int(parents[chain[-1]]))
    world = np.broadcast_to(np.eye(3), R.shape[:1] + (3, 3))
    for j in reversed(chain):
        world = world @ R[:, j]
    return world


def adapter_for_request(manifest: dict, head_model: str | None, channels=None) -> FlameAdapter | None:
    """The adapter that lets a checkpoint (its ``manifest``) drive rig ``head_model``, or None
    when the checkpoint drives that head model itself or no adapter was built for it.

    Raises `NoAdapter` when the adapter's build failed (the reason is in the message) and
    `AdapterError` when the adapter is for another model's channels or another rig layout.
    """
    if not head_model or head_model == manifest.get("head_model"):
        return None
    adapter = find_adapter(head_model)
    if adapter is None:
        return None
    if list(adapter.source_channels) != list(manifest.get("channels", [])):
        raise AdapterError(f"the FLAME adapter of '{head_model}' maps the channels of '{adapter.source_model_id}', "
                           f"not those of this model ('{manifest.get('head_model')}'); import the FLAME file again")
    if channels is not None and tuple(channels) != adapter.target_channels:
        raise AdapterError(f"the rig's channels are not those the FLAME adapter of '{head_model}' writes; "
                           "import the FLAME file again")
    return adapter
