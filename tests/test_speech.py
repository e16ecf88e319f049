"""The speech side of the data engine with the real engines: every voice, rate and pitch,
Scheme-injection safety, forced alignment of LibriVox recordings, the sentence splits."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from model.core.audio import SAMPLE_RATE, load_audio
from model.speech import festival_engine
from model.speech.alignment import (
    align,
    align_phone_sequence,
    align_words,
    onset_differences,
    pronunciation,
    transcript_words,
)
from model.speech.phones import FLITE_US, PHONES, SILENCE
from model.speech.sentences import SPLITS, load_sentences, normalise, sentence_split, sentences_in
from model.speech.voices import VOICES, SpeechError, available_voices, synthesize, timed_phones

BILABIAL_TEXT = "Maybe the big brown bear will move my boat by the pool tomorrow morning."
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
VOICE_IDS = sorted(VOICES)
ENGINE_VOICES = ["flite_slt", "festival_kal", "festival_slt", "piper_joe"]  # one per engine kind


def assert_phones_cover(phones, duration: float) -> None:
    assert phones[0].start == 0.0
    assert phones[-1].end == pytest.approx(duration, abs=1e-9)
    for before, after in zip(phones, phones[1:]):
        assert after.start == before.end
    assert all(phone.end > phone.start for phone in phones)
    assert {phone.label for phone in phones} <= set(PHONES)


def mean_f0(audio: np.ndarray, low: float = 60.0, high: float = 400.0) -> float:
    """Median autocorrelation F0 (Hz) over the loud, clearly periodic 40 ms frames."""
    frame, hop = int(0.04 * SAMPLE_RATE), int(0.01 * SAMPLE_RATE)
    shortest, longest = int(SAMPLE_RATE / high), int(SAMPLE_RATE / low)
    loudness = 0.3 * np.sqrt(np.mean(audio**2))
    estimates = []
    for start in range(0, audio.size - frame, hop):
        window = audio[start:start + frame] - audio[start:start + frame].mean()
        if np.sqrt(np.mean(window**2)) < loudness:
            continue
        correlation = np.correlate(window, window, "full")[frame - 1:]
        correlation = correlation / correlation[0]
        lag = shortest + int(np.argmax(correlation[shortest:longest]))
        if correlation[lag] > 0.5:
            estimates.append(SAMPLE_RATE / lag)
    return float(np.median(estimates))


def test_every_voice_is_installed_here():
    assert available_voices() == list(VOICES)
    assert len({voice.engine_voice for voice in VOICES.values()}) >= 8


@pytest.mark.parametrize("voice_id", VOICE_IDS)
def test_voice_speaks_with_canonical_contiguous_phones(voice_id):
    utterance = synthesize(voice_id, BILABIAL_TEXT)
    assert utterance.audio.dtype == np.float32 and utterance.audio.ndim == 1
    assert utterance.voice_id == voice_id and utterance.text == BILABIAL_TEXT
    assert 1.5 < utterance.duration < 10.0
    assert np.sqrt(np.mean(utterance.audio**2)) > 0.01
    assert_phones_cover(utterance.phones, utterance.audio.size / SAMPLE_RATE)
    expected = [p for word in transcript_words(BILABIAL_TEXT) for p in pronunciation(word) if p in "pbm"]
    assert [p.label for p in utterance.phones if p.label in ("p", "b", "m")] == expected
    # the engine's own timings agree with forced alignment of its audio
    reference = align_phone_sequence(utterance.audio, [p.label for p in utterance.phones])
    differences = onset_differences(utterance.phones, reference)
    assert np.mean(np.abs(differences)) < 0.035
    assert abs(np.mean(differences)) < 0.025


@pytest.mark.parametrize("voice_id", VOICE_IDS)
def test_rate_shortens_speech(voice_id):
    fast = synthesize(voice_id, BILABIAL_TEXT, rate=1.3)
    slow = synthesize(voice_id, BILABIAL_TEXT, rate=0.8)
    assert fast.duration < 0.9 * slow.duration


@pytest.mark.parametrize("voice_id", [v for v in VOICE_IDS if VOICES[v].pitch_control])
def test_pitch_scales_f0(voice_id):
    high = mean_f0(synthesize(voice_id, BILABIAL_TEXT, pitch=1.2).audio)
    low = mean_f0(synthesize(voice_id, BILABIAL_TEXT, pitch=0.85).audio)
    assert high / low == pytest.approx(1.2 / 0.85, rel=0.1)


@pytest.mark.parametrize("voice_id", [v for v in VOICE_IDS if not VOICES[v].pitch_control])
def test_pitch_refused_where_the_engine_cannot_do_it(voice_id):
    with pytest.raises(ValueError, match="cannot change pitch"):
        synthesize(voice_id, BILABIAL_TEXT, pitch=1.1)


@pytest.mark.parametrize("voice_id", ENGINE_VOICES)
def test_scheme_injection_is_spoken_not_run(voice_id, tmp_path):
    target = tmp_path / "injected"
    text = f'Bob said ") (system "touch {target}") (" and \\" (maybe); then he left.'
    utterance = synthesize(voice_id, text)
    assert not target.exists()
    assert utterance.text == text
    assert [p.label for p in utterance.phones if p.label != SILENCE][:3] == ["b", "aa", "b"]


def test_scheme_string_reads_back_verbatim(tmp_path):
    text = 'a "quoted" \\ back\\slash (paren) ;semicolon \\" done'
    script = tmp_path / "echo.scm"
    script.write_text(f'(format t "%s" {festival_engine.scheme_string(text)})')
    from model.speech.voices import run_engine

    assert run_engine(["festival", "--batch", str(script)], tmp_path, "festival") == text


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown voice"):
        synthesize("flite_nobody", "Hello there.")
    with pytest.raises(ValueError, match="rate"):
        synthesize("flite_slt", "Hello there.", rate=3.0)
    with pytest.raises(ValueError, match="nothing to speak"):
        synthesize("flite_slt", " ... ")
    with pytest.raises(ValueError, match="cannot read"):
        synthesize("flite_slt", "Hello \u4e16\u754c")


def test_timed_phones_checks_and_fixes_engine_timings():
    ends = [("pau", 0.2), ("b", 0.3), ("aa", 0.5), ("b", 0.6), ("pau", 0.9)]
    # a diphone voice's final pause runs past the audio: clipped
    phones = timed_phones(ends, 0.8, FLITE_US, "test")
    assert [p.label for p in phones] == ["pau", "b", "aa", "b", "pau"] and phones[-1].end == 0.8
    # audio a little longer than the timings: the final pause is stretched
    assert timed_phones(ends, 0.93, FLITE_US, "test")[-1].end == 0.93
    with pytest.raises(SpeechError, match="'zz'"):
        timed_phones([("pau", 0.1), ("zz", 0.2)], 0.2, FLITE_US, "test")
    with pytest.raises(SpeechError, match="audio lasts"):
        timed_phones(ends, 0.5, FLITE_US, "test")  # speech runs 0.1 s past the audio
    with pytest.raises(SpeechError, match="audio lasts"):
        timed_phones(ends, 1.2, FLITE_US, "test")  # 0.3 s of audio without phones
    with pytest.raises(SpeechError, match="backwards"):
        timed_phones([("b", 0.3), ("aa", 0.2)], 0.3, FLITE_US, "test")


def librivox() -> dict[str, str]:
    """LibriVox file stem -> transcript, from pocketsphinx-testdata."""
    lines = (LIBRIVOX / "transcription").read_text().splitlines()
    return {
        re.search(r"\((\S+)\)\s*$", line).group(1): re.sub(r"</?s>|\(\S+\)\s*$", "", line).strip()
        for line in lines
    }


@pytest.mark.parametrize("stem", [f"sense_and_sensibility_01_austen_64kb-{n}" for n in ("0880", "0930")])
def test_alignment_of_librivox_recording(stem):
    transcript = librivox()[stem]
    audio = load_audio(LIBRIVOX / f"{stem}.wav")
    phones = align(audio, transcript)
    assert_phones_cover(phones, audio.size / SAMPLE_RATE)
    spoken = [p for p in phones if p.label != SILENCE]
    assert 0.05 < np.mean([p.end - p.start for p in spoken]) < 0.15
    words = align_words(audio, transcript)
    assert [word.word for word in words] == transcript.split()
    assert all(a.end <= b.start for a, b in zip(words, words[1:]))
    assert [p for word in words for p in word.phones] == spoken


def test_alignment_names_unknown_words_and_takes_their_pronunciations():
    audio = load_audio(LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0880.wav")
    with pytest.raises(SpeechError, match="zorblax, 1984"):
        align(audio, "he was not an ill disposed young zorblax 1984")
    # the recording says "man"; a made-up word pronounced like it aligns the same way
    phones = align(audio, "he was not an ill disposed young manzorb", {"manzorb": "M AE1 N"})
    assert phones == align(audio, "he was not an ill disposed young man")


def test_sentences_are_many_varied_and_alignable():
    sentences = load_sentences()
    assert len(sentences) >= 700
    assert len({normalise(s) for s in sentences}) == len(sentences)
    for sentence in sentences:
        assert 5 <= len(sentence.split()) <= 25, sentence
        assert not re.search(r"\d", sentence), sentence
    unknown = {w for s in sentences for w in transcript_words(s) if pronunciation(w) is None}
    assert not unknown


def test_splits_are_disjoint_stable_and_cover_every_phone():
    by_split = {split: sentences_in(split) for split in SPLITS}
    assert sum(map(len, by_split.values())) == len(load_sentences())
    assert 0.75 < len(by_split["train"]) / len(load_sentences()) < 0.85
    normalised = [{normalise(s) for s in sentences} for sentences in by_split.values()]
    assert not (normalised[0] & normalised[1] or normalised[0] & normalised[2] or normalised[1] & normalised[2])
    # punctuation and case do not move a sentence; the hash never changes
    assert sentence_split("Please put the blue bowl back on the top shelf.") == sentence_split(
        "please put the BLUE bowl back on the top shelf"
    )
    assert [sentence_split(s) for s in ("One", "five", "seven!")] == ["train", "test", "val"]
    for split, sentences in by_split.items():
        phones = {p for s in sentences for w in transcript_words(s) for p in pronunciation(w)}
        assert phones == set(PHONES) - {SILENCE}, split

