"""Generation (model.generate), caption schedules (model.core.schedule) and the ``generate``
command, on a tiny checkpoint trained here on synthetic speech-driven motion, with the
weight-free log-mel speech encoder and the MiniLM text encoder."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from model.__main__ import main
from model.ar.model import CapTalkAR
from model.core.audio import frame_count, save_audio
from model.checkpoint import save_weights
from model.core.checkpoint_manifest import CheckpointError, write_manifest
from model.codec.normalise import ChannelStats
from model.encoders import speech_encoder, text_encoder
from model.core.contract import GenerationError, GenerationOptions
from model.generate import CAPTION_CROSSFADE_FRAMES, GenerationCancelled, Generator, plan_windows
from model.smoothing import StreamingSmoother, smoothing_windows
from model.core.motion_file import load_motion
from model.core.schedule import Schedule, ScheduleError, load_schedule, parse_schedule, start_frame
from test_ar import (CHANNELS, EMOTIONS, STYLES, WINDOW, CaptionTable, synthetic_audio, synthetic_clips, tiny_ar_config,
                     train_ar, train_codec, window_batch)

STYLE, OTHER_STYLE = "a speaker who opens the mouth wide", "someone who barely moves the mouth"
RAW = GenerationOptions(smoothing=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint folder with a codec and AR model trained briefly on synthetic clips."""
    clips = synthetic_clips(24, 8.0, seed=0)
    speech, text = speech_encoder("logmel"), text_encoder("minilm")
    for clip in clips:
        clip["features"] = speech.features(clip["audio"])
    captions = CaptionTable(text, list(STYLES) + list(EMOTIONS))
    stats = ChannelStats.from_motions(c["motion"] for c in clips)
    codec = train_codec(clips, stats, steps=150)
    ar = CapTalkAR(tiny_ar_config(speech.dim, text.dim))
    rng = np.random.default_rng(1)

    def batches(step):
        picks = [(int(c), int(rng.integers(0, len(clips[c]["motion"]) - 50)))
                 for c in rng.integers(len(clips), size=12)]
        return window_batch(clips, picks, stats, captions)

    train_ar(ar, codec, batches, steps=80)
    folder = tmp_path_factory.mktemp("checkpoint")
    write_manifest(folder, {
        "head_model": "synthetic-test-head", "channels": list(CHANNELS), "channel_signature": "synthetic",
        "stats": stats.to_dict(), "codec": codec.config.to_dict(), "ar": ar.config.to_dict(),
        "speech_encoder": speech.encoder_id, "text_encoder": text.encoder_id,
        "training": {"codec_steps": 150, "ar_steps": 80},
    })
    save_weights(folder, "codec", codec)
    save_weights(folder, "ar", ar)
    return folder


@pytest.fixture(scope="module")
def generator(checkpoint) -> Generator:
    return Generator.load(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return synthetic_audio(9.7, seed=77)


def normalised(generator: Generator, motion: np.ndarray) -> np.ndarray:
    return generator.stats.normalise(motion)


# ----------------------------------------------------------------------------- generation


def test_generate_returns_real_unit_motion_for_every_frame(generator, audio):
    result = generator.generate(audio, parse_schedule(None, STYLE, "happy"), GenerationOptions(seed=1))[0]
    assert result.motion.shape == (frame_count(audio.size), len(CHANNELS)) == (242, 6)
    assert result.motion.dtype == np.float32 and np.isfinite(result.motion).all()
    assert result.channels == CHANNELS and result.fps == 25.0
    # real units, not the normalised space: the data's means and spreads come back (motion left
    # normalised would spread by ~1 on channels whose data spreads by 0.01). The mean may sit
    # 2 std off on jawOpen: the caption asks for a wide mouth, and the tiny model is barely
    # trained (how far depends on the CPU's float kernels), so it is held to 3.
    mean, std = (np.asarray(v) for v in (generator.stats.mean, generator.stats.std))
    assert np.all(np.abs(result.motion.mean(0) - mean) < 3 * std)
    assert np.all(result.motion.std(0) < 3 * std)
    meta = result.meta
    assert meta["checkpoint"] == str(generator.folder) and meta["seed"] == 1
    assert meta["captions"] == {"style": STYLE, "emotion": "happy"}
    assert meta["options"]["guidance"] == 2.0 and meta["speech_encoder"] == "logmel-80"
    assert set(meta["timings"]) == {"speech_encoder_s", "text_encoder_s", "ar_s", "decoder_s", "total_s"}
    assert meta["windows"] == [[0, 100], [100, 200], [200, 242]]
    json.dumps(meta)


def test_sampling_is_deterministic_per_seed_and_differs_across_seeds(generator, audio):
    schedule = parse_schedule(None, STYLE, "happy")
    first = generator.generate(audio, schedule, GenerationOptions(seed=5))[0].motion
    again = generator.generate(audio, schedule, GenerationOptions(seed=5))[0].motion
    other = generator.generate(audio, schedule, GenerationOptions(seed=6))[0].motion
    assert np.array_equal(first, again)
    assert not np.allclose(first, other, atol=1e-3)


def test_takes_are_separate_samples_with_their_own_seeds(generator, audio):
    takes = generator.generate(audio, None, GenerationOptions(seed=3, takes=2))
    assert [t.meta["seed"] for t in takes] == [3, 4] and [t.meta["take"] for t in takes] == [1, 2]
    assert not np.allclose(takes[0].motion, takes[1].motion, atol=1e-3)


def test_streaming_gives_the_one_shot_motion(generator, audio):
    schedule = parse_schedule([{"start": 0, "style": STYLE, "emotion": "happy"}, {"start": 5.3, "emotion": "neutral"}])
    options = GenerationOptions(seed=2)  # with smoothing: chunks are delayed, values identical
    chunks = list(generator.iter_windows(audio, schedule, options))
    assert [c.window for c in chunks] == [0, 1, 2, 3] and all(c.windows == 4 for c in chunks)
    assert [c.start for c in chunks] == list(np.cumsum([0] + [c.motion.shape[1] for c in chunks[:-1]]))
    streamed = np.concatenate([c.motion for c in chunks], axis=1)[0]
    assert np.array_equal(streamed, generator.generate(audio, schedule, options)[0].motion)


def border_and_inner_steps(motion: np.ndarray, borders) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: the largest frame-to-frame step across the borders, and inside windows."""
    steps = np.abs(np.diff(motion, axis=0))  # step i: frame i -> i + 1
    at_border = np.zeros(len(steps), bool)
    at_border[[b - 1 for b in borders]] = True
    return steps[at_border].max(0), steps[~at_border].max(0)


def test_window_borders_are_continuous(generator):
    long_audio = synthetic_audio(20.0, seed=78)
    schedule = parse_schedule(None, STYLE, "neutral")
    result = generator.generate(long_audio, schedule, RAW)[0]
    border, inner = border_and_inner_steps(normalised(generator, result.motion), [100, 200, 300, 400])
    assert np.all(border <= inner)
    # what the blend faded out: a tiny model's decoder leaves jumps of about one std
    unblended = generator.generate(long_audio, schedule, GenerationOptions(smoothing=False, border_blend=0))[0]
    raw_border, raw_inner = border_and_inner_steps(normalised(generator, unblended.motion), [100, 200, 300, 400])
    offsets = result.meta["border_offsets"]
    print(f"\nlargest steps per channel (data stds): borders {border.round(2)}, inside {inner.round(2)}; "
          f"without blending: borders {raw_border.round(2)}, inside {raw_inner.round(2)}; blended offsets {offsets}")
    assert len(offsets) == 4 and unblended.meta["border_offsets"] == []
    # the blend touches only the frames after a border
    assert np.array_equal(result.motion[:100], unblended.motion[:100])


def test_caption_change_acts_after_its_time_only(generator, audio):
    base = parse_schedule(None, STYLE, "happy")
    changed = parse_schedule([{"start": 5.3, "style": OTHER_STYLE, "emotion": "neutral"}], STYLE, "happy")
    change = start_frame(5.3)
    assert change == 133 and changed.change_frames() == (133,)
    for options in (GenerationOptions(seed=0), RAW):  # smoothing runs per caption section
        before = generator.generate(audio, base, options)[0]
        after = generator.generate(audio, changed, options)[0]
        assert np.array_equal(before.motion[:change], after.motion[:change])
        assert not np.allclose(before.motion[change:change + 12], after.motion[change:change + 12], atol=1e-3)
        assert after.meta["windows"] == [[0, 100], [100, 133], [133, 233], [233, 242]]
    # no jump at the change: the new window continues the frames before it
    border, inner = border_and_inner_steps(normalised(generator, after.motion), [100, 133, 233])
    assert np.all(border <= inner)


def test_an_early_change_continues_from_a_padded_prefix(generator, audio):
    base = generator.generate(audio, parse_schedule(None, STYLE, "happy"), RAW)[0]
    early = generator.generate(audio, parse_schedule([{"start": 1.0, "emotion": "neutral"}], STYLE, "happy"), RAW)[0]
    assert early.meta["windows"][:2] == [[0, 25], [25, 125]]
    assert np.array_equal(base.motion[:25], early.motion[:25])
    border, inner = border_and_inner_steps(normalised(generator, early.motion), [25, 125, 225])
    assert np.all(border <= inner)


def test_a_change_on_a_window_border_eases_in_from_the_old_captions(generator, audio):
    """At a change on a border the cut window has no frames past it: one more window is made
    there under the old captions (what a run without the change makes), and the new
    captions' window is faded in over it, so even the smoothed frames before the change
    are untouched and the motion leaves the old path gradually."""
    base = parse_schedule(None, STYLE, "happy")
    changed = parse_schedule([{"start": 4.0, "style": OTHER_STYLE, "emotion": "neutral"}], STYLE, "happy")
    assert changed.change_frames() == (100,)
    fade = CAPTION_CROSSFADE_FRAMES
    for options in (GenerationOptions(seed=0), RAW):
        before = generator.generate(audio, base, options)[0].motion
        after = generator.generate(audio, changed, options)[0].motion
        assert np.array_equal(before[:100], after[:100])
        apart = np.abs(after - before).max(axis=1)  # (T,) how far the switched run left the old path
        assert apart[100] < 0.25 * apart[100 + fade:100 + 2 * fade].max()


def test_guidance_one_without_captions_is_the_unconditional_model(generator, audio):
    none = generator.generate(audio, None, GenerationOptions(seed=4, guidance=1.0))[0].motion
    # no captions: every guidance condition is the same single pass
    assert np.array_equal(none, generator.generate(audio, None, GenerationOptions(seed=4, guidance=3.0))[0].motion)
    # guidance 0 with captions keeps only the no-caption pass: the unconditional model
    captions = parse_schedule(None, STYLE, "happy")
    unconditional = generator.generate(audio, captions, GenerationOptions(seed=4, guidance=0.0))[0]
    assert np.array_equal(none, unconditional.motion)
    conditional = generator.generate(audio, captions, GenerationOptions(seed=4, guidance=1.0))[0]
    assert not np.allclose(none, conditional.motion, atol=1e-3)


def test_progress_reaches_one_and_cancel_stops_between_windows(generator, audio):
    reports = []
    generator.generate(audio, None, RAW, progress=lambda f, m: reports.append((f, m)))
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert reports[-1][1] == "done" and sum(m.startswith("window") for _, m in reports) == 3

    cancel = threading.Event()
    seen = []

    def stop_after_first_window(fraction, message):
        seen.append(message)
        if message.startswith("window"):
            cancel.set()

    with pytest.raises(GenerationCancelled, match="after 100 of 242 frames"):
        generator.generate(audio, None, RAW, progress=stop_after_first_window, cancel=cancel)
    assert sum(m.startswith("window") for m in seen) == 1
    with pytest.raises(GenerationCancelled, match="after 0 of"):  # already set: nothing is computed
        list(generator.iter_windows(audio, None, RAW, cancel=cancel))


def test_a_checkpoint_for_other_channels_is_refused(checkpoint):
    Generator.load(checkpoint, device="cpu", head_channels=list(CHANNELS))  # the right rig loads
    with pytest.raises(CheckpointError, match="does not fit head model 'open-head'.*missing"):
        Generator.load(checkpoint, device="cpu", head_channels=list(CHANNELS[:4]) + ["eyeBlinkLeft"],
                       head_model="open-head")


def test_load_errors_are_clear(tmp_path, checkpoint):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        Generator.load(tmp_path / "missing", device="cpu")
    with pytest.raises(CheckpointError, match="not a CapTalk checkpoint"):
        Generator.load(tmp_path, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(GenerationError, match="no CUDA"):
            Generator.load(checkpoint, device="cuda")
    with pytest.raises(GenerationError, match="top_p"):
        GenerationOptions(top_p=0.0)


def test_generation_time_for_a_minute_of_audio(generator):
    """Not a timed assertion: prints where the time goes (see the report)."""
    minute = synthetic_audio(60.0, seed=79)
    options = GenerationOptions(seed=0)
    started = time.perf_counter()
    result = generator.generate(minute, parse_schedule(None, STYLE, "happy"), options)[0]
    wall = time.perf_counter() - started
    timings = result.meta["timings"]
    print(f"\n60 s of audio, tiny model, CPU 1 thread: {wall:.2f} s wall; " +
          ", ".join(f"{k} {v:.3f}" for k, v in timings.items()))
    assert result.motion.shape[0] == 1500 and all(v >= 0 for v in timings.values())


# ----------------------------------------------------------------------------- smoothing and windows


def test_smoothing_matches_savitzky_golay_per_section_however_streamed():
    from scipy.signal import savgol_filter

    windows = smoothing_windows(["jawOpen", "head.rx", "jaw.rx", "eye_left.ry", "global.rz"])
    assert windows.tolist() == [5, 9, 5, 5, 9]
    frames = np.random.default_rng(0).normal(size=(2, 57, 5)).astype(np.float32)
    expected = np.stack([savgol_filter(frames[..., c], w, 2, axis=1, mode="interp") for c, w in enumerate(windows)], -1)
    outputs = []
    for pieces in ([57], [1] * 57, [3, 20, 1, 33]):
        smoother, parts, first = StreamingSmoother(windows), [], 0
        for count in pieces:
            parts.append(smoother.push(frames[:, first:first + count]))
            first += count
        parts.append(smoother.end_section())
        outputs.append(np.concatenate(parts, axis=1))
    assert np.allclose(outputs[0], expected, atol=1e-5)
    assert all(np.array_equal(outputs[0], o) for o in outputs[1:])
    short = StreamingSmoother(windows)  # shorter than a window: left as it is
    assert np.array_equal(np.concatenate([short.push(frames[:, :4]), short.end_section()], 1), frames[:, :4])


def test_a_later_section_starts_with_the_previous_sections_frames_as_neighbours():
    """No edge rule at a caption change: its polynomial overshoots at the section start
    (a head-pitch step at the change), while the raw motion runs on continuously."""
    from scipy.signal import savgol_filter

    windows = smoothing_windows(["jawOpen", "head.rx"])
    frames = np.random.default_rng(1).normal(size=(2, 60, 2)).astype(np.float32)
    change = 31

    def expected(x):
        return np.stack([savgol_filter(x[..., c], w, 2, axis=1, mode="interp") for c, w in enumerate(windows)], -1)

    outputs = []
    for pieces in ([29], [1] * 29, [7, 22]):
        smoother = StreamingSmoother(windows)
        parts = [smoother.push(frames[:, :change]), smoother.end_section()]
        first = change
        for count in pieces:
            parts.append(smoother.push(frames[:, first:first + count]))
            first += count
        parts.append(smoother.end_section())
        outputs.append(np.concatenate(parts, axis=1))
    assert np.allclose(outputs[0][:, :change], expected(frames[:, :change]), atol=1e-5)  # untouched by what follows
    assert np.allclose(outputs[0][:, change:], expected(frames[:, change - 4:])[:, 4:], atol=1e-5)
    assert all(np.array_equal(outputs[0], o) for o in outputs[1:])
    assert not np.allclose(outputs[0][:, change:change + 2], expected(frames[:, change:])[:, :2], atol=1e-3)


def test_window_plan_cuts_at_changes():
    assert plan_windows(243, [], WINDOW) == [(0, 100), (100, 200), (200, 243)]
    assert plan_windows(243, [133], WINDOW) == [(0, 100), (100, 133), (133, 233), (233, 243)]
    assert plan_windows(300, [100, 150], WINDOW) == [(0, 100), (100, 150), (150, 250), (250, 300)]
    assert plan_windows(8, [], WINDOW) == [(0, 8)]


# ----------------------------------------------------------------------------- schedules


def test_schedule_parsing_sorts_fills_in_and_inherits():
    schedule = parse_schedule([{"start": 6, "emotion": "sad"}, {"start": 2.5, "style": "lively", "emotion": "happy"}],
                              style="calm", emotion="neutral")
    assert [(s.start, s.style, s.emotion) for s in schedule.segments] == [
        (0.0, "calm", "neutral"), (2.5, "lively", "happy"), (6.0, "lively", "sad")]
    assert schedule.change_frames() == (63, 150)  # first frame at or after each start
    assert schedule.window(100, 100) == ((0, "lively", "happy"), (50, "lively", "sad"))
    assert schedule.at_frame(62).style == "calm" and schedule.at_frame(63).style == "lively"
    first_at_zero = parse_schedule([{"style": "  quiet  "}], style="ignored")
    assert [(s.start, s.style, s.emotion) for s in first_at_zero.segments] == [(0.0, "quiet", "")]
    assert parse_schedule(None).segments[0].style == "" and not Schedule.constant().has_changes
    assert parse_schedule(schedule.to_list()) == schedule


@pytest.mark.parametrize("entries, message", [
    ([{"start": -1}], "finite number of seconds >= 0"),
    ([{"start": "1"}], "number of seconds"),
    ([{"start": 1}, {"style": "x"}], "start is missing"),
    ([{"start": 1, "emtion": "sad"}], "unknown key"),
    ([{"start": 1, "style": "x" * 1001}], "1001 characters; the limit is 1000"),
    ([{"start": 1, "style": 3}], "style must be text"),
    ([{"start": 1.001}, {"start": 1.02}], "same motion frame"),
    ([{"start": 2.0}, {"start": 2.0}], "same motion frame"),
])
def test_bad_schedules_are_refused_clearly(entries, message):
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(entries)


def test_schedule_files_and_duration(tmp_path, generator, audio):
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps({"segments": [{"start": 0, "style": STYLE}, {"start": 4, "emotion": "happy"}]}))
    assert load_schedule(path).segments[1].emotion == "happy"
    path.write_text("[{\"start\": 0,")
    with pytest.raises(ScheduleError, match="not readable JSON"):
        load_schedule(path)
    with pytest.raises(ScheduleError, match="does not exist"):
        load_schedule(tmp_path / "none.json")
    with pytest.raises(ScheduleError, match="after the end of the audio"):
        generator.iter_windows(audio, parse_schedule([{"start": 12.0, "emotion": "sad"}]))


# ----------------------------------------------------------------------------- command line


def test_generate_command_writes_a_motion_file(tmp_path, checkpoint, audio, capsys):
    wav = save_audio(tmp_path / "speech.wav", audio)
    schedule = tmp_path / "schedule.json"
    schedule.write_text(json.dumps([{"start": 5.3, "emotion": "neutral"}]))
    out = tmp_path / "motion.npz"
    status = main(["generate", "--audio", str(wav), "--style", STYLE, "--emotion", "happy", "--schedule", str(schedule),
                   "--checkpoint", str(checkpoint), "--device", "cpu", "--seed", "7", "--guidance", "1.5",
                   "--out", str(out)])
    assert status == 0 and f"motion: {out} (242 frames" in capsys.readouterr().out
    clip = load_motion(out)
    assert clip.motion.shape == (242, 6) and clip.channels == CHANNELS and clip.fps == 25.0
    assert clip.meta["checkpoint"] == str(checkpoint) and clip.meta["seed"] == 7 and clip.meta["audio"] == str(wav)
    assert clip.meta["captions"] == {"style": STYLE, "emotion": "happy"}
    assert clip.meta["schedule"][1] == {"start": 5.3, "style": STYLE, "emotion": "neutral"}
    assert clip.meta["options"]["guidance"] == 1.5 and clip.meta["timings"]["ar_s"] > 0

    takes = main(["generate", "--audio", str(wav), "--checkpoint", str(checkpoint), "--device", "cpu", "--takes", "2",
                  "--out", str(out)])
    assert takes == 0 and load_motion(tmp_path / "motion_take2.npz").meta["seed"] == 1


def test_generate_command_errors_are_one_line_with_status_2(tmp_path, checkpoint, audio, capsys):
    wav = save_audio(tmp_path / "speech.wav", audio)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    cases = [
        (["--audio", str(tmp_path / "bad.wav"), "--checkpoint", str(checkpoint)], "not a readable audio file"),
        (["--audio", str(wav), "--checkpoint", str(tmp_path / "nowhere")], "no checkpoint at"),
        (["--audio", str(wav), "--checkpoint", str(checkpoint), "--schedule", str(tmp_path / "no.json")],
         "does not exist"),
        (["--audio", str(wav), "--checkpoint", str(checkpoint), "--top-p", "2"], "top_p"),
    ]
    for arguments, message in cases:
        assert main(["generate", *arguments, "--device", "cpu", "--out", str(tmp_path / "x.npz")]) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and message in error and error.count("\n") == 1
    # a fresh process, default checkpoint location (nothing is installed there in a checkout)
    from model.core.paths import default_checkpoint_dir

    if not (default_checkpoint_dir() / "captalk.json").exists():
        run = subprocess.run([sys.executable, "-m", "model", "generate", "--audio", str(wav), "--out",
                              str(tmp_path / "y.npz")], capture_output=True, text=True,
                             cwd=str(default_checkpoint_dir().parents[1]))
        assert run.returncode == 2 and "no checkpoint at" in run.stderr and "--checkpoint DIR" in run.stderr


def test_cancel_during_speech_encoding_of_a_long_file_stops_the_job():
    """With the default model (Whisper, 30 s chunks), a cancel set once the job reports that
    it is encoding speech stops it before the file is encoded: the stream has encoded no
    chunk of the 10-minute file (the whole-clip encoding used to run first, uninterruptible),
    and a run left alone encodes chunks only as its windows need them."""
    from model.core.paths import default_checkpoint_dir

    generator = Generator.load(default_checkpoint_dir(), device="cpu")
    speech, _ = soundfile_speech(600.0)
    cancel, messages = threading.Event(), []

    def progress(fraction, message):
        messages.append(message)
        if message == "encoding speech":
            cancel.set()

    with pytest.raises(GenerationCancelled, match=r"after 0 of 15000 frames \(0 speech-encoder chunks encoded\)"):
        generator.generate(speech, None, RAW, progress=progress, cancel=cancel)
    assert messages[0] == "encoding speech" and not any(m.startswith("window") for m in messages)
    stream = generator.iter_windows(speech, None, RAW)
    first = next(iter(stream))
    assert first.start == 0 and first.motion.shape[1] == WINDOW_DEFAULT
    assert stream._feed.chunks_encoded == 1  # the first window waited for one 30 s chunk of 24


WINDOW_DEFAULT = 100


def soundfile_speech(seconds: float) -> tuple[np.ndarray, int]:
    """The repository's speech sample repeated to ``seconds`` (16 kHz float32)."""
    from model.core.audio import SAMPLE_RATE, load_audio
    from pathlib import Path

    voice = load_audio(Path(__file__).resolve().parents[1] / "samples" / "speech_sample.wav")
    count = int(seconds * SAMPLE_RATE)
    return np.tile(voice, int(np.ceil(count / voice.size)))[:count].astype(np.float32), SAMPLE_RATE
