"""Controllability evaluation: the attribute measures on motions with known answers, the
test-caption file (enough of every kind, none the caption generator writes), and the
whole measurement on a small word-driven generator whose right answers are known."""
from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import pytest

from model.data.captions import emotion_caption, random_segment, render_captions, style_caption
from model.data.controls import EmotionControls, StyleControls
from model.evaluate.controllability import (
    ABSOLUTE_FLOOR,
    ATTRIBUTES,
    NEUTRAL,
    RELATIVE_MARGIN,
    ControlCaption,
    ControllabilityError,
    controllability_markdown,
    generator_fn,
    load_control_captions,
    measure_controllability,
    why_unseen,
)
from model.core.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from model.core.motion_file import MotionClip
from model.metrics import MeasureError, brow_raise, eye_widening, frown, head_motion, mouth_amplitude, smile

CHANNELS = ("jawOpen", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight", "browInnerUp",
            "browOuterUpLeft", "browOuterUpRight", "eyeWideLeft", "eyeWideRight", "head.rx", "head.ry", "head.rz")
COL = {name: i for i, name in enumerate(CHANNELS)}
FRAMES = 100  # 4 s at 25 fps: a 2 Hz sine makes 8 whole periods
TIME = np.arange(FRAMES) / 25.0


def sine(amplitude: float, hertz: float = 2.0, phase: float = 0.0) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * hertz * TIME + phase)


# ----------------------------------------------------------------------------- measures


def test_mouth_amplitude_is_the_std_of_jaw_open_whatever_its_offset():
    motion = np.zeros((FRAMES, len(CHANNELS)))
    motion[:, COL["jawOpen"]] = 0.3 + sine(0.2)
    motion[:, COL["mouthSmileLeft"]] = sine(0.9)  # other channels do not count
    assert mouth_amplitude(motion, CHANNELS) == pytest.approx(0.2 / math.sqrt(2), rel=1e-9)


def test_head_motion_is_the_rms_angle_from_the_clip_mean_in_degrees():
    amplitude = 6.0
    motion = np.zeros((FRAMES, len(CHANNELS)))
    motion[:, COL["head.rx"]] = np.radians(sine(amplitude))
    assert head_motion(motion, CHANNELS) == pytest.approx(amplitude / math.sqrt(2), rel=1e-6)

    # The same nods on a held posture (chin 20 degrees up, turned 10): posture is not motion.
    posture = axis_angle_to_matrix(np.radians([20.0, 0.0, 10.0]))
    nods = axis_angle_to_matrix(np.stack([np.radians(sine(amplitude)), np.zeros(FRAMES), np.zeros(FRAMES)], axis=1))
    motion[:, [COL["head.rx"], COL["head.ry"], COL["head.rz"]]] = matrix_to_axis_angle(posture @ nods)
    assert head_motion(motion, CHANNELS) == pytest.approx(amplitude / math.sqrt(2), rel=1e-6)

    held = np.zeros((FRAMES, len(CHANNELS)))
    held[:, COL["head.ry"]] = np.radians(15.0)
    assert head_motion(held, CHANNELS) == pytest.approx(0.0, abs=1e-6)


def test_expression_attributes_are_means_over_frames_and_both_sides():
    motion = np.zeros((FRAMES, len(CHANNELS)))
    motion[:, COL["mouthSmileLeft"]], motion[:, COL["mouthSmileRight"]] = 0.6, 0.2
    motion[:, COL["mouthFrownLeft"]] = 0.1 + sine(0.1)  # a sine averages out
    motion[:, COL["browInnerUp"]], motion[:, COL["browOuterUpLeft"]] = 0.9, 0.3
    motion[:FRAMES // 2, COL["eyeWideLeft"]] = 0.8  # half the clip, one eye
    assert smile(motion, CHANNELS) == pytest.approx(0.4)
    assert frown(motion, CHANNELS) == pytest.approx(0.05)
    assert brow_raise(motion, CHANNELS) == pytest.approx(0.4)
    assert eye_widening(motion, CHANNELS) == pytest.approx(0.2)


def test_a_rig_without_the_channels_is_refused_by_name():
    flame_like = ("expr_000", "expr_001", "jaw.rx", "jaw.ry", "jaw.rz", "neck.rx", "neck.ry", "neck.rz")
    motion = np.zeros((10, len(flame_like)))
    with pytest.raises(MeasureError, match="jawOpen"):
        mouth_amplitude(motion, flame_like)
    with pytest.raises(MeasureError, match="head.rx"):
        head_motion(motion, flame_like)
    with pytest.raises(MeasureError, match="expected"):
        smile(np.zeros((10, 3)), CHANNELS)


# ----------------------------------------------------------------------------- the caption file


@pytest.fixture(scope="module")
def captions() -> tuple[ControlCaption, ...]:
    return load_control_captions()


@pytest.fixture(scope="module")
def generated() -> set[str]:
    """Captions the generator writes: random controls, plus many for the default style and
    a neutral emotion (what most test captions are paired with)."""
    rng = np.random.default_rng(5)
    out = set()
    for _ in range(20_000):
        out.update(render_captions(random_segment(rng), rng, p_empty_style=0.0, p_empty_emotion=0.0))
    out.update(style_caption(StyleControls(), rng) for _ in range(20_000))
    out.update(emotion_caption(EmotionControls(), rng) for _ in range(5_000))
    return out


def test_the_file_has_enough_captions_of_every_kind(captions):
    assert len(captions) >= 44
    assert len({c.pair for c in captions}) == len(captions), "every test is a different caption pair"
    assert {c.attribute for c in captions} == set(ATTRIBUTES)
    directions = Counter((c.attribute, c.direction) for c in captions)
    for attribute in ATTRIBUTES:
        assert directions[(attribute, "up")] >= 5
    # Against a neutral face only amplitudes can go down: smile, frown, brows and eyes sit near zero there.
    assert directions[("mouth_amplitude", "down")] >= 5 and directions[("head_motion", "down")] >= 5
    forms = Counter(c.form for c in captions)
    assert forms["tag"] >= 8 and forms["long_sentence"] >= 8 and forms["word_order"] >= 5 and forms["synonym"] >= 5
    for c in captions:
        if c.form == "tag":
            assert any(mark in c.style + c.emotion for mark in "=|:"), c
        if c.form == "long_sentence":
            assert max(len(c.style.split()), len(c.emotion.split())) >= 20, c


def test_every_test_caption_is_one_the_generator_never_writes(captions, generated):
    lowered = {text.lower() for text in generated}
    for c in captions:
        changed = [text for text, reference in zip(c.pair, NEUTRAL) if text != reference]
        assert changed, c  # the other caption may be the reference's (in-distribution on purpose)
        for text in changed:
            assert text.lower() not in lowered, text
            # The proof that does not rest on sampling: held-out syntax or words, or a word it has not got.
            assert why_unseen(text) is not None, text


def test_the_neutral_reference_is_in_distribution(generated):
    for text in NEUTRAL:
        assert text in generated
        assert why_unseen(text) is None


def test_why_unseen_names_the_reason():
    assert why_unseen("S = man | E = angry") == "held-out syntax '='"
    assert why_unseen("A boy speaks.") == "held-out word 'boy'"
    assert why_unseen("The speaker is beaming.") == "new word 'beaming'"
    assert why_unseen("A woman speaks with wide mouth movements.") is None


def test_bad_caption_entries_are_refused(tmp_path):
    with pytest.raises(ControllabilityError, match="attribute 'nose'"):
        ControlCaption("a", "b", "nose", "up", "tag")
    path = tmp_path / "captions.json"
    path.write_text('[{"style": "a", "emotion": "b", "attribute": "smile", "direction": "sideways", "form": "tag"}]')
    with pytest.raises(ControllabilityError, match="caption 1: direction 'sideways'"):
        load_control_captions(path)


# ----------------------------------------------------------------------------- measuring end to end

MOUTH_WORDS = {"huge": 1.5, "tiny": 0.5, "meh": 1.03}  # "meh": a move smaller than the margin
HEAD_WORDS = {"wild": 2.0, "frozen": 0.05}
POSE_WORDS = {"beaming": ("mouthSmile", 0.5), "heartbroken": ("mouthFrown", 0.6), "stunned": ("browOuterUp", 0.7)}


class WordDriven:
    """generate(audio, style, emotion): a jaw sine of 0.1 x gain, head nods of 5 degrees x
    gain, and poses, set by words of the captions; ``audio`` is a phase. Records calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, audio, style, emotion):
        self.calls.append((audio, style, emotion))
        words = re.findall(r"[a-z]+", f"{style} {emotion}".lower())
        mouth = math.prod(MOUTH_WORDS.get(w, 1.0) for w in words)
        head = math.prod(HEAD_WORDS.get(w, 1.0) for w in words)
        motion = np.zeros((FRAMES, len(CHANNELS)), dtype=np.float32)
        motion[:, COL["jawOpen"]] = 0.2 + sine(0.1 * mouth, phase=audio)
        motion[:, COL["head.rx"]] = np.radians(sine(5.0 * head, hertz=0.5, phase=audio))
        for word in words:
            if word in POSE_WORDS:
                name, value = POSE_WORDS[word]
                for side in ("Left", "Right"):
                    motion[:, COL[name + side]] = value
        return motion, CHANNELS


def test_measure_controllability_counts_the_right_moves_and_lists_the_failures():
    captions = (
        ControlCaption("S = man | mouth = huge", "E = neutral", "mouth_amplitude", "up", "tag"),
        ControlCaption("A girl with tiny mouth movements.", NEUTRAL[1], "mouth_amplitude", "down", "synonym"),
        ControlCaption("A boy with huge mouth movements.", NEUTRAL[1], "mouth_amplitude", "down",
                       "synonym"),  # the wrong way
        ControlCaption("A meh mouth.", NEUTRAL[1], "mouth_amplitude", "up", "synonym"),  # +3%: noise, not a move
        ControlCaption("A wild head.", NEUTRAL[1], "head_motion", "up", "synonym"),
        ControlCaption("A frozen head.", NEUTRAL[1], "head_motion", "down", "synonym"),
        ControlCaption(NEUTRAL[0], "Beaming.", "smile", "up", "synonym"),
        ControlCaption(NEUTRAL[0], "Heartbroken.", "frown", "up", "synonym"),
        ControlCaption(NEUTRAL[0], "Stunned.", "brow_raise", "up", "synonym"),
        ControlCaption(NEUTRAL[0], "Startled.", "eye_widening", "up", "synonym"),  # the generator ignores it
    )
    generate = WordDriven()
    audios = (0.0, 1.3)
    result = measure_controllability(generate, audios, captions)

    assert [r.ok for r in result.rows] == [True, True, False, False, True, True, True, True, True, False]
    assert result.share == pytest.approx(7 / 10)
    assert not result.meets_aim
    assert [r.caption for r in result.failures] == [captions[2], captions[3], captions[9]]
    assert result.counts_by("attribute") == {"mouth_amplitude": (2, 4), "head_motion": (2, 2), "smile": (1, 1),
                                             "frown": (1, 1), "brow_raise": (1, 1), "eye_widening": (0, 1)}
    assert result.counts_by("form") == {"tag": (1, 1), "synonym": (6, 9)}

    rows = result.rows
    assert rows[0].neutral == pytest.approx(0.1 / math.sqrt(2), rel=1e-5)
    assert rows[0].value == pytest.approx(0.15 / math.sqrt(2), rel=1e-5)
    assert rows[0].relative == pytest.approx(0.5, rel=1e-4)
    assert rows[0].margin == pytest.approx(RELATIVE_MARGIN * rows[0].neutral)
    assert rows[4].neutral == pytest.approx(5.0 / math.sqrt(2), rel=1e-4)
    assert rows[6].neutral == 0.0 and rows[6].value == pytest.approx(0.5)
    assert rows[6].margin == ABSOLUTE_FLOOR["smile"] and rows[6].relative is None  # no ratio against zero
    assert rows[8].value == pytest.approx(0.7 * 2 / 3)

    # Every distinct caption pair once per audio, the reference once per audio.
    assert len(generate.calls) == (len(captions) + 1) * len(audios)
    assert Counter((style, emotion) for _, style, emotion in generate.calls)[NEUTRAL] == len(audios)

    text = controllability_markdown(result)
    assert "S = man \\| mouth = huge" in text  # pipes escaped in the table
    assert "7 of 10 captions (70%)" in text and "not met" in text
    failures = text.split("Failures:")[1]
    assert "A boy with huge mouth movements." in failures and "Startled." in failures and "Beaming" not in failures
    assert result.summary()["by_attribute"]["mouth_amplitude"] == [2, 4]


def test_the_shipped_captions_run_end_to_end_and_every_row_is_reported(captions):
    result = measure_controllability(WordDriven(), (0.0,), captions)
    assert len(result.rows) == len(captions)
    text = controllability_markdown(result)
    assert text.count("\n| ") >= len(captions)
    assert f"of {len(captions)} captions" in text


def test_bad_inputs_are_refused():
    caption = ControlCaption("A wild head.", NEUTRAL[1], "head_motion", "up", "synonym")
    with pytest.raises(ValueError, match="no audio"):
        measure_controllability(WordDriven(), (), (caption,))
    with pytest.raises(ValueError, match="no captions"):
        measure_controllability(WordDriven(), (0.0,), ())


class _Generator:
    """Stands in for a loaded `Generator`: records what it was asked."""

    def __init__(self):
        self.asked = []

    def generate(self, audio, schedule, options):
        self.asked.append((audio, schedule, options))
        return [MotionClip(np.zeros((5, 2), np.float32), ("jawOpen", "head.rx"))]  # one take, as Generator gives


def test_generator_fn_asks_for_constant_captions_with_the_given_options():
    from model.core.contract import GenerationOptions

    generator = _Generator()
    options = GenerationOptions(seed=3)
    motion, channels = generator_fn(generator, options)("clip.wav", "A wild head.", "Stunned.")
    assert motion.shape == (5, 2) and channels == ("jawOpen", "head.rx")
    audio, schedule, used = generator.asked[0]
    assert audio == "clip.wav" and used is options
    assert schedule.to_list() == [{"start": 0.0, "style": "A wild head.", "emotion": "Stunned."}]
    with pytest.raises(ValueError, match="takes=1"):
        generator_fn(generator, GenerationOptions(takes=2))
