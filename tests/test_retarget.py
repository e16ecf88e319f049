"""The bake's numpy core: NLA strips flattened as Blender plays them, names mapped onto any
character, region strengths, rotations moved between bone rests, keyframe reduction."""
from __future__ import annotations

import math

import numpy as np
import pytest

from model.core.retarget import (BakeConfig, ResultStrip, RetargetError, Timeline, bake_bones, bake_shape_keys,
                            bone_region, channel_region, flatten_strips, match_names, parse_mapping,
                            reduce_keys, reduce_rotation_keys, retarget_rotations, scale_rotations)
from model.core.rotations import axis_angle_to_matrix, matrix_to_quaternion, quaternion_to_axis_angle


def strip(start: float, values, track: int = 0, extrapolation: str = "HOLD", channels=("a",), **timing):
    """A 1:1 strip whose action keys sit on frames start, start + 1, ... with ``values`` (K,) or (K, C)."""
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    frames = start + np.arange(len(values), dtype=np.float64)
    return ResultStrip(track=track, frame_start=start, frame_end=frames[-1], action_start=start,
                       action_end=frames[-1], channels=channels, frames=frames, values=values,
                       extrapolation=extrapolation, **timing)


def quaternion(rotvec) -> np.ndarray:
    return matrix_to_quaternion(axis_angle_to_matrix(np.asarray(rotvec, dtype=np.float64)))


# ----------------------------------------------------------------------------- names


def test_names_match_exactly_then_ignoring_case_then_by_the_mapping_table():
    match = match_names(["jawOpen", "eyeBlinkLeft", "mouthSmileLeft", "browInnerUp", "tongueOut"],
                        ["Basis?", "JawOpen", "eyeblinkleft", "Mouth_Open", "browInnerUp"],
                        {"MOUTHSMILELEFT": "Mouth_Open"})
    assert match.pairs == (("jawOpen", "JawOpen"), ("eyeBlinkLeft", "eyeblinkleft"),
                           ("mouthSmileLeft", "Mouth_Open"), ("browInnerUp", "browInnerUp"))
    assert match.unmapped == ("tongueOut",)


def test_the_mapping_claims_its_target_excludes_and_reports_names_the_target_lacks():
    match = match_names(["jawOpen", "Mouth_Open", "tongueOut", "cheekPuff"], ["Mouth_Open", "cheekPuff"],
                        {"jawOpen": "mouth_open", "tongueOut": "", "cheekPuff": "Puff"})
    assert match.pairs == (("jawOpen", "Mouth_Open"),)  # the table wins over the same-named channel
    assert match.unmapped == ("Mouth_Open", "cheekPuff")  # cheekPuff's mapped target is missing
    assert match.excluded == ("tongueOut",) and match.missing_targets == ("Puff",)


def test_mapping_text_is_parsed_or_refused_with_a_reason():
    assert parse_mapping('{"jawOpen": "Mouth_Open", "tongueOut": ""}') == {"jawOpen": "Mouth_Open", "tongueOut": ""}
    assert parse_mapping("  ") == {}
    with pytest.raises(RetargetError, match="not valid JSON"):
        parse_mapping('{"jawOpen": Mouth_Open}')
    with pytest.raises(RetargetError, match="JSON object"):
        parse_mapping('["jawOpen"]')
    with pytest.raises(RetargetError, match="names"):
        parse_mapping('{"jawOpen": 3}')
    with pytest.raises(RetargetError, match="both 'jawOpen' and 'mouthClose'"):
        parse_mapping('{"jawOpen": "M", "mouthClose": "M"}')


def test_regions_follow_the_facs_face_halves():
    assert [channel_region(n) for n in ("jawOpen", "mouthSmileLeft", "tongueOut", "cheekPuff", "noseSneerLeft")] \
        == ["mouth"] * 5
    assert [channel_region(n) for n in ("browInnerUp", "BrowDownLeft")] == ["brows"] * 2
    assert [channel_region(n) for n in ("eyeBlinkLeft", "eyeLookUpRight", "cheekSquintLeft")] == ["eyes"] * 3
    assert channel_region("expr000") is None  # FLAME's PCA channels are not scaled
    assert [bone_region(n) for n in ("head", "neck", "global", "jaw", "eye_left", "eye.R")] == \
        ["head", "head", "head", "mouth", "eyes", "eyes"]


def test_config_refuses_negative_strengths_and_accepts_a_dict_mapping():
    with pytest.raises(RetargetError, match="mouth strength"):
        BakeConfig(mouth=-1)
    config = BakeConfig(mapping={"jawOpen": "M"})
    assert config.mapping == (("jawOpen", "M"),) and hash(config)


# ----------------------------------------------------------------------------- NLA strips


def test_one_strip_plays_its_keys_and_holds_its_ends():
    timeline = flatten_strips([strip(10, [0.1, 0.2, 0.3])], frames=np.arange(5, 16))
    np.testing.assert_array_equal(timeline.column("a"), [0.1] * 6 + [0.2, 0.3] + [0.3] * 3)


def test_a_track_holds_the_previous_result_until_the_next_one_starts():
    first, second = strip(1, [0.0, 1.0]), strip(5, [5.0, 6.0], extrapolation="HOLD_FORWARD")
    timeline = flatten_strips([second, first])  # any order: a track plays in time
    np.testing.assert_array_equal(timeline.frames, np.arange(1, 7))
    np.testing.assert_array_equal(timeline.column("a"), [0, 1, 1, 1, 5, 6])
    # Without HOLD the first result does not reach back; NOTHING holds in neither direction.
    timeline = flatten_strips([strip(3, [1.0], extrapolation="HOLD_FORWARD")], frames=np.arange(1, 6))
    np.testing.assert_array_equal(timeline.column("a"), [np.nan, np.nan, 1, 1, 1])
    timeline = flatten_strips([strip(3, [1.0, 2.0], extrapolation="NOTHING")], frames=np.arange(1, 7))
    np.testing.assert_array_equal(timeline.column("a"), [np.nan, np.nan, 1, 2, np.nan, np.nan])


def test_where_strips_touch_the_earlier_one_plays_the_shared_frame():
    timeline = flatten_strips([strip(1, [0.0, 1.0, 2.0]), strip(3, [7.0, 8.0], extrapolation="HOLD_FORWARD")])
    np.testing.assert_array_equal(timeline.column("a"), [0, 1, 2, 8])


def test_an_upper_track_wins_where_it_plays_or_holds_and_lower_tracks_show_elsewhere():
    lower = strip(1, np.arange(10.0), channels=("a", ))
    upper = strip(4, [[40.0, 400.0], [50.0, 500.0]], track=1, extrapolation="NOTHING", channels=("a", "b"))
    timeline = flatten_strips([lower, upper])
    assert timeline.channels == ("a", "b")
    np.testing.assert_array_equal(timeline.column("a"), [0, 1, 2, 40, 50, 5, 6, 7, 8, 9])
    np.testing.assert_array_equal(timeline.column("b")[3:5], [400, 500])
    assert np.isnan(timeline.column("b")[[0, 5]]).all()  # nothing plays b there
    held = flatten_strips([lower, strip(4, [40.0, 50.0], track=1)])  # HOLD covers every frame
    np.testing.assert_array_equal(held.column("a"), [40, 40, 40, 40, 50, 50, 50, 50, 50, 50])


def test_a_muted_strip_still_takes_its_frames_but_lets_lower_tracks_show():
    lower = strip(1, np.arange(6.0))
    muted = strip(3, [30.0, 40.0], track=1, muted=True)
    np.testing.assert_array_equal(flatten_strips([lower, muted]).column("a"), np.arange(6.0))
    # in its own track it hides the hold of the strip before it
    timeline = flatten_strips([strip(1, [1.0, 2.0]), strip(4, [9.0], muted=True, extrapolation="HOLD_FORWARD")],
                              frames=np.arange(1, 7))
    np.testing.assert_array_equal(timeline.column("a"), [1, 2, 2, np.nan, np.nan, np.nan])


def test_a_moved_or_scaled_strip_maps_scene_frames_onto_its_action_as_blender_does():
    keys = strip(0, np.arange(11.0))  # action frames 0..10 with value = frame
    moved = ResultStrip(track=0, frame_start=100, frame_end=120, action_start=0, action_end=10, scale=2.0,
                        channels=("a",), frames=keys.frames, values=keys.values)
    timeline = flatten_strips([moved])
    np.testing.assert_allclose(timeline.column("a"), np.arange(21) / 2)
    repeated = ResultStrip(track=0, frame_start=0, frame_end=20, action_start=0, action_end=10, repeat=2.0,
                           channels=("a",), frames=keys.frames, values=keys.values)
    np.testing.assert_allclose(repeated.action_frames(np.array([0, 9, 10, 11, 20])), [0, 9, 0, 1, 10])


# ----------------------------------------------------------------------------- rotations


def test_strength_scales_the_rotation_angle_about_the_same_axis():
    rotvecs = np.array([[0.2, 0.0, 0.0], [0.1, -0.3, 0.05], [0.0, 0.0, -0.4]])
    quats = quaternion(rotvecs)
    np.testing.assert_allclose(quaternion_to_axis_angle(scale_rotations(quats, 0.5)), rotvecs * 0.5, atol=1e-12)
    np.testing.assert_allclose(quaternion_to_axis_angle(scale_rotations(quats, 1.5)), rotvecs * 1.5, atol=1e-12)
    np.testing.assert_allclose(scale_rotations(quats, 0.0), np.tile([1.0, 0, 0, 0], (3, 1)), atol=1e-12)
    assert np.array_equal(scale_rotations(quats, 1.0), quats)


def test_a_rotation_moved_to_another_bone_rest_is_the_same_rotation_of_the_character():
    source_rest = axis_angle_to_matrix(np.array([0.3, 0.0, 0.0]))
    target_rest = axis_angle_to_matrix(np.array([0.0, 0.4, 1.2]))
    quats = quaternion(np.random.default_rng(0).normal(0, 0.2, (20, 3)))
    moved = retarget_rotations(quats, source_rest, target_rest)

    def in_armature(q, rest):
        return rest @ axis_angle_to_matrix(quaternion_to_axis_angle(q)) @ rest.T

    np.testing.assert_allclose(in_armature(moved, target_rest), in_armature(quats, source_rest), atol=1e-12)
    assert (np.einsum("ti,ti->t", moved[1:], moved[:-1]) > 0).all()  # sign-continuous for F-curves
    assert np.array_equal(retarget_rotations(quats, source_rest, source_rest), quats)


# ----------------------------------------------------------------------------- keyframe reduction


def interpolate_kept(frames, values, kept):
    return np.stack([np.interp(frames, frames[kept[:, j]], values[kept[:, j], j]) for j in range(values.shape[1])],
                    axis=1)


def test_reduction_keeps_every_value_within_tolerance_with_far_fewer_keys():
    frames = np.arange(1500.0)
    t = frames / 30
    rng = np.random.default_rng(1)
    values = np.stack([0.5 + 0.4 * np.sin(t * (1 + k)) + 0.002 * rng.normal(size=len(t)) for k in range(6)], 1)
    for tolerance, most_kept in ((0.001, 0.9), (0.01, 0.3), (0.05, 0.15)):
        kept = reduce_keys(frames, values, tolerance)
        assert kept[[0, -1]].all()
        assert np.abs(interpolate_kept(frames, values, kept) - values).max() <= tolerance
        assert kept.sum() <= values.size * most_kept


def test_reduction_finds_the_corners_of_a_polyline_and_keeps_uneven_frames_right():
    frames = np.array([0.0, 1, 2, 3, 5, 8, 9, 10])
    values = np.interp(frames, [0, 3, 8, 10], [0.0, 3.0, -2.0, -2.0])[:, None]
    kept = reduce_keys(frames, values, 1e-9)
    assert frames[kept[:, 0]].tolist() == [0, 3, 8, 10]
    assert reduce_keys(frames, values, -1.0).all()  # below any error: keep everything


def test_rotation_reduction_bounds_the_angle_blender_plays_between_kept_keys():
    frames = np.arange(400.0)
    rotvecs = np.stack([0.2 * np.sin(frames / 20), 0.1 * np.cos(frames / 33), 0.05 * np.sin(frames / 7)], 1)
    quats = quaternion(rotvecs)
    tolerance = math.radians(0.2)
    kept = reduce_rotation_keys(frames, quats, tolerance)
    played = np.stack([np.interp(frames, frames[kept], quats[kept, i]) for i in range(4)], 1)
    played /= np.linalg.norm(played, axis=1, keepdims=True)
    angles = 2 * np.arccos(np.clip(np.abs(np.einsum("ti,ti->t", played, quats)), 0, 1))
    assert angles.max() <= tolerance and kept[[0, -1]].all() and kept.sum() < len(frames) / 4


# ----------------------------------------------------------------------------- bake plans


def test_shape_key_bake_maps_scales_by_region_and_reduces():
    frames = np.arange(1.0, 101.0)
    channels = ("jawOpen", "browInnerUp", "eyeBlinkLeft", "expr000", "tongueOut")
    values = np.stack([np.linspace(0, 1, 100)] * 5, 1) * np.array([1.0, 0.5, 0.25, 0.2, 0.1])
    timeline = Timeline(frames, channels, values)
    config = BakeConfig(mouth=0.5, brows=2.0, eyes=0.0, mapping={"expr000": "E0"})
    result = bake_shape_keys(timeline, ["JAWOPEN", "browinnerup", "eyeBlinkLeft", "E0"], config)
    assert [(c.source, c.target) for c in result.curves] == [
        ("jawOpen", "JAWOPEN"), ("browInnerUp", "browinnerup"), ("eyeBlinkLeft", "eyeBlinkLeft"), ("expr000", "E0")]
    assert result.match.unmapped == ("tongueOut",)
    for curve, factor, column in zip(result.curves, (0.5, 2.0, 0.0, 1.0), range(4)):
        np.testing.assert_array_equal(curve.frames, frames)
        np.testing.assert_allclose(curve.values[:, 0], values[:, column] * factor)
    clamped = bake_shape_keys(timeline, ["jawOpen"], BakeConfig(mouth=3.0), {"jawOpen": (0.0, 1.0)})
    assert clamped.curves[0].values.max() == 1.0 and clamped.curves[0].values[10, 0] == pytest.approx(30 / 99)
    reduced = bake_shape_keys(timeline, ["jawOpen"], BakeConfig(reduce=True))
    (curve,) = reduced.curves
    assert curve.frames.tolist() == [1, 100] and (reduced.keys_sampled, reduced.keys_kept) == (100, 2)


def test_bone_bake_scales_the_head_and_moves_it_into_the_target_bone_rest():
    frames = np.arange(1.0, 51.0)
    rotvecs = np.stack([0.3 * np.sin(frames / 10), 0.1 * np.ones(50), np.zeros(50)], 1)
    quats = quaternion(rotvecs)
    channels = tuple(("head", i) for i in range(4)) + (("jaw", 0),)  # the jaw lacks components: skipped
    timeline = Timeline(frames, channels, np.column_stack([quats, np.zeros(50)]))
    rest = {"head": np.eye(3)}
    target_rest = {"Head": axis_angle_to_matrix(np.array([0.0, 0.0, math.pi / 2]))}
    result = bake_bones(timeline, ["Root", "Head"], BakeConfig(head=0.5), rest, target_rest)
    (curve,) = result.curves
    assert (curve.source, curve.target) == ("head", "Head") and result.match.unmapped == ()
    in_armature = target_rest["Head"] @ axis_angle_to_matrix(quaternion_to_axis_angle(curve.values)) \
        @ target_rest["Head"].T
    np.testing.assert_allclose(in_armature, axis_angle_to_matrix(rotvecs * 0.5), atol=1e-12)
