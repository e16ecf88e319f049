"""The open head in Blender: documented structure, and Blender's deformation equals the core's."""
from __future__ import annotations

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from captalk_test_utils import evaluated_vertices  # noqa: E402


@pytest.fixture
def open_head_rig(empty_scene, open_head_file):
    assert bpy.ops.captalk.add_open_head() == {"FINISHED"}
    from captalk.captalk_addon.rig_builder import find_rig
    from captalk.model.core.head_model import HeadModel

    mesh_object, armature = find_rig(bpy.context.active_object)
    return HeadModel.load(open_head_file), mesh_object, armature


def test_open_head_has_documented_structure(open_head_rig):
    head, mesh_object, armature = open_head_rig
    keys = [k.name for k in mesh_object.data.shape_keys.key_blocks]
    assert keys[0] == "Basis" and keys[1:] == list(head.expression_names)
    assert len(keys) == 53 and "jawOpen" in keys and "mouthSmileLeft" in keys
    assert len(mesh_object.data.vertices) == head.num_vertices == 4538
    assert [g.name for g in mesh_object.vertex_groups] == list(head.joint_names)
    assert [b.name for b in armature.data.bones] == ["neck", "head", "jaw", "eye.L", "eye.R"]
    assert armature.data.bones["jaw"].parent.name == "head"
    modifier = mesh_object.modifiers["CapTalk Armature"]
    assert modifier.type == "ARMATURE" and modifier.object == armature
    assert mesh_object.parent == armature
    for obj in (mesh_object, armature):
        assert obj["captalk_head_model"] == "captalk-open-head-v1"
        assert obj["captalk_channel_signature"] == head.channel_signature
    assert mesh_object.users_collection[0].name.startswith("CapTalk")


def test_shape_keys_and_head_bone_deform_like_the_core(open_head_rig):
    """Blender's shape keys + armature give the vertices HeadModel.vertices computes."""
    from captalk.model.core.rig_layout import bone_local_quaternions

    head, mesh_object, armature = open_head_rig
    motion = head.neutral_motion(1)
    rng = np.random.default_rng(0)
    for name in ("jawOpen", "mouthSmileLeft", "browInnerUp", "eyeBlinkRight"):
        motion[0, head.expression_names.index(name)] = rng.uniform(0.3, 0.9)
    motion[0, head.rotation_slice("head")] = (0.15, -0.1, 0.2)

    for k, name in enumerate(head.expression_names):
        mesh_object.data.shape_keys.key_blocks[name].value = float(motion[0, k])
    bone = armature.pose.bones["head"]
    rest = np.array(armature.data.bones["head"].matrix_local)[:3, :3]
    bone.rotation_quaternion = bone_local_quaternions(motion[:, head.rotation_slice("head")], rest)[0]

    expected = head.vertices(motion)[0]
    got = evaluated_vertices(mesh_object)
    assert np.abs(got - expected).max() < 1e-4  # metres: 0.1 mm, float32 round-off


def test_lips_part_when_jaw_opens(open_head_rig):
    head, mesh_object, _ = open_head_rig
    pairs = head.regions["lip_pairs"]
    closed = evaluated_vertices(mesh_object)
    mesh_object.data.shape_keys.key_blocks["jawOpen"].value = 1.0
    opened = evaluated_vertices(mesh_object)
    gap = lambda v: np.linalg.norm(v[pairs[:, 0]] - v[pairs[:, 1]], axis=1).mean()  # noqa: E731
    assert gap(opened) > gap(closed) + 0.01  # more than a centimetre wider


def test_add_open_head_in_edit_mode_is_refused_without_change(open_head_rig, scene_fingerprint):
    _, mesh_object, _ = open_head_rig
    bpy.context.view_layer.objects.active = mesh_object
    bpy.ops.object.mode_set(mode="EDIT")
    before = scene_fingerprint()
    assert not bpy.ops.captalk.add_open_head.poll()
    bpy.ops.object.mode_set(mode="OBJECT")
    assert scene_fingerprint() == before
