"""The data engine end to end: real voices, the teacher animator, files on disk, the loader."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from model.data.controls import ControlSegment, EmotionControls, StyleControls
from model.data.dataset import (
    MANIFEST_FILE, WINDOW_FRAMES, DatasetError, open_dataset, random_windows, window_at, write_info,
)
from model.data.synth import TEST_VOICES, ClipPlan, Planner, make_clip
from model.core.head_model import HeadModel
from model.metrics import lip_opening
from model.core.motion_file import load_motion, save_motion, MotionClip
from model.open_head import OPEN_HEAD_ID
from model.speech.phones import Phone
from model.speech.voices import VOICES, available_voices

REPO_ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "Bob bought a big map of the moon, and the happy people paid him back."
BILABIALS = ("p", "b", "m")
OPEN_VOWELS = ("aa", "ae", "ao", "aw", "ay")


@pytest.fixture(scope="module")
def head(open_head_file) -> HeadModel:
    return HeadModel.load(open_head_file)


def plan_for(voice: str, index: int = 0, sentence: str = SENTENCE, **controls) -> ClipPlan:
    style = StyleControls(**{k: v for k, v in controls.items() if k in ("mouth", "head", "tempo", "tone")})
    emotion = EmotionControls(controls.get("emotion", "neutral"), controls.get("intensity", "medium"))
    return ClipPlan(index=index, clip_id=f"c{index:07d}", split="train", voice=voice, sentences=(sentence,),
                    rate=1.0, pitch=1.0, pauses=(0.3, 0.4), style=style, emotion=emotion, seed=7)


def make_dataset(root: Path, head: HeadModel, plans: list[ClipPlan]) -> list[dict]:
    entries = [make_clip(plan, str(root), tuple(head.channel_names), OPEN_HEAD_ID) for plan in plans]
    write_info(root, OPEN_HEAD_ID, head.channel_names)
    (root / MANIFEST_FILE).write_text("".join(json.dumps(e) + "\n" for e in entries))
    return entries


def phones_of(entry: dict) -> list[Phone]:
    return [Phone(label, start, end) for label, start, end in entry["phones"]]


@pytest.fixture(scope="module")
def voice_dataset(tmp_path_factory, head):
    """Two clips of every installed voice (normal and wide mouth), written and loaded back."""
    root = tmp_path_factory.mktemp("voices")
    plans = []
    for k, voice in enumerate(available_voices()):
        plans.append(plan_for(voice, 2 * k, mouth="normal"))
        plans.append(plan_for(voice, 2 * k + 1, sentence="Please pass me the blue umbrella on the top shelf.",
                              mouth="wide", emotion="happy", intensity="strong"))
    entries = make_dataset(root, head, plans)
    return root, entries


def test_at_least_eight_voices_of_both_sexes_are_installed():
    voices = available_voices()
    assert len(voices) >= 8, voices
    assert {VOICES[v].sex for v in voices} == {"male", "female"}
    assert set(TEST_VOICES) <= set(voices)


def test_every_voice_round_trips_through_the_dataset(voice_dataset, head):
    root, entries = voice_dataset
    dataset = open_dataset(root, channels=tuple(head.channel_names))
    assert dataset.bad == [], dataset.report()
    assert {c.voice for c in dataset.clips} == set(available_voices())
    for record, entry in zip(sorted(dataset.clips, key=lambda c: c.clip_id), entries):
        clip = load_motion(record.motion)
        assert clip.motion.shape == (entry["frames"], head.num_channels)
        assert abs(clip.num_frames - entry["seconds"] * 25) <= 1
        assert record.style == entry["style"] and record.emotion == entry["emotion"]


def test_lips_close_on_every_bilabial_and_open_on_open_vowels(voice_dataset, head):
    root, entries = voice_dataset
    rest = lip_opening(head.vertices(head.neutral_motion(1)) * 1000, head.regions["lip_pairs"])[0]
    checked_closures = checked_vowels = 0
    for entry in entries:
        motion = load_motion(root / entry["motion"]).motion
        opening = lip_opening(head.vertices(motion) * 1000, head.regions["lip_pairs"])
        for phone in phones_of(entry):
            frame = min(int(round(phone.centre * 25)), len(opening) - 1)
            if phone.label in BILABIALS:
                checked_closures += 1
                assert opening[frame] <= rest + 0.6, (entry["voice"], phone, opening[frame], rest)
            elif phone.label in OPEN_VOWELS and phone.end - phone.start >= 0.06:
                checked_vowels += 1
                assert opening[frame] >= rest + 2.0, (entry["voice"], phone, opening[frame], rest)
    assert checked_closures >= 10 * len(entries) // 2 and checked_vowels >= len(entries)


def test_rounded_vowels_pucker(voice_dataset, head):
    root, entries = voice_dataset
    pucker = head.channel_names.index("mouthPucker")
    for entry in entries:
        motion = load_motion(root / entry["motion"]).motion
        phones = phones_of(entry)
        rounded = [motion[int(round(p.centre * 25)), pucker] for p in phones if p.label in ("uw", "w")]
        spread = [motion[int(round(p.centre * 25)), pucker] for p in phones if p.label in ("iy", "ae")]
        if rounded and spread:
            assert np.mean(rounded) > np.mean(spread) + 0.2, entry["voice"]


def smile(motion: np.ndarray, head: HeadModel) -> np.ndarray:
    """(T,) mean of the two mouthSmile channels."""
    index = [head.channel_names.index(n) for n in ("mouthSmileLeft", "mouthSmileRight")]
    return motion[:, index].mean(axis=1)


def test_strong_happy_smiles_more_than_neutral_on_the_same_sentence(tmp_path, head):
    plans = [plan_for("flite_slt", 0, emotion="neutral"), plan_for("flite_slt", 1, emotion="happy", intensity="strong"),
             plan_for("flite_slt", 2, emotion="happy", intensity="slight")]
    entries = make_dataset(tmp_path, head, plans)
    neutral, strong, slight = (load_motion(tmp_path / e["motion"]).motion for e in entries)
    assert smile(strong, head).mean() > smile(slight, head).mean() + 0.2
    assert smile(slight, head).mean() > smile(neutral, head).mean() + 0.1
    # the face under the smile still speaks: the jaw moves as much
    jaw = head.channel_names.index("jawOpen")
    assert strong[:, jaw].std() > 0.5 * neutral[:, jaw].std()


def head_angle_std(motion: np.ndarray, head: HeadModel) -> float:
    return float(np.degrees(head.head_rotation(motion)).std(axis=0).mean())


def test_lively_head_moves_more_than_still(tmp_path, head):
    plans = [plan_for("festival_kal", k, head=level) for k, level in enumerate(("still", "subtle", "moderate", "lively"))]
    entries = make_dataset(tmp_path, head, plans)
    spread = [head_angle_std(load_motion(tmp_path / e["motion"]).motion, head) for e in entries]
    assert spread[0] < 0.3 < spread[3]
    assert spread == sorted(spread), spread


def test_emotion_change_takes_effect_after_its_start_and_not_before(head):
    from model.data.teacher import Teacher
    from model.speech.voices import synthesize

    utterance = synthesize("flite_awb", "We waited by the window for the whole morning, and nobody came.")
    seconds = len(utterance.audio) / 16000
    switch = seconds / 2
    segments = [ControlSegment(0.0, StyleControls(), EmotionControls("neutral")),
                ControlSegment(switch, StyleControls(), EmotionControls("happy", "strong"))]
    motion = Teacher(head.channel_names).animate(utterance.audio, utterance.phones, segments, np.random.default_rng(1))
    curve = smile(motion, head)
    frame = int(switch * 25)
    assert curve[:frame].max() < 0.05
    assert curve[frame + 13:].min() > 0.5  # within about half a second
    # no jump: the largest frame-to-frame step at the switch is a fraction of the change
    assert np.abs(np.diff(curve[frame - 2:frame + 15])).max() < 0.4 * curve[frame + 13:].mean()


def test_teacher_is_deterministic_for_a_seed(head):
    from model.data.teacher import Teacher
    from model.speech.voices import synthesize

    utterance = synthesize("flite_kal", "A quick test of the same seed.")
    segments = [ControlSegment(0.0, StyleControls(head="lively"), EmotionControls("sad", "medium"))]
    teacher = Teacher(head.channel_names)
    first = teacher.animate(utterance.audio, utterance.phones, segments, np.random.default_rng(3))
    again = teacher.animate(utterance.audio, utterance.phones, segments, np.random.default_rng(3))
    other = teacher.animate(utterance.audio, utterance.phones, segments, np.random.default_rng(4))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_blinks_happen_at_a_human_rate(head):
    from model.data.teacher import Teacher

    seconds = 60.0
    audio = np.zeros(int(seconds * 16000), np.float32)
    phones = [Phone("pau", 0.0, seconds)]
    segments = [ControlSegment(0.0, StyleControls(), EmotionControls("neutral"))]
    motion = Teacher(head.channel_names).animate(audio, phones, segments, np.random.default_rng(0))
    blink = motion[:, head.channel_names.index("eyeBlinkLeft")]
    onsets = np.sum((blink[1:] > 0.5) & (blink[:-1] <= 0.5))
    assert 6 <= onsets <= 30  # people blink about 10-20 times a minute
    # silence: a calm, closed mouth
    assert motion[:, head.channel_names.index("jawOpen")].max() < 0.02


def test_planner_keeps_test_voice_and_sentences_apart():
    sentences = {"train": [f"train sentence {k}" for k in range(50)], "val": ["val one", "val two"],
                 "test": ["test one", "test two"]}
    voices = {v: VOICES[v] for v in ("flite_slt", "flite_awb", "flite_rms", "piper_joe")}
    planner = Planner(0, sentences, voices)
    plans = [planner.plan(k) for k in range(400)]
    assert {p.split for p in plans} == {"train", "val", "test"}
    for plan in plans:
        assert (plan.voice in TEST_VOICES) == (plan.split == "test")
        assert set(plan.sentences) <= set(sentences[plan.split])
        assert plan.pitch == 1.0 or VOICES[plan.voice].pitch_control
    assert planner.plan(17) == Planner(0, sentences, voices).plan(17)


def test_loader_reports_bad_clips_and_keeps_good_ones(tmp_path, head):
    entries = make_dataset(tmp_path, head, [plan_for("flite_slt", k) for k in range(5)])
    channels = tuple(head.channel_names)
    nan = load_motion(tmp_path / entries[0]["motion"])
    nan.motion[3, 2] = np.nan
    np.savez(tmp_path / entries[0]["motion"], motion=nan.motion, channels=np.array(channels), fps=25.0,
             meta=np.array("{}"))
    save_motion(tmp_path / entries[1]["motion"], MotionClip(np.zeros((5, 3), np.float32), ("a", "b", "c")))
    short = load_motion(tmp_path / entries[2]["motion"])
    save_motion(tmp_path / entries[2]["motion"], replace(short, motion=short.motion[:-5]))
    (tmp_path / entries[3]["audio"]).write_bytes(b"not audio")
    with open(tmp_path / MANIFEST_FILE, "a") as manifest:
        manifest.write("{not json\n")
        manifest.write(json.dumps({**entries[4], "split": "holdout"}) + "\n")
        manifest.write(json.dumps(entries[4]) + "\n")  # duplicate id
    dataset = open_dataset(tmp_path, channels=channels)
    assert [c.clip_id for c in dataset.clips] == [entries[4]["id"]]
    reasons = " | ".join(b.reason for b in dataset.bad)
    for expected in ("NaN", "channels differ", "frames but the audio lasts", "unreadable", "bad manifest entry",
                     "split 'holdout'", "duplicate id"):
        assert expected in reasons, reasons
    report = subprocess.run([sys.executable, "-m", "model", "data", "check", str(tmp_path)],
                            capture_output=True, text=True, cwd=REPO_ROOT)
    assert report.returncode == 2 and "1 usable clips" in report.stdout and "NaN" in report.stdout
    with pytest.raises(DatasetError, match="not for the 3 channels"):
        open_dataset(tmp_path, channels=("a", "b", "c"))


def test_windows_have_the_previous_window_and_the_captions_in_force(head):
    from model.core.schedule import CaptionSegment
    from model.data.dataset import ClipRecord

    motion = np.arange(250 * 2, dtype=np.float32).reshape(250, 2)
    record = ClipRecord("c", "train", Path("a.wav"), Path("m.npz"),
                        (CaptionSegment(0.0, "calm", "sad"), CaptionSegment(5.0, "calm", "happy")), "v")
    first = window_at(record, motion, 0)
    assert not first.has_previous and first.valid.all() and first.segments == ((0, "calm", "sad"),)
    second = window_at(record, motion, 100)
    assert second.has_previous
    np.testing.assert_array_equal(second.previous, motion[:100])
    assert second.segments == ((0, "calm", "sad"), (25, "calm", "happy"))
    early = window_at(record, motion, 30)  # where generation restarts after a change at 1.2 s
    assert early.has_previous
    np.testing.assert_array_equal(early.previous, np.concatenate([np.repeat(motion[:1], 70, axis=0), motion[:30]]))
    last = window_at(record, motion, 200)
    assert last.valid.sum() == 50 and last.segments == ((0, "calm", "happy"),)
    np.testing.assert_array_equal(last.motion[50:], np.repeat(motion[-1:], 50, axis=0))


def test_random_windows_come_from_the_split(voice_dataset, head):
    root, _ = voice_dataset
    windows = random_windows(open_dataset(root), "train", np.random.default_rng(0))
    for _ in range(20):
        window = next(windows)
        assert window.motion.shape == (WINDOW_FRAMES, head.num_channels) and window.previous.shape == window.motion.shape


def test_synth_command_makes_resumes_and_reproduces_a_dataset(tmp_path):
    command = [sys.executable, "-m", "model", "data", "synth", "--hours", "0.01",
               "--voices", "flite_slt,flite_awb,flite_rms"]
    first = subprocess.run(command + ["--workers", "2", "--out", str(tmp_path / "a")], capture_output=True, text=True,
                           cwd=REPO_ROOT)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["hours"] >= 0.01 and summary["clips"] >= 2
    manifest = (tmp_path / "a" / MANIFEST_FILE).read_text()
    again = subprocess.run(command + ["--out", str(tmp_path / "a")], capture_output=True, text=True, cwd=REPO_ROOT)
    assert again.returncode == 0 and (tmp_path / "a" / MANIFEST_FILE).read_text() == manifest
    other = subprocess.run(command + ["--workers", "1", "--out", str(tmp_path / "b")],
                           capture_output=True, text=True, cwd=REPO_ROOT)
    assert other.returncode == 0, other.stderr
    assert (tmp_path / "b" / MANIFEST_FILE).read_text() == manifest  # same seed, other worker count
    files = sorted(p.name for p in (tmp_path / "a").rglob("*.npz"))
    assert len(files) == summary["clips"]
    check = subprocess.run([sys.executable, "-m", "model", "data", "check", str(tmp_path / "a")],
                           capture_output=True, text=True, cwd=REPO_ROOT)
    assert check.returncode == 0, check.stdout
    wrong = subprocess.run(command + ["--seed", "5", "--out", str(tmp_path / "a")], capture_output=True,
                           text=True, cwd=REPO_ROOT)
    assert wrong.returncode == 2 and "use another folder" in wrong.stderr


def test_teach_command_animates_a_real_recording_from_its_transcript(tmp_path, head):
    """Real speech (LibriVox) + transcript -> forced alignment -> teacher motion."""
    from test_speech import LIBRIVOX, librivox

    stem = "sense_and_sensibility_01_austen_64kb-0930"
    out = tmp_path / "teacher.npz"
    result = subprocess.run(
        [sys.executable, "-m", "model", "data", "teach", "--audio", str(LIBRIVOX / f"{stem}.wav"),
         "--transcript", librivox()[stem], "--out", str(out), "--emotion", "happy", "--intensity", "strong"],
        capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    clip = load_motion(out)
    import soundfile

    seconds = soundfile.info(str(LIBRIVOX / f"{stem}.wav")).duration
    assert abs(clip.num_frames - seconds * 25) <= 1 and clip.channels == tuple(head.channel_names)
    assert clip.meta["head_model"] == OPEN_HEAD_ID
    opening = lip_opening(head.vertices(clip.motion) * 1000, head.regions["lip_pairs"])
    assert opening.max() - opening.min() > 4.0  # it speaks
    assert smile(clip.motion, head).mean() > 0.4
    bad = subprocess.run([sys.executable, "-m", "model", "data", "teach", "--audio", str(tmp_path / "none.wav"),
                          "--transcript", "hello", "--out", str(tmp_path / "x.npz")],
                         capture_output=True, text=True, cwd=REPO_ROOT)
    assert bad.returncode == 2 and "no such file" in bad.stderr and not (tmp_path / "x.npz").exists()
