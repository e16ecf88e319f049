"""25 fps motion on scene frames: the right frames, exact values, no drift over long clips."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from model.core.rig_layout import bone_local_quaternions
from model.core.rotations import axis_angle_to_matrix
from model.core.schedule import parse_schedule
from model.core.timeline import (SceneRate, TimelineError, caption_schedule, channel_layout, motion_positions,
                            rig_animation, sample_motion, scene_frames)

# Blender's rate presets as (fps, fps_base); 29.97 is 30 / 1.001.
RATES = {"24": (24, 1.0), "25": (25, 1.0), "29.97": (30, 1.001), "30": (30, 1.0), "50": (50, 1.0), "60": (60, 1.0)}


def ramp(frames: int) -> np.ndarray:
    """(T, 2) motion whose value is a straight line in the motion frame: 0.5 + i/10, and -i."""
    i = np.arange(frames, dtype=np.float64)
    return np.stack([0.5 + i / 10, -i], axis=1)


def exact_position(frame: int, frame_start: int, fps: int, fps_base: float) -> Fraction:
    """Motion frame shown at ``frame``: (frame - start) * fps_base / fps * 25, exactly."""
    return (frame - frame_start) * Fraction(str(fps_base)) * 25 / fps


@pytest.mark.parametrize("rate", RATES, ids=str)
def test_a_ramp_lands_exactly_on_the_computed_frames(rate):
    fps, fps_base = RATES[rate]
    start, motion = 7, ramp(101)  # 4 s of motion: frames 0..100 at 25 fps
    frames, values = sample_motion(motion, start, SceneRate(fps, fps_base))

    last = start + math.floor(Fraction(100, 25) * fps / Fraction(str(fps_base)))
    np.testing.assert_array_equal(frames, np.arange(start, last + 1))
    expected = np.array([[0.5 + float(p) / 10, -float(p)]
                         for p in (exact_position(f, start, fps, fps_base) for f in range(start, last + 1))])
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-12)
    assert values[0].tolist() == [0.5, 0.0]  # the strip's first frame shows motion frame 0


def test_frames_that_show_a_motion_frame_get_exactly_its_value():
    motion = np.random.default_rng(0).normal(size=(60, 3))
    # 50 fps: every second scene frame is a motion frame; 29.97 fps: frame 1200 shows motion frame 1001.
    frames, values = sample_motion(motion, 10, SceneRate(50))
    np.testing.assert_array_equal(values[::2], motion)
    frames, values = sample_motion(np.tile(motion, (20, 1)), 0, SceneRate(30, 1.001))
    assert frames[1200] == 1200 and np.array_equal(values[1200], np.tile(motion, (20, 1))[1001])


def test_between_motion_frames_the_value_is_the_linear_mix():
    motion = np.array([[0.0], [1.0], [3.0]])
    frames, values = sample_motion(motion, 1, SceneRate(30))  # scene frame 1 + k shows motion frame k * 25/30
    assert frames.tolist() == [1, 2, 3]  # frame 3 shows 1.667; frame 4 (2.5) is past the last motion frame
    np.testing.assert_allclose(values[:, 0], [0.0, 5 / 6, 1 + 2 * (2 / 3)], atol=1e-12)


def test_a_ten_minute_clip_at_29_97_ends_on_the_right_frame():
    start, motion_frames = 101, 10 * 60 * 25  # 10 min: motion frames 0..14999 (599.96 s)
    frames, values = sample_motion(ramp(motion_frames), start, SceneRate(30, 1.001))
    last = start + math.floor(Fraction(motion_frames - 1, 25) * 30 / Fraction("1.001"))
    assert last == start + 17980  # 599.96 s * 29.97... = 17980.82 frames
    assert frames[0] == start and frames[-1] == last and len(frames) == last - start + 1
    position = exact_position(last, start, 30, 1.001)
    assert values[-1, 1] == pytest.approx(-float(position), abs=1e-9)
    # adding a float32 step per frame would end 2.3 motion frames early here: the test can tell
    drifting = np.cumsum(np.full(last - start, np.float32(25 * 1.001 / 30), dtype=np.float32))[-1]
    assert abs(drifting - float(position)) > 1


def test_blender_float32_fps_base_is_read_as_the_preset():
    float32_base = float(np.float32(1.001))  # what scene.render.fps_base returns for 29.97
    assert float32_base != 1.001 and SceneRate.from_blender(30, float32_base) == SceneRate(30, 1.001)


def test_fractional_strip_start_keys_whole_frames_only():
    frames, values = sample_motion(ramp(26), 3.5, SceneRate(25))  # 1 s of motion from frame 3.5
    assert frames[0] == 4 and frames[-1] == 28
    np.testing.assert_allclose(values[0, 1], -0.5)


def test_bad_input_is_refused():
    with pytest.raises(TimelineError):
        SceneRate(0)
    with pytest.raises(TimelineError):
        scene_frames(0, 1, SceneRate(24))
    with pytest.raises(TimelineError):
        sample_motion(np.zeros(10), 1, SceneRate(24))
    with pytest.raises(TimelineError):
        channel_layout(["jawOpen", "head.rx", "head.rz", "head.ry"])


def test_rig_animation_splits_shape_keys_and_bone_quaternions():
    channels = ["jawOpen", "smile", "head.rx", "head.ry", "head.rz"]
    assert channel_layout(channels) == (("jawOpen", "smile"), ("head",))
    rng = np.random.default_rng(1)
    motion = np.concatenate([rng.uniform(0, 1, (50, 2)), rng.normal(0, 0.05, (50, 3))], axis=1)
    rest = axis_angle_to_matrix(np.array([0.3, -0.2, 0.1]))
    animation = rig_animation(motion, channels, {"head": rest}, 1, SceneRate(25))

    assert animation.shape_keys == ("jawOpen", "smile") and animation.bones == ("head",)
    np.testing.assert_array_equal(animation.frames, np.arange(1, 51))
    np.testing.assert_allclose(animation.shape_values, motion[:, :2], atol=1e-7)
    assert animation.bone_quaternions.shape == (1, 50, 4)
    np.testing.assert_allclose(animation.bone_quaternions[0], bone_local_quaternions(motion[:, 2:], rest), atol=1e-7)
    with pytest.raises(TimelineError, match="no bone"):
        rig_animation(motion, channels, {}, 1, SceneRate(25))


# Caption sections on timeline markers -> the caption schedule of one piece of audio.

SECTION_RATES = {"24": (24, 1.0), "25": (25, 1.0), "29.97": (30, 1.001)}


def marker_seconds(frame: float, audio_start: float, fps: int, fps_base: float) -> Fraction:
    """Seconds from the audio's start at which a marker on ``frame`` plays, exactly."""
    return (Fraction(frame) - Fraction(audio_start)) * Fraction(str(fps_base)) / fps


@pytest.mark.parametrize("rate", SECTION_RATES, ids=str)
@pytest.mark.parametrize("audio_start", [101, 100.5], ids=["whole-start", "fractional-start"])
def test_markers_before_inside_and_after_the_audio(rate, audio_start):
    fps, fps_base = SECTION_RATES[rate]
    duration = 10.0
    inside = math.ceil(audio_start) + 2 * fps  # about 2 s in
    end = audio_start + duration * fps / fps_base
    sections = [
        (inside, "", "very angry"),
        (math.floor(audio_start) - 30, "a calm teacher, subtle head movements", ""),  # before: sets the start
        (math.ceil(end) + 5, "ignored", "ignored"),  # after the end
        (inside + fps, "a lively presenter", ""),  # 1 s later: only the style changes
    ]
    entries = caption_schedule(sections, "a news anchor", "neutral", audio_start, SceneRate(fps, fps_base),
                               duration).to_list()

    assert entries == [
        {"start": 0.0, "style": "a calm teacher, subtle head movements", "emotion": "neutral"},
        {"start": pytest.approx(float(marker_seconds(inside, audio_start, fps, fps_base)), abs=1e-12),
         "style": "a calm teacher, subtle head movements", "emotion": "very angry"},
        {"start": pytest.approx(float(marker_seconds(inside + fps, audio_start, fps, fps_base)), abs=1e-12),
         "style": "a lively presenter", "emotion": "very angry"},
    ]
    schedule = parse_schedule(entries)
    schedule.check_duration(duration)
    # The change shows from the first motion frame the marker's scene frame reaches, the
    # one the key writer samples there (`motion_positions`).
    expected = [math.ceil(round(float(p), 6)) for p in motion_positions(np.array([inside, inside + fps]), audio_start,
                                                                        SceneRate(fps, fps_base))]
    assert list(schedule.change_frames()) == expected


def test_no_sections_gives_the_default_captions_throughout():
    assert caption_schedule([], " a calm teacher ", "", 1, SceneRate(24), 3.0).to_list() == [
        {"start": 0.0, "style": "a calm teacher", "emotion": ""}]


def test_a_marker_on_the_audio_start_sets_the_start_and_one_on_the_end_is_ignored():
    rate = SceneRate(25)
    entries = caption_schedule([(11, "", "happy"), (11 + 100, "", "sad")], "s", "e", 11, rate, 4.0).to_list()
    assert entries == [{"start": 0.0, "style": "s", "emotion": "happy"}]  # frame 111 plays 4.0 s: the end
    last = caption_schedule([(11 + 99, "", "sad")], "s", "e", 11, rate, 4.0).to_list()  # the last motion frame counts
    assert [e["emotion"] for e in last] == ["e", "sad"]


def test_empty_captions_keep_the_previous_ones_and_no_op_sections_are_dropped():
    rate = SceneRate(24)
    sections = [(24, "", "happy"), (48, "", ""), (72, "   ", "happy"), (96, "lively", "")]
    entries = caption_schedule(sections, "calm", "", 0, rate, 10.0).to_list()
    assert [(e["start"], e["style"], e["emotion"]) for e in entries] == [
        (0.0, "calm", ""), (1.0, "calm", "happy"), (4.0, "lively", "happy")]


def test_two_markers_on_one_scene_frame_merge_and_the_later_section_wins():
    sections = [(48, "", "sad"), (48, "lively", "happy")]
    entries = caption_schedule(sections, "calm", "neutral", 0, SceneRate(24), 5.0).to_list()
    assert entries == [{"start": 0.0, "style": "calm", "emotion": "neutral"},
                       {"start": 2.0, "style": "lively", "emotion": "happy"}]


def test_markers_on_one_motion_frame_merge_and_the_later_marker_wins():
    # At 60 fps frames 121 and 122 play 2.017 s and 2.033 s: both take effect on motion frame 51.
    sections = [(122, "", "sad"), (121, "lively", "happy")]
    entries = caption_schedule(sections, "calm", "neutral", 0, SceneRate(60), 5.0).to_list()
    assert [(e["style"], e["emotion"]) for e in entries] == [("calm", "neutral"), ("lively", "sad")]
    assert entries[1]["start"] == pytest.approx(121 / 60)
    assert parse_schedule(entries).change_frames() == (51,)  # accepted: one change on that frame


def test_sections_at_or_before_the_start_apply_in_time_order():
    sections = [(5, "", "happy"), (-20, "calm", "sad"), (10, "", "")]
    entries = caption_schedule(sections, "s", "e", 10, SceneRate(24), 2.0).to_list()
    assert entries == [{"start": 0.0, "style": "calm", "emotion": "happy"}]


def test_a_bad_audio_start_or_duration_is_refused():
    with pytest.raises(TimelineError):
        caption_schedule([], "", "", 1, SceneRate(24), 0.0)
    with pytest.raises(TimelineError):
        caption_schedule([], "", "", float("nan"), SceneRate(24), 1.0)


def test_strip_timing_follows_trims_and_the_sound_offset():
    from model.core.timeline import strip_timing

    rate = SceneRate(25)
    # the mixdown measurement: strip at 11, delayed 1 s, trimmed by 5 frames -> audio 0.535 s plays at frame 49.375
    timing = strip_timing(11, 16, 200, 1.0, rate, 7.56)
    assert timing.audio_start == 0.0 and timing.start_frame == pytest.approx(36.0)
    assert timing.start_frame + 0.535 * 25 == pytest.approx(49.375)
    assert timing.audio_end == pytest.approx(189 / 25 - 1.0), "the delayed sound is cut at the strip's end"
    # trimmed at the front: audio starts 2 s in, on the trimmed strip's first frame
    timing = strip_timing(1, 51, 101, 0.0, rate, 10.0)
    assert (timing.audio_start, timing.audio_end, timing.start_frame) == pytest.approx((2.0, 4.0, 51.0))
    # 29.97 fps: frames are 1.001 / 30 s long
    timing = strip_timing(100, 100, 100 + 300, 0.0, SceneRate(30, 1.001), 60.0)
    assert timing.audio_end == pytest.approx(300 * 1.001 / 30)
    with pytest.raises(TimelineError, match="plays no audio"):
        strip_timing(1, 1, 50, 5.0, rate, 10.0)
