"""Speech and text encoders with their real weights (Whisper tiny.en through CTranslate2,
all-MiniLM-L6-v2), tiny random wav2vec2 / T5 models saved to temporary folders for the
generic paths, and the training feature cache."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile

from model.core.audio import SAMPLE_RATE, AudioError, frame_count, load_audio, resample, save_audio
from model.encoders import (
    HFSpeechConfig,
    HFSpeechEncoder,
    HFTextEncoder,
    LogMelEncoder,
    MiniLMEncoder,
    T5Encoder,
    WhisperConfig,
    WhisperEncoder,
    plan_chunks,
    speech_encoder,
    text_encoder,
    to_motion_frames,
)
from model.encoders.cache import FeatureCache, cached_speech_features, cached_text_features
from model.encoders.text import bundled_minilm_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "samples" / "speech_sample.wav"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """~90 s of speech: the repository's sample at several speeds and levels, and reversed."""
    voice = load_audio(SAMPLE)
    parts = [
        voice,
        resample(voice, SAMPLE_RATE, 14500),
        resample(voice, SAMPLE_RATE, 17600),
        0.7 * resample(voice, SAMPLE_RATE, 15200),
        voice[::-1],
        resample(voice, SAMPLE_RATE, 16800),
    ]
    return np.concatenate(parts * 2).astype(np.float32)


def seconds(audio: np.ndarray, duration: float) -> np.ndarray:
    count = int(round(duration * SAMPLE_RATE))
    assert audio.size >= count
    return audio[:count]


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory) -> Path:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny-w2v"
    # the real conv front end (320-sample stride, 400-sample field), tiny widths
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    Wav2Vec2Model(config).save_pretrained(path)
    Wav2Vec2FeatureExtractor().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory) -> Path:
    """A random T5 encoder with a real (tiny, hand-made unigram) T5 tokenizer: no download."""
    import torch
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny-t5"
    words = ["▁a", "▁very", "▁happy", "▁woman", "▁angry", "▁man", "▁calm", "▁voice"]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(char, -3.0) for char in "▁abcdefghijklmnopqrstuvwxyz.,'"] + [(word, -1.0) for word in words]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    tokenizer.save_pretrained(path)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    T5EncoderModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def whisper():
    return speech_encoder("whisper-tiny.en")


@pytest.fixture(scope="module")
def minilm():
    return text_encoder("minilm")


def lag_correlation(reference: np.ndarray, delayed: np.ndarray, lags) -> np.ndarray:
    """Mean per-dimension Pearson correlation of reference[t] with delayed[t + lag]."""
    scores = []
    for lag in lags:
        count = min(len(reference), len(delayed) - lag)
        a, b = reference[:count], delayed[lag : lag + count]
        a = (a - a.mean(0)) / (a.std(0) + 1e-6)
        b = (b - b.mean(0)) / (b.std(0) + 1e-6)
        scores.append(float((a * b).mean()))
    return np.array(scores)


# ----------------------------------------------------------------------------- alignment


@pytest.mark.parametrize(
    "rate, offset, tolerance", [(100.0, 0.0, 1e-5), (50.0, 0.0, 1e-5), (50.0, 0.0125, 1e-5), (37.0, 0.004, 0.1 / 37)]
)
def test_rows_are_40ms_windows_centred_on_frame_times(rate, offset, tolerance):
    # box average of a linear signal = its value at the window's centre: row i must read i / 25
    # (exact when the native cells tile the window symmetrically; within a tenth of a cell otherwise)
    centres = offset + np.arange(int(10 * rate)) / rate
    native = np.stack([centres, 2.0 * centres + 1.0], axis=1)
    rows = to_motion_frames(native, centres, num_frames=200)
    interior = slice(2, 198)  # 10 s of native frames cover all 200 rows (8 s); skip the edge rows
    times = np.arange(200) / 25.0
    assert rows.shape == (200, 2) and rows.dtype == np.float32
    np.testing.assert_allclose(rows[interior, 0], times[interior], atol=tolerance)
    np.testing.assert_allclose(rows[interior, 1], 2.0 * times[interior] + 1.0, atol=2 * tolerance)


def test_chunk_plan_tiles_audio_and_keeps_centres():
    chunk, context = 30 * SAMPLE_RATE, 40000
    assert len(plan_chunks(chunk, chunk, context)) == 1
    for num_samples in (chunk + 1, 65 * SAMPLE_RATE, 31 * 60 * SAMPLE_RATE):
        plan = plan_chunks(num_samples, chunk, context)
        assert plan[0].keep_from == 0 and plan[-1].keep_until == float("inf")
        assert plan[-1].stop == num_samples
        for before, after in zip(plan, plan[1:]):
            assert before.keep_until == after.keep_from  # no gap, no overlap in what is kept
            assert after.keep_from - after.start >= context and before.start + chunk - before.keep_until >= context
            assert after.start % 640 == 0  # chunk starts stay on every encoder's frame grid


def test_logmel_onset_falls_in_the_frame_whose_window_contains_it():
    # a tone starting at 2.00 s: row 50's window [1.98, 2.02) holds the onset; row 49's
    # window (with the 25 ms STFT around it) ends before it; row 51 is all tone
    time = np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE
    audio = np.where(time >= 2.0, 0.3 * np.sin(2 * np.pi * 220 * time) + 0.2 * np.sin(2 * np.pi * 1330 * time), 0.0)
    energy = LogMelEncoder().features(audio.astype(np.float32))[:, -1]
    assert energy[49] == pytest.approx(energy[10], abs=1e-4)
    assert energy[51] == pytest.approx(energy[70], abs=0.05)
    assert energy[49] + 0.5 < energy[50] < energy[51] - 0.05


# ----------------------------------------------------------------------------- speech encoders


@pytest.mark.parametrize("spec", ["whisper-tiny.en", "logmel"])
@pytest.mark.parametrize("duration", [1.0, 7.3, 35.0, 65.0])
def test_speech_features_have_one_row_per_motion_frame(speech, spec, duration):
    encoder = speech_encoder(spec)
    audio = seconds(speech, duration)
    features = encoder.features(audio)
    assert features.shape == (frame_count(audio.size), encoder.dim)
    assert features.shape[0] == round(duration * 25)
    assert features.dtype == np.float32 and np.isfinite(features).all()


@pytest.mark.parametrize("spec", ["whisper-tiny.en", "logmel"])
def test_stereo_44k_file_through_load_audio(tmp_path, spec):
    voice = load_audio(SAMPLE)
    stereo = np.stack([resample(voice, SAMPLE_RATE, 44100), 0.5 * resample(voice, SAMPLE_RATE, 44100)], axis=1)
    path = tmp_path / "stereo44k.wav"
    soundfile.write(path, stereo, 44100, subtype="PCM_16")
    audio = load_audio(path)
    features = speech_encoder(spec).features(audio)
    assert features.shape == (frame_count(audio.size), speech_encoder(spec).dim)
    assert abs(features.shape[0] - stereo.shape[0] / 44100 * 25) <= 1


@pytest.mark.parametrize("spec", ["whisper-tiny.en", "logmel"])
def test_speech_features_are_deterministic(speech, spec):
    audio = seconds(speech, 7.3)
    first = speech_encoder(spec).features(audio)
    again = speech_encoder(spec).features(audio.copy())
    fresh = (WhisperEncoder() if spec.startswith("whisper") else LogMelEncoder()).features(audio)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, fresh)


class StopEncoding(Exception):
    pass


@pytest.mark.parametrize("spec", ["whisper-tiny.en", "logmel", "wav2vec2"])
def test_streamed_features_equal_the_whole_clips(speech, spec, tiny_wav2vec2):
    """`FeatureStream` read window by window (overlapping, as generation reads it) gives the
    rows of `features` bit for bit, over several encoder chunks and for short input; a
    whole-clip encoder (log-mel) is called once, a chunked one once per chunk."""
    encoder = speech_encoder(str(tiny_wav2vec2) if spec == "wav2vec2" else spec)
    for duration in (0.05, 3.0, 61.3):
        audio = seconds(speech, duration)
        whole = encoder.features(audio)
        stream = encoder.stream(audio)
        assert stream.chunks_encoded == 0  # nothing is encoded before rows are asked for
        for start in range(0, stream.num_frames, 100):
            first, stop = max(0, start - 12), min(stream.num_frames, start + 112)
            np.testing.assert_array_equal(stream.rows(first, stop), whole[first:stop])
        # 30 s chunks every 25 s: 61.3 s takes three
        assert stream.chunks_encoded == (1 if spec == "logmel" or duration < 30 else 3), duration
    with pytest.raises(ValueError, match="asked after row"):
        stream.rows(0, 10)  # rows before the last read are gone: memory stays flat


def test_a_stream_encodes_only_the_chunks_asked_for_and_stops_between_them(speech, whisper):
    audio = seconds(speech, 80.0)  # 4 Whisper chunks
    stream = whisper.stream(audio)
    stream.rows(0, 100)  # the first window's rows need the first 30 s chunk only
    assert stream.chunks_encoded == 1
    calls = []

    def before_chunk():
        calls.append(stopping.chunks_encoded)
        if len(calls) == 2:
            raise StopEncoding  # what a cancel check does

    stopping = whisper.stream(audio, before_chunk)
    with pytest.raises(StopEncoding):
        stopping.rows(0, stopping.num_frames)
    assert calls == [0, 1] and stopping.chunks_encoded == 1


def test_whisper_is_unchanged_at_a_chunk_border(speech, whisper):
    """Rows at a chunk border match the same audio encoded with the border elsewhere; without
    the overlap they would not (this check is what `context_seconds` is for)."""
    audio = seconds(speech, 45.0)
    cut = 10 * SAMPLE_RATE  # encoding audio[10 s:] moves every border by 10 s (250 rows)

    def border_agreement(encoder, border_s):
        whole, trimmed = encoder.features(audio), encoder.features(audio[cut:])
        mean, spread = whole.mean(0), whole.std(0)
        a = (whole[250 : 250 + len(trimmed)] - mean) / spread  # Whisper has a few huge dims: z-score
        b = (trimmed - mean) / spread
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        times = (np.arange(len(cosine)) + 250) / 25.0
        near = np.abs(times - border_s) < 0.25
        far = (np.abs(times - border_s) > 4) & (times < 35)
        return cosine[near].mean(), cosine[far].mean()

    near, far = border_agreement(whisper, 27.5)  # default: keep boundary at 30 s - 2.5 s context
    assert near > 0.9 and near > far - 0.03
    no_overlap_near, _ = border_agreement(WhisperEncoder(WhisperConfig(context_seconds=0.0)), 30.0)
    assert no_overlap_near < near - 0.15


@pytest.mark.parametrize("spec", ["whisper-tiny.en", "logmel", "tiny-w2v"])
def test_delayed_audio_gives_features_delayed_by_whole_frames(spec, tiny_wav2vec2):
    encoder = speech_encoder(str(tiny_wav2vec2) if spec == "tiny-w2v" else spec)
    voice = load_audio(SAMPLE)
    reference = encoder.features(voice)
    delayed = encoder.features(np.concatenate([np.zeros(int(0.4 * SAMPLE_RATE), np.float32), voice]))
    assert delayed.shape[0] == reference.shape[0] + 10
    scores = lag_correlation(reference, delayed, range(21))
    assert int(scores.argmax()) == 10
    assert scores[10] > 0.9 and scores[10] > max(scores[9], scores[11]) + 0.15


def test_default_encoders_load_offline_without_network():
    script = textwrap.dedent(
        """
        import socket
        connect = socket.socket.connect
        def refuse(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6):
                raise OSError(f"network use in an offline test: {address}")
            return connect(self, address)
        socket.socket.connect = refuse
        import numpy as np
        from model.encoders import speech_encoder, text_encoder
        speech = speech_encoder().features(np.zeros(16000, np.float32))
        states, mask = text_encoder().encode(["a calm voice"])
        print(speech.shape, states.shape, mask.shape)
        """
    )
    dead_proxy = "http://127.0.0.1:9"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HTTPS_PROXY=dead_proxy, HTTP_PROXY=dead_proxy)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "(25, 384) (1, 5, 384) (1, 5)"


def test_hf_speech_encoder_from_a_local_directory(speech, tiny_wav2vec2):
    encoder = speech_encoder(str(tiny_wav2vec2))
    assert isinstance(encoder, HFSpeechEncoder)
    assert encoder.encoder_id == "hf:tiny-w2v" and encoder.dim == 32
    for duration in (1.0, 35.0):  # 35 s: two chunks
        audio = seconds(speech, duration)
        features = encoder.features(audio)
        assert features.shape == (frame_count(audio.size), 32) and np.isfinite(features).all()
    np.testing.assert_array_equal(encoder.features(seconds(speech, 35.0)), features)  # deterministic
    layer = HFSpeechEncoder(tiny_wav2vec2, HFSpeechConfig(layer=1))
    assert layer.encoder_id == "hf:tiny-w2v@layer1"
    assert not np.allclose(layer.features(seconds(speech, 1.0)), encoder.features(seconds(speech, 1.0)))
    assert speech_encoder(str(tiny_wav2vec2)) is encoder  # one per process


def test_speech_factory_and_input_errors(tmp_path):
    assert speech_encoder("whisper") is speech_encoder("whisper-tiny.en") is speech_encoder("whisper-tiny.en-ct2")
    assert speech_encoder("logmel-80") is speech_encoder("logmel")
    assert WhisperEncoder()._model is None  # constructing loads nothing
    with pytest.raises(ValueError, match="unknown speech encoder 'wav2vec'"):
        speech_encoder("wav2vec")
    with pytest.raises(ValueError, match="pass the directory's path"):
        speech_encoder("hf:tiny-w2v")
    with pytest.raises(ValueError, match="does not hold a speech model"):
        speech_encoder(str(bundled_minilm_dir()))
    with pytest.raises(ValueError, match="no config.json"):
        speech_encoder(str(tmp_path))
    with pytest.raises(AudioError, match="mono"):
        speech_encoder("logmel").features(np.zeros((16000, 2), np.float32))
    with pytest.raises(AudioError, match="NaN"):
        speech_encoder("logmel").features(np.full(16000, np.nan, np.float32))
    with pytest.raises(ValueError, match="device"):
        WhisperEncoder(device="tpu")


# ----------------------------------------------------------------------------- text encoders


def test_minilm_token_states_and_semantics(minilm):
    assert minilm.encoder_id == "minilm-l6-v2" and minilm.dim == 384
    states, mask = minilm.encode(["a very happy woman", "", "an angry man"])
    assert states.shape == (3, mask.shape[1], 384) and states.dtype == np.float32 and mask.dtype == bool
    assert mask.sum(1).tolist() == [6, 2, 5]  # [CLS] ... [SEP]; "" keeps just the two
    assert not states[~mask].any()  # padding rows are zero
    happy, joyful, angry = minilm.pooled(["a very happy woman", "a joyful lady", "an angry man"])
    assert happy @ joyful > happy @ angry + 0.2


def test_minilm_batching_and_truncation(minilm):
    alone, _ = minilm.encode(["a calm voice"])
    states, mask = minilm.encode(["a calm voice", "a loud, fast and very excited voice with a lot of energy"])
    np.testing.assert_allclose(states[0, : alone.shape[1]], alone[0], atol=1e-5)  # padding does not leak
    long_states, long_mask = minilm.encode(["the speaker is calm " * 50])  # 1,000 characters
    assert long_states.shape[1] == 128 and long_mask.all()
    with pytest.raises(TypeError, match="list of strings"):
        minilm.encode("a calm voice")


def test_generic_text_directory_and_t5(tiny_t5, minilm):
    generic = text_encoder(str(bundled_minilm_dir()))
    assert isinstance(generic, HFTextEncoder) and generic.encoder_id == "hf:model"
    np.testing.assert_allclose(generic.encode(["a joyful lady"])[0], minilm.encode(["a joyful lady"])[0], atol=1e-6)

    t5 = text_encoder(str(tiny_t5))
    assert t5.encoder_id == "hf:tiny-t5" and t5.dim == 32
    states, mask = t5.encode(["a very happy woman", "", "an angry man"])
    assert states.shape == (3, mask.shape[1], 32) and np.isfinite(states).all()
    assert mask.sum(1).tolist() == [5, 1, 5]  # pieces + </s>; "" is just </s>; "an" = ▁a n
    direct = T5Encoder(tiny_t5).encode(["a calm voice"])[0]
    np.testing.assert_allclose(direct, t5.encode(["a calm voice"])[0], atol=1e-6)
    with pytest.raises(ValueError, match="not T5"):
        T5Encoder(bundled_minilm_dir())


def test_text_factory_errors(tmp_path, tiny_wav2vec2):
    assert text_encoder("minilm") is text_encoder("minilm-l6-v2")
    assert isinstance(text_encoder("minilm"), MiniLMEncoder)
    with pytest.raises(ValueError, match="unknown text encoder 't5-base'"):
        text_encoder("t5-base")
    with pytest.raises(ValueError, match="no tokenizer"):
        text_encoder(str(tiny_wav2vec2))
    with pytest.raises(ValueError, match="no config.json"):
        text_encoder(str(tmp_path))


# ----------------------------------------------------------------------------- feature cache


def test_speech_cache_stores_float16_once(tmp_path, whisper):
    audio_path = save_audio(tmp_path / "clip.wav", seconds(load_audio(SAMPLE), 3.0))
    cache = FeatureCache(tmp_path / "cache")
    first = cache.speech(whisper, audio_path)
    stored = cache.speech_path(whisper, audio_path)
    written = stored.stat().st_mtime_ns
    second = cache.speech(whisper, audio_path)
    assert (cache.stats.computed, cache.stats.disk_hits) == (1, 1)
    np.testing.assert_array_equal(first, second)
    assert first.dtype == np.float32 and first.shape == (75, 384)
    assert np.load(stored).dtype == np.float16 and stored.stat().st_mtime_ns == written
    np.testing.assert_allclose(first, whisper.features(load_audio(audio_path)), atol=0.01, rtol=0.002)
    # another process (a fresh cache object) reads the file instead of computing
    other = FeatureCache(tmp_path / "cache")
    np.testing.assert_array_equal(other.speech(whisper, audio_path), first)
    assert other.stats.computed == 0
    # another encoder: another entry
    logmel = cached_speech_features(speech_encoder("logmel"), audio_path, cache_dir=tmp_path / "cache")
    assert logmel.shape == (75, 81)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2


def test_caption_cache_memory_then_disk(tmp_path, minilm):
    captions = ["a calm old man", "", "a calm old man", "a cheerful child speaking quickly"]
    cache = FeatureCache(tmp_path / "cache")
    states, mask = cache.text(minilm, captions)
    assert cache.stats.computed == 3  # the repeated caption is encoded once
    direct_states, direct_mask = minilm.encode(captions)
    np.testing.assert_array_equal(mask, direct_mask)
    np.testing.assert_allclose(states, direct_states, atol=0.01, rtol=0.002)
    again, again_mask = cache.text(minilm, captions)
    assert cache.stats.computed == 3 and cache.stats.memory_hits >= 3
    np.testing.assert_array_equal(again, states)
    fresh = FeatureCache(tmp_path / "cache")
    from_disk, _ = fresh.text(minilm, captions)
    assert fresh.stats.computed == 0 and fresh.stats.disk_hits == 3
    np.testing.assert_array_equal(from_disk, states)
    assert all(np.load(path).dtype == np.float16 for path in (tmp_path / "cache").rglob("*.npy"))
    module_level, _ = cached_text_features(minilm, captions, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(module_level, states)


def test_cache_is_safe_with_concurrent_processes(tmp_path):
    audio_path = save_audio(tmp_path / "clip.wav", seconds(load_audio(SAMPLE), 5.0))
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        from model.encoders import speech_encoder
        from model.encoders.cache import cached_speech_features
        encoder = speech_encoder("logmel")
        features = cached_speech_features(encoder, {str(audio_path)!r}, cache_dir={str(tmp_path / "cache")!r})
        np.save(sys.argv[1], features)
        """
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"out{i}.npy")], cwd=REPO_ROOT)
        for i in range(2)
    ]
    assert all(worker.wait(timeout=120) == 0 for worker in workers)
    np.testing.assert_array_equal(np.load(tmp_path / "out0.npy"), np.load(tmp_path / "out1.npy"))
    files = [path for path in (tmp_path / "cache").rglob("*") if path.is_file()]
    assert len(files) == 1 and files[0].suffix == ".npy"  # no temporary files left behind
    # threads sharing one cache object too
    cache, results = FeatureCache(tmp_path / "cache2"), []
    def work():
        results.append(cache.speech(speech_encoder("logmel"), audio_path))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and all(np.array_equal(result, results[0]) for result in results)
