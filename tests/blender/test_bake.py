"""Bake to shape keys: CapTalk's NLA results become plain keys on another character (ARKit
names in any case, a mapping table, bones by name) that Blender plays exactly as it plays
the rig; strengths, key reduction, re-baking and the artist's own action; bad input
changes nothing.

CapTalk's results are written with `animate_rig` (no back end), so this runs on Blender
4.2 (classic actions) as well as 4.5 and 5.0 (slotted actions)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from captalk_test_utils import action_keys, describe_action  # noqa: E402

SPHERE_KEYS = ("JawOpen", "eyeblinkleft", "BROWINNERUP", "Mouth_Open", "Hat")
# sphere key -> the rig's shape key it receives (Mouth_Open through the mapping table)
RECEIVES = {"JawOpen": "jawOpen", "eyeblinkleft": "eyeBlinkLeft", "BROWINNERUP": "browInnerUp",
            "Mouth_Open": "mouthSmileLeft"}
MAPPING = json.dumps({"mouthSmileLeft": "Mouth_Open"})


@pytest.fixture
def rig(empty_scene, open_head_file):
    from captalk.captalk_addon.rig_builder import find_rig
    from captalk.model.core.head_model import HeadModel

    assert bpy.ops.captalk.add_open_head() == {"FINISHED"}
    mesh_object, armature = find_rig(bpy.context.active_object)
    return HeadModel.load(open_head_file), mesh_object, armature


@pytest.fixture
def results(rig):
    """Two generated lines on the rig, with a gap between them: frames 10-105 and 150-197 at 24 fps."""
    from captalk.captalk_addon.animation import animate_rig

    head, mesh_object, armature = rig
    for name, frames, start, seed in (("line 1", 100, 10, 1), ("line 2", 50, 150, 2)):
        animate_rig(bpy.context.scene, mesh_object, armature, smooth_motion(head, frames, seed), head.channel_names,
                    name, start)
    return rig


def smooth_motion(head, frames: int, seed: int) -> np.ndarray:
    """Speech-like motion: each expression a slow sine in [0.05, 0.75], the head turning a few degrees."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / 25
    motion = head.neutral_motion(frames)
    count = head.num_expressions
    motion[:, :count] = 0.4 + 0.35 * np.sin(2 * np.pi * rng.uniform(0.2, 1.5, count) * t + rng.uniform(0, 6, count))
    motion[:, head.rotation_slice("head")] = 0.1 * np.sin(2 * np.pi * 0.4 * t + rng.uniform(0, 6, 3))
    return motion


def character(name: str = "Character", keys=SPHERE_KEYS):
    """Another character's face: a UV sphere (other topology) with a few shape keys at 0."""
    bpy.ops.mesh.primitive_uv_sphere_add(segments=16, ring_count=8)
    sphere = bpy.context.active_object
    sphere.name = name
    if keys:
        sphere.shape_key_add(name="Basis", from_mix=False)
        for key_name in keys:
            sphere.shape_key_add(name=key_name, from_mix=False).value = 0.0
    return sphere


def character_armature(rotation_mode: str = "QUATERNION"):
    """An armature whose 'Head' bone (other name case, other rest orientation) has a parent
    'Root'; the object is turned a quarter round, as a character placed in a scene."""
    data = bpy.data.armatures.new("Character rig")
    armature = bpy.data.objects.new("Character rig", data)
    bpy.context.scene.collection.objects.link(armature)
    armature.rotation_euler = (0.0, 0.0, math.pi / 2)
    previous = bpy.context.view_layer.objects.active
    bpy.context.view_layer.objects.active = armature
    bpy.ops.object.mode_set(mode="EDIT")
    root = data.edit_bones.new("Root")
    root.head, root.tail = (0.0, 0.0, 0.0), (0.0, 0.0, 1.0)
    head = data.edit_bones.new("Head")
    head.head, head.tail, head.roll, head.parent = (0.0, 0.0, 1.5), (0.1, -0.3, 1.8), 0.7, root
    bpy.ops.object.mode_set(mode="OBJECT")
    bpy.context.view_layer.objects.active = previous
    armature.pose.bones["Head"].rotation_mode = rotation_mode
    return armature


def bake(mesh_object, armature, target_mesh, target_armature=None, replace=False, **config):
    from captalk.captalk_addon.bake import bake as bake_results
    from captalk.model.core.retarget import BakeConfig

    return bake_results(mesh_object, armature, target_mesh, target_armature, BakeConfig(**config), replace)


def key_values(mesh_object, names) -> np.ndarray:
    blocks = mesh_object.data.shape_keys.key_blocks
    return np.array([blocks[name].value for name in names])


def bone_in_armature(armature, bone: str) -> np.ndarray:
    """(3, 3) rotation the evaluated pose gives ``bone`` in its armature's space, relative to rest."""
    evaluated = armature.evaluated_get(bpy.context.evaluated_depsgraph_get())
    pose_bone = evaluated.pose.bones[bone]
    return np.array(pose_bone.matrix.to_3x3().normalized()) @ np.array(pose_bone.bone.matrix_local.to_3x3()).T


def rotation_angle(matrix: np.ndarray) -> float:
    return math.acos(np.clip((np.trace(matrix) - 1) / 2, -1, 1))


def captalk_results() -> list:
    from captalk.captalk_addon.animation import is_captalk_result

    return [describe_action(a) for a in sorted(bpy.data.actions, key=lambda a: a.name) if is_captalk_result(a)]


def bake_actions() -> list[str]:
    from captalk.captalk_addon.bake import PROP_BAKE

    return sorted(a.name for a in bpy.data.actions if PROP_BAKE in a)


def test_an_arkit_named_character_of_another_topology_plays_what_the_rig_plays(results):
    head, mesh_object, armature = results
    sphere = character()
    bpy.data.texts.new("face map").write(MAPPING)  # the mapping table as a text in the .blend
    assert bpy.ops.captalk.bake(source_rig=mesh_object.name, target_mesh=sphere.name, name_map="face map") \
        == {"FINISHED"}

    key = sphere.data.shape_keys
    action = key.animation_data.action
    assert action.name == "Character CapTalk bake" and bake_actions() == ["Character CapTalk bake"]
    keys = action_keys(action)
    assert sorted(keys) == sorted((f'key_blocks["{name}"].value', 0) for name in RECEIVES)  # "Hat" left alone
    first, last = 10, 150 + math.floor(49 / 25 * 24)
    for co in keys.values():  # a key on every frame the results span, gap included
        np.testing.assert_array_equal(co[:, 0], np.arange(first, last + 1))

    # Blender plays the bake as it plays CapTalk's NLA strips, before, between and after them.
    for frame in (1, 10, 11, 57, 105, 106, 130, 150, 151, 190, last, last + 20):
        bpy.context.scene.frame_set(frame)
        np.testing.assert_allclose(key_values(sphere, RECEIVES), key_values(mesh_object, RECEIVES.values()),
                                   atol=1e-6, err_msg=f"frame {frame}")
        assert key.key_blocks["Hat"].value == 0.0


def test_overlapping_results_bake_as_the_nla_plays_them_upper_track_winning(results):
    from captalk.captalk_addon.animation import animate_rig

    head, mesh_object, armature = results
    # Overlaps line 1, so it goes on a second CapTalk track above it.
    animate_rig(bpy.context.scene, mesh_object, armature, smooth_motion(head, 40, 3), head.channel_names, "line 3", 60)
    assert len(mesh_object.data.shape_keys.animation_data.nla_tracks) == 2
    sphere = character()
    bake(mesh_object, armature, sphere, mapping=json.loads(MAPPING))
    for frame in range(1, 220, 3):
        bpy.context.scene.frame_set(frame)
        np.testing.assert_allclose(key_values(sphere, RECEIVES), key_values(mesh_object, RECEIVES.values()),
                                   atol=1e-6, err_msg=f"frame {frame}")


def test_unmapped_channels_and_bones_are_listed(results):
    from captalk.captalk_addon.animation import captalk_strips

    head, mesh_object, armature = results
    sphere = character(keys=("jawOpen", "EYEBLINKLEFT"))
    bones = character_armature()
    bones.pose.bones["Head"].name = "Skull"  # no bone named like CapTalk's 'head'
    (edited,) = captalk_strips(mesh_object.data.shape_keys, "line 2")
    edited.blend_in = 3.0  # an artist's NLA edit the bake does not reproduce: said so
    report = bake(mesh_object, armature, sphere, bones, mapping={"tongueOut": "Tongue"})

    expected = [name for name in head.expression_names if name not in ("jawOpen", "eyeBlinkLeft")] + ["head"]
    assert list(report.unmapped) == expected and report.missing_targets == ("Tongue",)
    warnings = " ".join(report.warnings())
    assert "browDownLeft" in warnings and f"{len(expected) - 8} more" in warnings and "Tongue" in warnings
    assert report.approximated == ("'CapTalk line 2 shape keys'",) and "'CapTalk line 2 shape keys'" in warnings
    assert [a.name for a in report.actions] == ["Character CapTalk bake"]  # no bone bake without a match
    assert bones.animation_data is None


@pytest.mark.parametrize("rotation_mode", ["QUATERNION", "ZXY", "AXIS_ANGLE"])
def test_bones_map_by_name_and_turn_the_same_way_in_their_armature(results, rotation_mode):
    head, mesh_object, armature = results
    sphere, bones = character(), character_armature(rotation_mode)
    report = bake(mesh_object, armature, sphere, bones)
    assert "head" not in report.unmapped and bones.animation_data.action.name == "Character rig CapTalk bake"
    paths = {path for path, _ in action_keys(bones.animation_data.action)}
    assert paths == {'pose.bones["Head"].' + {"QUATERNION": "rotation_quaternion", "ZXY": "rotation_euler",
                                             "AXIS_ANGLE": "rotation_axis_angle"}[rotation_mode]}
    for frame in (1, 30, 77, 120, 160, 196):
        bpy.context.scene.frame_set(frame)
        np.testing.assert_allclose(bone_in_armature(bones, "Head"), bone_in_armature(armature, "head"), atol=2e-5,
                                   err_msg=f"frame {frame}")


def test_region_strengths_scale_shape_keys_and_the_head_rotation_angle(results):
    head, mesh_object, armature = results
    sphere, bones = character(), character_armature()
    bake(mesh_object, armature, sphere, bones, mouth=0.5, brows=2.0, eyes=0.0, head=0.25, mapping=json.loads(MAPPING))
    factors = {"JawOpen": 0.5, "Mouth_Open": 0.5, "BROWINNERUP": 2.0, "eyeblinkleft": 0.0}
    for frame in (12, 60, 170):
        bpy.context.scene.frame_set(frame)
        expected = np.minimum(key_values(mesh_object, RECEIVES.values()) * np.array([factors[k] for k in RECEIVES]),
                              1.0)  # within the slider range, as Blender plays it
        np.testing.assert_allclose(key_values(sphere, RECEIVES), expected, atol=1e-6)
        source, target = bone_in_armature(armature, "head"), bone_in_armature(bones, "Head")
        assert rotation_angle(source) > 0.01
        assert rotation_angle(target) == pytest.approx(0.25 * rotation_angle(source), abs=1e-5)


def test_key_reduction_stays_within_tolerance_with_fewer_keys(results):
    head, mesh_object, armature = results
    full_sphere, sphere, bones = character("Full"), character(), character_armature()
    full = bake(mesh_object, armature, full_sphere, mapping=json.loads(MAPPING))
    reduced = bake(mesh_object, armature, sphere, bones, mapping=json.loads(MAPPING), reduce=True, tolerance=0.01,
                   rotation_tolerance=math.radians(0.5))

    full_keys = sum(len(co) for co in action_keys(full.actions[0]).values())
    kept_keys = sum(len(co) for co in action_keys(reduced.actions[0]).values())
    assert kept_keys < full_keys / 2 and reduced.keys_written < reduced.keys_sampled
    for co in action_keys(reduced.actions[0]).values():
        assert co[0, 0] == 10 and co[-1, 0] == 197  # first and last keys stay
    bone_keys = action_keys(reduced.actions[1])
    assert len(bone_keys[('pose.bones["Head"].rotation_quaternion', 0)]) < (197 - 10 + 1) / 2
    worst_value, worst_angle = 0.0, 0.0
    for frame in range(5, 205):
        bpy.context.scene.frame_set(frame)
        worst_value = max(worst_value, np.abs(key_values(sphere, RECEIVES) - key_values(mesh_object, RECEIVES.values()))
                          .max())
        difference = bone_in_armature(bones, "Head") @ bone_in_armature(armature, "head").T
        worst_angle = max(worst_angle, rotation_angle(difference))
    assert 0 < worst_value <= 0.01 + 1e-6
    assert worst_angle <= math.radians(0.5) + 1e-4


def test_rebake_replaces_only_the_previous_bake_and_never_touches_the_artists_action(results):
    head, mesh_object, armature = results
    other, sphere = character("Other"), character()
    key = sphere.data.shape_keys
    for frame, value in ((1, 0.2), (40, 0.9)):  # the artist's own keys on the character
        key.key_blocks["Hat"].value = value
        key.key_blocks["Hat"].keyframe_insert("value", frame=frame)
    artist_action = key.animation_data.action
    artist_keys = describe_action(artist_action)
    bake(mesh_object, armature, other)
    other_bake = describe_action(other.data.shape_keys.animation_data.action)
    generated = captalk_results()

    first = bake(mesh_object, armature, sphere)
    again = bake(mesh_object, armature, sphere, mouth=0.5)
    # The artist's action stays active and unchanged; the bake plays under it from an NLA track.
    assert key.animation_data.action == artist_action and describe_action(artist_action) == artist_keys
    (track,) = key.animation_data.nla_tracks
    assert track.name == "CapTalk bake" and [s.action for s in track.strips] == list(again.actions)
    assert "NLA track 'CapTalk bake'" in again.summary() and "active action" in first.summary()
    assert bake_actions() == ["Character CapTalk bake", "Other CapTalk bake"]
    bpy.context.scene.frame_set(40)
    assert key.key_blocks["Hat"].value == pytest.approx(0.9)
    assert key.key_blocks["JawOpen"].value == pytest.approx(0.5 * mesh_object.data.shape_keys.key_blocks["jawOpen"]
                                                            .value, abs=1e-6)

    # Asked explicitly, the bake becomes the active action and the artist's action is stashed, untouched.
    replaced = bake(mesh_object, armature, sphere, replace=True)
    bake(mesh_object, armature, sphere, replace=True)
    assert key.animation_data.action.name == "Character CapTalk bake" and key.animation_data.action != artist_action
    assert "stashed" in replaced.summary()
    (stash,) = key.animation_data.nla_tracks
    assert stash.name == "[Action Stash]" and stash.mute and stash.strips[0].action == artist_action
    assert describe_action(artist_action) == artist_keys
    assert bake_actions() == ["Character CapTalk bake", "Other CapTalk bake"]
    assert describe_action(other.data.shape_keys.animation_data.action) == other_bake
    assert captalk_results() == generated  # CapTalk's own results are only read


def test_the_rig_itself_is_baked_by_default_and_plays_the_same(results):
    head, mesh_object, armature = results
    bpy.context.view_layer.objects.active = mesh_object
    names = head.expression_names
    before = []
    for frame in (3, 50, 120, 180):
        bpy.context.scene.frame_set(frame)
        before.append((key_values(mesh_object, names), bone_in_armature(armature, "head")))
    assert bpy.ops.captalk.bake() == {"FINISHED"}

    key = mesh_object.data.shape_keys
    assert key.animation_data.action.name == f"{mesh_object.name} CapTalk bake"
    assert armature.animation_data.action.name == f"{armature.name} CapTalk bake"
    assert [t.name for t in key.animation_data.nla_tracks] == ["CapTalk"]  # the results stay as they were
    for frame, (values, rotation) in zip((3, 50, 120, 180), before):
        bpy.context.scene.frame_set(frame)
        np.testing.assert_allclose(key_values(mesh_object, names), values, atol=1e-6)
        np.testing.assert_allclose(bone_in_armature(armature, "head"), rotation, atol=1e-6)


def test_bad_input_is_refused_with_a_reason_and_changes_nothing(rig, scene_fingerprint):
    from captalk.captalk_addon.animation import animate_rig
    from captalk.captalk_addon.bake import BakeError

    head, mesh_object, armature = rig
    sphere, cube = character(), character("Cube", keys=())
    strangers = character("Strangers", keys=("Foo", "Bar"))
    bpy.data.texts.new("bad map").write("{not json")
    targets = (sphere, cube, strangers)

    def unchanged(before):
        assert scene_fingerprint() == before
        assert all(t.animation_data is None and (t.data.shape_keys is None or t.data.shape_keys.animation_data is None)
                   for t in targets)

    before = scene_fingerprint()
    with pytest.raises(BakeError, match="no CapTalk results"):
        bake(mesh_object, armature, sphere)
    with pytest.raises(RuntimeError, match="No CapTalk results in this scene"):  # bpy.ops raises a reported error
        bpy.ops.captalk.bake(target_mesh=sphere.name)
    unchanged(before)

    animate_rig(bpy.context.scene, mesh_object, armature, smooth_motion(head, 30, 4), head.channel_names, "line", 1)
    before = scene_fingerprint()
    with pytest.raises(BakeError, match="'Cube' has no shape keys"):
        bake(mesh_object, armature, cube)
    with pytest.raises(BakeError, match="Nothing on 'Strangers' matches"):
        bake(mesh_object, armature, strangers)
    with pytest.raises(BakeError, match="Choose a target"):
        bake(mesh_object, armature, None)
    for arguments, reason in ((dict(target_mesh="Cube"), "no shape keys"),
                              (dict(target_mesh="Strangers"), "Nothing on 'Strangers'"),
                              (dict(target_mesh="Nobody"), "no object named 'Nobody'"),
                              (dict(name_map="bad map"), "not valid JSON"),
                              (dict(name_map="no such text"), "no text 'no such text'"),
                              (dict(name_map='{"jawOpen": "A", "mouthClose": "A"}'),
                               "both 'jawOpen' and 'mouthClose'")):
        with pytest.raises(RuntimeError, match=reason):
            bpy.ops.captalk.bake(**{"source_rig": mesh_object.name, "target_mesh": sphere.name, **arguments})
    unchanged(before)
