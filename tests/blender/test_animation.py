"""CapTalk's actions on the open head: keys on the right frames with the timeline's values,
NLA strips at the sound's start, artists' actions untouched, regenerate replaces only ours.

In-process and without the back end, so it runs on Blender 4.2 (classic actions) as well
as 4.5 and 5.0 (slotted actions)."""
from __future__ import annotations

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from captalk_test_utils import action_keys, add_artist_actions, describe_action  # noqa: E402

RATES = {"24": (24, 1.0), "29.97": (30, 1.001), "60": (60, 1.0)}


@pytest.fixture
def rig(empty_scene, open_head_file):
    from captalk.captalk_addon.rig_builder import find_rig
    from captalk.model.core.head_model import HeadModel

    assert bpy.ops.captalk.add_open_head() == {"FINISHED"}
    mesh_object, armature = find_rig(bpy.context.active_object)
    return HeadModel.load(open_head_file), mesh_object, armature


def motion_for(head, frames: int, seed: int) -> np.ndarray:
    """Random but plausible motion: expressions in [0, 0.8], head rotations of a few degrees."""
    rng = np.random.default_rng(seed)
    motion = head.neutral_motion(frames)
    motion[:, : head.num_expressions] = rng.uniform(0, 0.8, (frames, head.num_expressions))
    motion[:, head.rotation_slice("head")] = rng.normal(0, 0.05, (frames, 3))
    return motion


def captalk_actions(strip_name=None) -> list:
    from captalk.captalk_addon.animation import PROP_STRIP

    return sorted((a for a in bpy.data.actions if PROP_STRIP in a and strip_name in (None, a[PROP_STRIP])),
                  key=lambda a: a.name)


@pytest.mark.parametrize("rate", RATES, ids=str)
def test_keys_sit_on_the_scene_frames_with_the_timeline_values(rig, rate):
    from captalk.captalk_addon.animation import animate_rig
    from captalk.model.core.rig_layout import bone_local_quaternions
    from captalk.model.core.timeline import SceneRate, sample_motion

    head, mesh_object, armature = rig
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = RATES[rate]
    motion = motion_for(head, 60, seed=1)  # 2.4 s
    shape_action, bone_action = animate_rig(scene, mesh_object, armature, motion, head.channel_names, "line 1", 12)

    frames, values = sample_motion(motion, 12, SceneRate(*RATES[rate]))
    assert frames[0] == 12 and frames[-1] == 12 + np.floor(59 / 25 * RATES[rate][0] / RATES[rate][1])
    curves = action_keys(shape_action)
    assert len(curves) == head.num_expressions
    for k, name in enumerate(head.expression_names):
        co = curves[(f'key_blocks["{name}"].value', 0)]
        np.testing.assert_array_equal(co[:, 0], frames)
        np.testing.assert_allclose(co[:, 1], values[:, k], atol=1e-6)
    quats = bone_local_quaternions(values[:, head.rotation_slice("head")],
                                   np.array(armature.data.bones["head"].matrix_local)[:3, :3])
    bone_curves = action_keys(bone_action)
    assert sorted(bone_curves) == [('pose.bones["head"].rotation_quaternion', i) for i in range(4)]
    for i in range(4):
        np.testing.assert_allclose(bone_curves[('pose.bones["head"].rotation_quaternion', i)][:, 1], quats[:, i],
                                   atol=1e-6)

    # Blender plays them through the NLA strips: the evaluated rig shows the same values.
    key = mesh_object.data.shape_keys
    jaw = head.expression_names.index("jawOpen")
    for n in (0, len(frames) // 2, len(frames) - 1):
        scene.frame_set(int(frames[n]))
        assert key.key_blocks["jawOpen"].value == pytest.approx(values[n, jaw], abs=1e-5)
        assert np.allclose(armature.pose.bones["head"].rotation_quaternion, quats[n], atol=1e-5)
    scene.frame_set(5)  # before the sound the first pose holds (not Blender's default value)
    assert key.key_blocks["jawOpen"].value == pytest.approx(values[0, jaw], abs=1e-5)
    assert scene.render.fps == RATES[rate][0]  # never changes the scene's frame rate


def test_result_is_tagged_actions_on_nla_strips_at_the_sound_start(rig):
    from captalk.captalk_addon.animation import PROP_STRIP, PROP_TARGET, animate_rig, captalk_strips

    head, mesh_object, armature = rig
    actions = animate_rig(bpy.context.scene, mesh_object, armature, motion_for(head, 30, 2), head.channel_names,
                          "line 1", 7)
    assert [a.name for a in actions] == ["CapTalk line 1 shape keys", "CapTalk line 1 bones"]
    assert [(a[PROP_STRIP], a[PROP_TARGET]) for a in actions] == [("line 1", "shape_keys"), ("line 1", "bones")]
    for id_block, action in zip((mesh_object.data.shape_keys, armature), actions):
        (strip,) = captalk_strips(id_block, "line 1")
        assert strip.action == action and strip.frame_start == 7 and strip.extrapolation == "HOLD"
        assert id_block.animation_data.nla_tracks[0].name == "CapTalk"
        assert id_block.animation_data.action is None  # nothing became the active action
        if bpy.app.version >= (4, 4, 0):
            assert strip.action_slot == action.slots[0]


def test_artist_actions_stay_and_regenerating_replaces_only_our_result_for_that_strip(rig):
    from captalk.captalk_addon.animation import PROP_STRIP, animate_rig, captalk_strips

    head, mesh_object, armature = rig
    scene = bpy.context.scene
    key = mesh_object.data.shape_keys
    artist_key_action, artist_bone_action = add_artist_actions(mesh_object, armature)
    before = describe_action(artist_key_action) + describe_action(artist_bone_action)

    animate_rig(scene, mesh_object, armature, motion_for(head, 30, 3), head.channel_names, "line 1", 1)
    other = animate_rig(scene, mesh_object, armature, motion_for(head, 30, 4), head.channel_names, "line 2", 100)
    other_content = describe_action(other[0]) + describe_action(other[1])
    new_motion = motion_for(head, 40, 5)
    again = animate_rig(scene, mesh_object, armature, new_motion, head.channel_names, "line 1", 3)

    assert [a.name for a in captalk_actions("line 1")] == ["CapTalk line 1 bones", "CapTalk line 1 shape keys"]
    assert sorted(captalk_actions("line 1"), key=lambda a: a.name) == sorted(again, key=lambda a: a.name)
    assert describe_action(other[0]) + describe_action(other[1]) == other_content  # the other strip's result stays
    for id_block in (key, armature):
        assert [s.frame_start for s in captalk_strips(id_block, "line 1")] == [3]
        (track,) = id_block.animation_data.nla_tracks  # both lines share CapTalk's track, in time order
        assert [(s.action[PROP_STRIP], s.extrapolation) for s in track.strips] == [
            ("line 1", "HOLD"), ("line 2", "HOLD_FORWARD")]
    jaw = head.expression_names.index("jawOpen")
    assert action_keys(again[0])[('key_blocks["jawOpen"].value', 0)][0, 1] == pytest.approx(new_motion[0, jaw])

    assert key.animation_data.action == artist_key_action and armature.animation_data.action == artist_bone_action
    assert describe_action(artist_key_action) + describe_action(artist_bone_action) == before
    scene.frame_set(40)  # the artist's active action still plays on top
    assert key.key_blocks["browInnerUp"].value == pytest.approx(0.9)


def test_motion_for_another_rig_is_refused_and_changes_nothing(rig, scene_fingerprint):
    from captalk.captalk_addon.animation import AnimationError, animate_rig

    head, mesh_object, armature = rig
    before = scene_fingerprint()
    channels = ["notAShapeKey", *head.channel_names[1:]]
    with pytest.raises(AnimationError, match="notAShapeKey"):
        animate_rig(bpy.context.scene, mesh_object, armature, motion_for(head, 10, 6), channels, "line 1", 1)
    assert scene_fingerprint() == before
    assert mesh_object.data.shape_keys.animation_data is None and armature.animation_data is None


def test_an_overlapping_result_plays_over_the_one_below_only_where_it_is(rig):
    from captalk.captalk_addon.animation import animate_rig

    head, mesh_object, armature = rig
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 25, 1.0
    jaw = head.expression_names.index("jawOpen")
    long_line, short_line = head.neutral_motion(100), head.neutral_motion(20)
    long_line[:, jaw], short_line[:, jaw] = 0.2, 0.7
    animate_rig(scene, mesh_object, armature, long_line, head.channel_names, "long", 1)
    animate_rig(scene, mesh_object, armature, short_line, head.channel_names, "short", 40)  # overlaps "long"
    tracks = mesh_object.data.shape_keys.animation_data.nla_tracks
    assert [[s.action.name for s in t.strips] for t in tracks] == [["CapTalk long shape keys"],
                                                                   ["CapTalk short shape keys"]]
    key = mesh_object.data.shape_keys.key_blocks["jawOpen"]
    for frame, value in ((10, 0.2), (45, 0.7), (80, 0.2)):
        scene.frame_set(frame)
        assert key.value == pytest.approx(value, abs=1e-6), f"frame {frame}"
