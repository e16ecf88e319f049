"""Where the armature's bones go, and how motion rotations become bone rotations.

Pure numpy: the Blender layer only copies these numbers into edit bones and F-curves.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .head_model import HeadModel
from .rotations import axis_angle_to_matrix, matrix_to_quaternion

# Direction each joint's bone points at rest (head-model axes: Z up, face along -Y),
# and its length as a share of the head's height. Only the look of the bones depends
# on these: skinning pivots on the joint positions.
_BONE_DIRECTIONS = {
    "neck": (0.0, 0.0, 1.0),
    "head": (0.0, 0.0, 1.0),
    "jaw": (0.0, -0.8, -0.6),
    "eye_left": (0.0, -1.0, 0.0),
    "eye_right": (0.0, -1.0, 0.0),
}
_BONE_LENGTHS = {"neck": 0.25, "head": 0.45, "jaw": 0.3, "eye_left": 0.06, "eye_right": 0.06}


@dataclass(frozen=True)
class BoneLayout:
    """Rest bones of a head model's armature.

    names (J,), parents (J,) int (-1 root), heads (J, 3) and tails (J, 3) in metres.
    """

    names: tuple[str, ...]
    parents: tuple[int, ...]
    heads: np.ndarray
    tails: np.ndarray


def bone_layout(head: HeadModel) -> BoneLayout:
    """Bones on the head model's joints, pointing along their role's direction."""
    role_of = {joint: role for role, joint in head.joint_roles.items()}
    height = float(np.ptp(head.template[:, 2])) or 0.2
    tails = []
    for name, position in zip(head.joint_names, head.joints):
        role = role_of.get(name, "head")
        direction = np.asarray(_BONE_DIRECTIONS[role])
        tails.append(position + direction / np.linalg.norm(direction) * _BONE_LENGTHS[role] * height)
    return BoneLayout(
        names=tuple(head.joint_names),
        parents=tuple(int(p) for p in head.joint_parents),
        heads=head.joints.astype(np.float64),
        tails=np.asarray(tails),
    )


def bone_local_quaternions(rotvecs: np.ndarray, bone_rest_matrix: np.ndarray) -> np.ndarray:
    """Motion rotations -> Blender pose-bone quaternions.

    rotvecs (T, 3): a joint's axis-angle rotations in head-model axes (see head_model).
    bone_rest_matrix (3, 3): the rotation part of the bone's ``matrix_local`` (armature
    space, armature object unrotated). A pose bone's rotation acts in the bone's own
    rest frame, so the rotation is conjugated into it: q = B^T R B.
    Returns (T, 4) quaternions (w, x, y, z), sign-continuous over time so that
    F-curve interpolation never takes the long way round.
    """
    rest = np.asarray(bone_rest_matrix, dtype=np.float64)
    local = rest.T @ axis_angle_to_matrix(rotvecs) @ rest
    quats = matrix_to_quaternion(local)
    flips = np.cumsum(np.r_[0, (np.einsum("ti,ti->t", quats[1:], quats[:-1]) < 0)]) % 2
    return np.where(flips[:, None] == 1, -quats, quats)
