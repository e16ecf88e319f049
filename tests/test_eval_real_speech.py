"""Real-speech evaluation: lag and correlation on constructed signals, the Debian LibriVox
recordings, mouth opening on the open head, and the whole path on one real recording."""
from __future__ import annotations

import numpy as np
import pytest

from model.core.audio import load_audio
from model.data.teacher import animate_recording
from model.evaluate.real_speech import (
    LIBRIVOX_DIR,
    evaluate_real_speech,
    lag_and_correlation,
    librivox_items,
    mouth_opening,
    plot_real_speech,
    real_speech_markdown,
)
from model.core.head_model import HeadModel

needs_librivox = pytest.mark.skipif(not (LIBRIVOX_DIR / "transcription").is_file(),
                                    reason="Debian package pocketsphinx-testdata not installed")


def _delayed(signal: np.ndarray, frames: int) -> np.ndarray:
    """signal[t - frames], holding the first frame: the same signal, ``frames`` late."""
    return np.concatenate([np.repeat(signal[:1], frames, axis=0), signal[:-frames]])


def _speechlike(frames: int = 120) -> np.ndarray:
    return np.random.default_rng(3).uniform(0, 1, frames).cumsum() % 1.7  # aperiodic, no tie between lags


def test_a_signal_two_frames_late_has_lag_two_and_correlation_one_there():
    reference = _speechlike()
    lag, at_zero, best = lag_and_correlation(_delayed(reference, 2), reference)
    assert lag == 2
    assert best == pytest.approx(1.0, abs=1e-12)
    assert at_zero < best


def test_an_early_model_has_a_negative_lag():
    reference = _speechlike()
    early = np.concatenate([reference[3:], np.repeat(reference[-1:], 3)])  # early[t] = reference[t + 3]
    lag, _, best = lag_and_correlation(early, reference)
    assert lag == -3
    assert best == pytest.approx(1.0, abs=1e-12)


def test_identical_signals_have_lag_zero_and_lengths_are_cut_to_the_shorter():
    reference = _speechlike()
    assert lag_and_correlation(reference[:-1], reference) == (0, pytest.approx(1.0), pytest.approx(1.0))
    lag, at_zero, _ = lag_and_correlation(-reference, reference)
    assert at_zero == pytest.approx(-1.0)


def test_a_shift_beyond_max_lag_is_not_found():
    reference = _speechlike()
    lag, _, best = lag_and_correlation(_delayed(reference, 4), reference, max_lag=2)
    assert abs(lag) <= 2 and best < 1.0


def test_a_constant_signal_is_refused():
    with pytest.raises(ValueError, match="constant"):
        lag_and_correlation(np.full(50, 3.0), _speechlike(50))
    with pytest.raises(ValueError, match="too few"):
        lag_and_correlation(_speechlike(5), _speechlike(5), max_lag=5)


@needs_librivox
def test_librivox_items_reads_the_debian_recordings():
    items = librivox_items()
    assert len(items) == 5
    for wav, transcript in items:
        assert wav.is_file() and wav.suffix == ".wav"
        assert transcript and "<s>" not in transcript and "(" not in transcript
    assert items[1][1] == "he was not an ill disposed young man"
    from test_speech import librivox  # the speech tests' own reading of the same file

    assert {wav.stem: transcript for wav, transcript in items} == librivox()


def test_librivox_items_names_the_package_when_the_folder_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="pocketsphinx-testdata"):
        librivox_items(tmp_path / "nowhere")


def test_an_open_jaw_opens_the_mouth(open_head_file):
    head = HeadModel.load(open_head_file)
    motion = head.neutral_motion(2)
    motion[1, head.channel_names.index("jawOpen")] = 0.5
    rest, open_ = mouth_opening(head, motion)
    assert open_ > rest + 2.0  # mm: half a jaw opening parts the lips visibly


@needs_librivox
def test_real_recording_teacher_against_itself_and_two_frames_late(open_head_file, tmp_path):
    head = HeadModel.load(open_head_file)
    wav, transcript = librivox_items()[1]  # the shortest, 3 s
    teacher, _ = animate_recording(load_audio(wav), transcript, head.channel_names, seed=0)

    def the_teacher(path):  # a "model" that is the teacher itself, run afresh on the file
        return animate_recording(load_audio(path), transcript, head.channel_names, seed=0)[0]

    same = evaluate_real_speech(the_teacher, head, [(wav, transcript)])
    (recording,) = same.recordings
    assert recording.lag_frames == 0 and same.pooled_lag_frames == 0
    assert recording.correlation == pytest.approx(1.0, abs=1e-9)
    assert recording.seconds == pytest.approx(2.99, abs=0.05)
    assert recording.teacher_mm.std() > 0.5  # the mouth really moves on real speech
    assert same.meets_aims
    # lip events, scored on the recording's alignment: the same motion gives the same counts
    assert same.model_events == same.teacher_events and recording.phones
    assert same.teacher_events.closures >= 1 and same.teacher_events.closure_share == 1.0

    late = evaluate_real_speech(lambda path: _delayed(teacher, 2), head, [(wav, transcript)])
    assert late.recordings[0].lag_frames == 2 and late.pooled_lag_frames == 2
    assert late.recordings[0].best_correlation == pytest.approx(1.0, abs=1e-9)
    assert late.pooled_correlation < 1.0 and not late.meets_aims

    table = real_speech_markdown(late)
    assert recording.name in table and "+2" in table and "not met" in table
    assert "lips close on /p b m/" in table
    png = plot_real_speech(late, tmp_path / "real_speech.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
