"""The head-model format: evaluation against hand-computed cases, file round trips, bad files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from model.core.head_model import HeadModel, HeadModelError
from model.core.rig_layout import bone_local_quaternions
from model.core.rotations import axis_angle_to_matrix


def tiny_head(**changes) -> HeadModel:
    """Three vertices on two joints: root at the origin, 'jaw' at (0, 0, 1).

    v0 follows the root, v1 the jaw, v2 half and half; one expression channel lifts v1.
    """
    fields = dict(
        model_id="tiny",
        name="tiny",
        licence="CC0-1.0",
        provenance="test",
        template=np.array([[0, 0, 0], [0, 1, 1], [0, 1, 1]], dtype=np.float32),
        faces=np.array([[0, 1, 2]]),
        expression_names=("lift",),
        expression_basis=np.array([[[0, 0, 0], [0, 0, 0.1], [0, 0, 0]]], dtype=np.float32),
        joint_names=("root", "jaw"),
        joint_parents=np.array([-1, 0]),
        joints=np.array([[0, 0, 0], [0, 0, 1]], dtype=np.float32),
        lbs_weights=np.array([[1, 0], [0, 1], [0.5, 0.5]], dtype=np.float32),
        motion_joints=("root", "jaw"),
        joint_roles={"jaw": "jaw"},
        regions={"lips": np.array([1, 2]), "upper_face": np.array([0]), "lip_pairs": np.array([[0, 1]]),
                 "eyes": np.array([], dtype=np.int64)},
    )
    fields.update(changes)
    return HeadModel(**fields)


def test_channel_layout_is_expressions_then_joint_rotations():
    head = tiny_head()
    assert head.channel_names == ["lift", "root.rx", "root.ry", "root.rz", "jaw.rx", "jaw.ry", "jaw.rz"]
    assert head.rotation_slice("jaw") == slice(4, 7)


def test_skinning_matches_hand_computation():
    head = tiny_head()
    motion = head.neutral_motion(3)
    motion[1, head.rotation_slice("jaw")] = (np.pi / 2, 0, 0)  # jaw: 90 degrees about +X
    motion[2, head.rotation_slice("jaw")] = (np.pi / 2, 0, 0)
    motion[2, 0] = 1.0  # and the expression lifts v1 by 0.1 before skinning
    verts = head.vertices(motion)
    np.testing.assert_allclose(verts[0], head.template, atol=1e-6)
    # v1 sits at (0, 1, 0) from the jaw; +90 deg about X takes it to (0, 0, 1) -> (0, 0, 2).
    np.testing.assert_allclose(verts[1, 1], [0, 0, 2], atol=1e-6)
    # v2 blends the unmoved (0, 1, 1) and the jaw's (0, 0, 2) half and half.
    np.testing.assert_allclose(verts[1, 2], [0, 0.5, 1.5], atol=1e-6)
    # lifted v1 (0, 1, 0.1) from the jaw -> (0, -0.1, 1) -> world (0, -0.1, 2).
    np.testing.assert_allclose(verts[2, 1], [0, -0.1, 2], atol=1e-6)
    np.testing.assert_allclose(verts[:, 0], 0, atol=1e-6)  # the root vertex never moves


def test_parent_rotation_carries_the_child():
    head = tiny_head()
    motion = head.neutral_motion(1)
    motion[0, head.rotation_slice("root")] = (0, 0, np.pi / 2)  # root: 90 deg about +Z
    motion[0, head.rotation_slice("jaw")] = (np.pi / 2, 0, 0)
    verts = head.vertices(motion)[0]
    # jaw result (0, 0, 2) for v1 is on the Z axis, so the root's Z turn leaves it there;
    # v2's (0, 0.5, 1.5) turns to (-0.5, 0, 1.5).
    np.testing.assert_allclose(verts[1], [0, 0, 2], atol=1e-6)
    np.testing.assert_allclose(verts[2], [-0.5, 0, 1.5], atol=1e-6)


def test_pose_correctives_follow_the_documented_features():
    basis = np.zeros((9, 3, 3), dtype=np.float32)
    basis[0, 0] = (0, 0, 1)  # feature 0 = R_jaw[0,0] - 1 moves v0 along +Z
    head = tiny_head(pose_basis=basis)
    motion = head.neutral_motion(1)
    motion[0, head.rotation_slice("jaw")] = (0, np.pi / 2, 0)  # R[0,0] = cos 90 = 0
    np.testing.assert_allclose(head.vertices(motion)[0, 0], [0, 0, -1], atol=1e-6)


def test_open_head_mouth_channel_opens_the_lips(open_head_file):
    head = HeadModel.load(open_head_file)
    assert head.num_channels == 52 + 3
    assert "CC0" in head.licence and head.expression_range == (0.0, 1.0)
    motion = head.neutral_motion(2)
    motion[1, head.expression_names.index("jawOpen")] = 1.0
    verts = head.vertices(motion)
    pairs = head.regions["lip_pairs"]
    opening = np.linalg.norm(verts[:, pairs[:, 0]] - verts[:, pairs[:, 1]], axis=-1).mean(axis=1)
    assert opening[0] < 0.004 and opening[1] > 0.015  # closed at rest, > 1.5 cm open
    lips_moved = np.linalg.norm(verts[1] - verts[0], axis=1)[head.regions["lips"]].max()
    assert lips_moved > 0.02
    upper_moved = np.linalg.norm(verts[1] - verts[0], axis=1)[head.regions["upper_face"]].max()
    assert upper_moved < lips_moved / 4


def test_open_head_rotation_turns_the_head_about_its_joint(open_head_file):
    head = HeadModel.load(open_head_file)
    motion = head.neutral_motion(1)
    motion[0, head.rotation_slice("head")] = (0, 0, 0.3)  # turn 0.3 rad about Z
    verts = head.vertices(motion)[0]
    pivot = head.joints[head.joint_names.index("head")]
    rigid = head.lbs_weights[:, head.joint_names.index("head")] > 0.999
    expected = (head.template[rigid] - pivot) @ axis_angle_to_matrix(np.array([0, 0, 0.3])).T + pivot
    np.testing.assert_allclose(verts[rigid], expected, atol=5e-5)  # weights within 1e-3 of 1
    neck_only = head.lbs_weights[:, head.joint_names.index("neck")] > 0.999
    np.testing.assert_allclose(verts[neck_only], head.template[neck_only], atol=1e-6)


def test_bone_quaternions_equal_motion_rotation_in_bone_frame():
    rest = axis_angle_to_matrix(np.array([0.3, -1.2, 0.5]))  # some bone's rest orientation
    rotvecs = np.array([[0.2, 0.1, -0.4], [0.0, 0.0, 0.0]])
    quats = bone_local_quaternions(rotvecs, rest)
    w, x, y, z = quats[0]
    bone_local = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])
    # Posing in the bone frame and returning to armature space gives the motion's rotation.
    np.testing.assert_allclose(rest @ bone_local @ rest.T, axis_angle_to_matrix(rotvecs[0]), atol=1e-9)
    np.testing.assert_allclose(quats[1], [1, 0, 0, 0], atol=1e-12)


def test_save_load_round_trip(tmp_path):
    head = tiny_head(shape_names=("s0",), shape_basis=np.ones((1, 3, 3), dtype=np.float32))
    loaded = HeadModel.load(head.save(tmp_path / "tiny.npz"))
    assert loaded.metadata() == head.metadata()
    motion = np.random.default_rng(1).normal(size=(4, head.num_channels)).astype(np.float32)
    np.testing.assert_allclose(loaded.vertices(motion), head.vertices(motion), atol=1e-6)
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(expression_basis=np.zeros((2, 3, 3), dtype=np.float32)), "expression_basis"),
        (dict(lbs_weights=np.ones((3, 2), dtype=np.float32)), "sum to 1"),
        (dict(faces=np.array([[0, 1, 7]])), "faces"),
        (dict(joint_parents=np.array([0, -1])), "joint_parents"),
        (dict(motion_joints=("root", "nose")), "unknown joints"),
        (dict(template=np.full((3, 3), np.nan, dtype=np.float32)), "NaN"),
    ],
)
def test_inconsistent_head_models_are_refused(change, message):
    with pytest.raises(HeadModelError, match=message):
        tiny_head(**change)


def test_bad_motion_is_refused():
    head = tiny_head()
    with pytest.raises(HeadModelError, match=r"\(frames, 7\)"):
        head.vertices(np.zeros((2, 5)))
    motion = head.neutral_motion(2)
    motion[1, 0] = np.nan
    with pytest.raises(HeadModelError, match="NaN"):
        head.vertices(motion)


def test_bad_files_get_clear_errors(tmp_path):
    good = tiny_head().save(tmp_path / "good.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(HeadModelError, match="not a readable CapTalk head-model file"):
        HeadModel.load(truncated)
    with pytest.raises(HeadModelError, match="not found"):
        HeadModel.load(tmp_path / "missing.npz")
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(HeadModelError, match="no CapTalk metadata"):
        HeadModel.load(other)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, meta=np.array([{"format": "captalk-head"}], dtype=object))
    with pytest.raises(HeadModelError, match="not a readable"):
        HeadModel.load(pickled)  # object arrays need pickle: never loaded
    wrong_version = tmp_path / "v9.npz"
    with np.load(good) as data:
        arrays = dict(data)
    meta = json.loads(str(arrays["meta"]))
    meta["format_version"] = 9
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(wrong_version, **arrays)
    with pytest.raises(HeadModelError, match="v9"):
        HeadModel.load(wrong_version)
