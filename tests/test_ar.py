"""The stage-2 AR model (model.ar): token layout, masks, caption coverage, loss, sampling.

Also home of the synthetic speech/motion data and the tiny training loops that
test_generate builds its checkpoint with (real modules, tiny sizes, no mocks).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from model.ar.attention import SegmentAttention, apply_rotary, rotary_tables, segment_coverage
from model.ar.batch import MAX_SEGMENTS, ARBatch
from model.ar.model import ARConfig, CapTalkAR
from model.ar.sampling import generators, guidance_terms, guide, sample_bits
from model.core.audio import SAMPLE_RATE, frame_count
from model.codec.codec import CodecConfig, MotionCodec
from model.codec.losses import quantiser_loss
from model.codec.normalise import ChannelStats

WINDOW, CONTEXT = 100, 10
CHANNELS = ("jawOpen", "mouthSmile", "browInnerUp", "head.rx", "head.ry", "head.rz")
STYLES = {"a speaker who opens the mouth wide": 1.0, "someone who barely moves the mouth": 0.35, "": 0.7}
EMOTIONS = {"happy": 0.6, "neutral": 0.05, "": 0.2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- synthetic data


def synthetic_audio(seconds: float, seed: int) -> np.ndarray:
    """(N,) 16 kHz 'speech': noise bursts at a syllable rate with pauses; N = seconds * 16000."""
    rng = np.random.default_rng(seed)
    count = int(round(seconds * SAMPLE_RATE))
    t = np.arange(count) / SAMPLE_RATE
    envelope = np.zeros(count)
    onset = rng.uniform(0, 0.3)
    while onset < seconds:  # syllables: half-sine bumps, now and then a pause
        length = rng.uniform(0.12, 0.3)
        first, last = int(onset * SAMPLE_RATE), min(count, int((onset + length) * SAMPLE_RATE))
        envelope[first:last] = np.sin(np.pi * (t[first:last] - onset) / length) * rng.uniform(0.5, 1.0)
        onset += length + (rng.uniform(0.4, 0.9) if rng.random() < 0.15 else rng.uniform(0.02, 0.1))
    carrier = rng.normal(size=count) * 0.3 + 0.3 * np.sin(2 * np.pi * 180 * t)
    return (carrier * envelope + rng.normal(size=count) * 0.002).astype(np.float32)


def synthetic_motion(audio: np.ndarray, segments, seed: int = 0) -> np.ndarray:
    """(T, 6) real-unit motion that speech and captions determine (so a tiny model learns
    it in a few steps): the jaw follows the audio's loudness scaled by the style caption,
    the smile follows the emotion caption, brow and head follow the slow loudness (the
    head also drifts with a clip-specific slow sway). segments: [(start frame, style, emotion), ...]."""
    rng = np.random.default_rng(seed + 1000)
    frames = frame_count(audio.size)
    hop = SAMPLE_RATE // 25
    padded = np.pad(np.abs(audio), (hop // 2, hop // 2 + frames * hop))
    loudness = np.array([padded[i * hop:i * hop + hop].mean() for i in range(frames)])
    loudness = loudness / max(loudness.max(), 1e-6)
    slow = np.convolve(np.pad(loudness, 12, mode="edge"), np.ones(25) / 25, mode="valid")
    gain, smile = np.zeros(frames), np.zeros(frames)
    for start, style, emotion in segments:
        gain[start:], smile[start:] = STYLES[style], EMOTIONS[emotion]
    # captions change gradually over ~0.3 s, as a face does
    kernel = np.ones(7) / 7
    gain = np.convolve(np.pad(gain, 3, mode="edge"), kernel, mode="valid")
    smile = np.convolve(np.pad(smile, 3, mode="edge"), kernel, mode="valid")
    t = np.arange(frames) / 25
    motion = np.zeros((frames, len(CHANNELS)))
    motion[:, 0] = gain * loudness
    motion[:, 1] = smile
    motion[:, 2] = 0.1 + 0.3 * slow
    motion[:, 3] = 0.1 * (slow - 0.3)
    motion[:, 4] = 0.05 * gain * slow + 0.02 * np.sin(2 * np.pi * 0.2 * t + rng.uniform(0, 6))
    return motion.astype(np.float32)


def synthetic_clips(count: int, seconds: float, seed: int = 0) -> list[dict]:
    """Clips with audio, real-unit motion and caption segments (a third change mid-clip)."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(count):
        audio = synthetic_audio(seconds, seed * 100 + i)
        segments = [(0, str(rng.choice(list(STYLES))), str(rng.choice(list(EMOTIONS))))]
        if i % 3 == 2:
            segments.append((int(rng.integers(60, frame_count(audio.size) - 60)),
                             str(rng.choice(list(STYLES))), str(rng.choice(list(EMOTIONS)))))
        motion = synthetic_motion(audio, segments, seed * 100 + i)
        clips.append({"audio": audio, "segments": segments, "motion": motion})
    return clips


class CaptionTable:
    """Token states of every caption, encoded once: text -> ((T, Dt), (T,)); "" = no caption."""

    def __init__(self, encoder, texts):
        unique = sorted({t for t in texts if t})
        states, masks = encoder.encode(unique)
        self.dim = states.shape[-1]
        self.table = {t: (s[:m.sum()], m[:m.sum()]) for t, s, m in zip(unique, states, masks)}
        self.table[""] = (np.zeros((1, self.dim), np.float32), np.zeros(1, bool))

    def stack(self, captions: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """B lists of K captions -> (B, K, T, Dt), (B, K, T)."""
        length = max(self.table[c][0].shape[0] for row in captions for c in row)
        states = np.zeros((len(captions), len(captions[0]), length, self.dim), np.float32)
        masks = np.zeros(states.shape[:3], bool)
        for b, row in enumerate(captions):
            for k, caption in enumerate(row):
                state, mask = self.table[caption]
                states[b, k, :len(state)], masks[b, k, :len(mask)] = state, mask
        return torch.from_numpy(states), torch.from_numpy(masks)


def window_segments(segments, start: int):
    """The (frame, style, emotion) segments touching window [start, start + W)."""
    touching = [s for s in segments if s[0] <= start][-1:] + [s for s in segments if start < s[0] < start + WINDOW]
    assert len(touching) <= MAX_SEGMENTS
    return touching


def window_batch(clips: list[dict], starts: list[tuple[int, int]], stats: ChannelStats,
                 captions: CaptionTable) -> ARBatch:
    """An `ARBatch` of windows (clip index, start frame): what model.train will produce.

    Windows starting inside the first W frames get the frames before them left-padded by
    repeating frame 0 (what generation does after an early caption change)."""
    rows = {k: [] for k in ("motion", "previous", "has_previous", "valid", "speech", "speech_valid", "segment_start")}
    style_rows, emotion_rows = [], []
    # K = the most segments any window of the batch needs (<= MAX_SEGMENTS): unused slots cost attention time
    slots = max(len(window_segments(clips[i]["segments"], s)) for i, s in starts)
    for clip_index, start in starts:
        clip = clips[clip_index]
        motion = stats.normalise(clip["motion"])
        features = clip["features"]
        frames = len(motion)
        current = motion[start:start + WINDOW]
        valid = np.arange(WINDOW) < len(current)
        current = np.concatenate([current, np.repeat(current[-1:], WINDOW - len(current), 0)])
        before = motion[max(0, start - WINDOW):start]
        if start == 0:
            before = np.zeros_like(current)
        elif len(before) < WINDOW:
            before = np.concatenate([np.repeat(before[:1], WINDOW - len(before), 0), before])
        speech = np.zeros((WINDOW + 2 * CONTEXT, features.shape[1]), np.float32)
        index = np.arange(start - CONTEXT, start + WINDOW + CONTEXT)
        inside = (index >= 0) & (index < frames)
        speech[inside] = features[index[inside]]
        segments = window_segments(clip["segments"], start)
        segment_start = [max(0, s[0] - start) for s in segments] + [WINDOW] * (slots - len(segments))
        style_rows.append([s[1] for s in segments] + [""] * (slots - len(segments)))
        emotion_rows.append([s[2] for s in segments] + [""] * (slots - len(segments)))
        for key, value in (("motion", current), ("previous", before), ("has_previous", start > 0), ("valid", valid),
                           ("speech", speech), ("speech_valid", inside), ("segment_start", segment_start)):
            rows[key].append(np.asarray(value))
    style, style_mask = captions.stack(style_rows)
    emotion, emotion_mask = captions.stack(emotion_rows)
    tensors = {k: torch.from_numpy(np.stack(v)) for k, v in rows.items()}
    return ARBatch(motion=tensors["motion"].float(), previous=tensors["previous"].float(),
                   has_previous=tensors["has_previous"].bool(), valid=tensors["valid"].bool(),
                   speech=tensors["speech"].float(), speech_valid=tensors["speech_valid"].bool(),
                   style=style, style_mask=style_mask, emotion=emotion, emotion_mask=emotion_mask,
                   segment_start=tensors["segment_start"].long())


def train_codec(clips: list[dict], stats: ChannelStats, steps: int, seed: int = 0, edge_weight: float = 8.0,
                code_flips: float = 0.15, **changes) -> MotionCodec:
    """A tiny codec trained on random windows (with their previous window) of the clips.

    Two additions to plain reconstruction make its decoder continue the previous window
    even from imperfect codes, as it must at generation (the AR model's codes are samples):
    the decoder reads codes with ``code_flips`` of their bits flipped, and the first frames
    of each window weigh up to 1 + ``edge_weight`` times more (decaying over ~4 frames).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    codec = MotionCodec(CodecConfig(**{"channels": len(CHANNELS), "width": 32, "layers": 1, "heads": 2,
                                       "context": 25, "dropout": 0.0, **changes}))
    optimiser = torch.optim.AdamW(codec.parameters(), lr=3e-3)
    motions = [torch.from_numpy(stats.normalise(c["motion"])) for c in clips]
    weight = 1 + edge_weight * torch.exp(-torch.arange(WINDOW, dtype=torch.float32) / 4)
    for _ in range(steps):
        picks = [(i, int(rng.integers(0, len(motions[i]) - 2 * WINDOW + 1)))
                 for i in rng.integers(len(motions), size=16)]
        current = torch.stack([motions[i][s + WINDOW:s + 2 * WINDOW] for i, s in picks])
        previous = torch.stack([motions[i][s:s + WINDOW] for i, s in picks])
        latent = codec.latent(current)
        quantised = codec.quantiser(latent)
        noisy = [c ^ (torch.rand(c.shape) < code_flips) for c in quantised.codes]
        # straight-through as MultiScaleBSQ: the value of the noisy codes, the gradient of the latent
        decoded = codec.decode(codec.quantiser.codes_to_latent(noisy).detach() + (latent - latent.detach()),
                               previous, torch.from_numpy(rng.random(16) > 0.1))
        reconstruction = ((decoded - current).square().mean(-1) * weight).mean() / weight.mean()
        loss = reconstruction + quantiser_loss(quantised.losses)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return codec.eval().requires_grad_(False)


def tiny_ar_config(speech_dim: int, text_dim: int, **changes) -> ARConfig:
    return ARConfig(**{"channels": len(CHANNELS), "speech_dim": speech_dim, "text_dim": text_dim, "width": 32,
                       "layers": 2, "heads": 2, "speech_context": CONTEXT, "prefix_tokens": 10, "dropout": 0.0,
                       **changes})


def train_ar(model: CapTalkAR, codec: MotionCodec, batches, steps: int, lr: float = 3e-3, seed: int = 0) -> list[dict]:
    """AdamW on the AR loss over ``batches`` (a callable step -> ARBatch); the per-step losses."""
    torch.manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    history = []
    for step in range(steps):
        losses = model.loss(batches(step), codec)
        optimiser.zero_grad()
        losses["loss"].backward()
        optimiser.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    return history


# ----------------------------------------------------------------------------- model tests

SPEECH_DIM, TEXT_DIM = 12, 16


def random_batch(size: int, seed: int, segments: int = 1, tokens: int = 5) -> ARBatch:
    """Windows of synthetic motion with random speech and caption features (no encoders)."""
    g = torch.Generator().manual_seed(seed)
    audio = synthetic_audio(4.0 * (size + 1), seed)
    motion = synthetic_motion(audio, [(0, next(iter(STYLES)), "happy")], seed)
    stats = ChannelStats.from_motions([motion])
    windows = torch.from_numpy(stats.normalise(motion)[:WINDOW * (size + 1)]).unflatten(0, (size + 1, WINDOW))
    frames = WINDOW + 2 * CONTEXT
    starts = torch.full((size, segments), WINDOW)
    starts[:, 0] = 0
    if segments > 1:
        starts[:, 1] = 40
    return ARBatch(
        motion=windows[1:].float(), previous=windows[:-1].float(), has_previous=torch.ones(size, dtype=torch.bool),
        valid=torch.ones(size, WINDOW, dtype=torch.bool), speech=torch.randn(size, frames, SPEECH_DIM, generator=g),
        speech_valid=torch.ones(size, frames, dtype=torch.bool),
        style=torch.randn(size, segments, tokens, TEXT_DIM, generator=g),
        style_mask=torch.ones(size, segments, tokens, dtype=torch.bool),
        emotion=torch.randn(size, segments, tokens, TEXT_DIM, generator=g),
        emotion_mask=torch.ones(size, segments, tokens, dtype=torch.bool),
        segment_start=starts.long())


def small_model(seed: int = 0, **changes) -> CapTalkAR:
    torch.manual_seed(seed)
    return CapTalkAR(tiny_ar_config(SPEECH_DIM, TEXT_DIM, **changes)).eval()


def frozen_codec(seed: int = 0) -> MotionCodec:
    torch.manual_seed(seed)
    return MotionCodec(CodecConfig(len(CHANNELS), width=32, layers=1, heads=2, context=25, dropout=0.0)).eval()


def logits_of(model: CapTalkAR, codec: MotionCodec, batch: ARBatch, scales: int | None = None,
              **replace) -> torch.Tensor:
    """The model's logits for the batch's true codes, some conditioning fields replaced."""
    fields = {name: getattr(batch, name) for name in ("previous", "has_previous", "speech", "speech_valid", "style",
                                                      "style_mask", "emotion", "emotion_mask", "segment_start")}
    fields.update(replace)
    with torch.no_grad():
        inputs = codec.quantiser.scale_inputs(codec.encode(batch.motion))[1:]
        return model(model.context(**fields), inputs[:scales])


def test_config_round_trips_and_checks_its_codec():
    config = tiny_ar_config(SPEECH_DIM, TEXT_DIM)
    assert ARConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.tokens == 181
    config.check_codec(frozen_codec().config)
    with pytest.raises(ValueError, match="does not match the codec"):
        config.check_codec(CodecConfig(len(CHANNELS), bits=16))
    with pytest.raises(ValueError, match="prefix_tokens"):
        tiny_ar_config(SPEECH_DIM, TEXT_DIM, prefix_tokens=30)
    with pytest.raises(ValueError, match="scales"):
        tiny_ar_config(SPEECH_DIM, TEXT_DIM, scales=(1, 5, 50))


def test_each_scale_sees_only_coarser_scales_and_the_prefix():
    model, codec, batch = small_model(), frozen_codec(), random_batch(2, seed=1)
    full = logits_of(model, codec, batch)
    assert full.shape == (2, 181, 32, 2)
    offsets = model.scale_offsets()
    for k in range(4):  # scales 0..k from the inputs of scales 1..k alone
        partial = logits_of(model, codec, batch, scales=k)
        assert partial.shape[1] == offsets[k + 1]
        assert torch.allclose(partial, full[:, :offsets[k + 1]], atol=1e-5)
    # the codes of a scale change the logits of finer scales only
    with torch.no_grad():
        codes = codec.encode(batch.motion)
        flipped = [c if k != 2 else ~c for k, c in enumerate(codes)]
        context = model.context(batch.previous, batch.has_previous, batch.speech, batch.speech_valid, batch.style,
                                batch.style_mask, batch.emotion, batch.emotion_mask, batch.segment_start)
        other = model(context, codec.quantiser.scale_inputs(flipped)[1:])
    assert torch.allclose(other[:, :offsets[3]], full[:, :offsets[3]], atol=1e-5)
    assert not torch.allclose(other[:, offsets[3]:], full[:, offsets[3]:], atol=1e-3)


def test_conditions_reach_the_logits_and_masked_inputs_do_not():
    model, codec, batch = small_model(), frozen_codec(), random_batch(2, seed=2)
    full = logits_of(model, codec, batch)
    noise = torch.randn_like(batch.previous)
    assert not torch.allclose(logits_of(model, codec, batch, previous=noise), full, atol=1e-4)
    none = torch.zeros(2, dtype=torch.bool)
    assert torch.equal(logits_of(model, codec, batch, previous=noise, has_previous=none),
                       logits_of(model, codec, batch, has_previous=none))
    assert not torch.allclose(logits_of(model, codec, batch, speech=torch.randn_like(batch.speech)), full, atol=1e-4)
    # speech outside the clip and dropped captions are ignored, whatever their values
    outside = batch.speech_valid.clone()
    outside[:, :CONTEXT] = False
    speech = batch.speech.clone()
    speech[:, :CONTEXT] = 100.0
    assert torch.allclose(logits_of(model, codec, batch, speech_valid=outside),
                          logits_of(model, codec, batch, speech=speech, speech_valid=outside), atol=1e-5)
    dropped = torch.zeros_like(batch.style_mask)
    other_tokens = torch.randn_like(batch.style)
    assert torch.allclose(logits_of(model, codec, batch, style_mask=dropped),
                          logits_of(model, codec, batch, style=other_tokens, style_mask=dropped), atol=1e-5)
    assert not torch.allclose(logits_of(model, codec, batch, style_mask=dropped), full, atol=1e-4)
    assert not torch.allclose(logits_of(model, codec, batch, emotion=torch.randn_like(batch.emotion)), full, atol=1e-4)


def test_coverage_of_caption_segments_follows_time():
    spans = torch.tensor([[-10.0, -6.0], [0.0, 100.0], [20.0, 40.0], [30.0, 50.0], [50.0, 70.0], [99.0, 100.0]])
    coverage = segment_coverage(spans, torch.tensor([[0, 40, 100], [0, 100, 100]]), 100)
    assert coverage.shape == (2, 6, 3)
    assert torch.allclose(coverage[0], torch.tensor([[1.0, 0, 0], [0.4, 0.6, 0], [1, 0, 0], [0.5, 0.5, 0],
                                                     [0, 1, 0], [0, 1, 0]]))
    assert torch.equal(coverage[1], torch.tensor([[1.0, 0, 0]] * 6))  # one segment: exactly plain conditioning


def test_segment_attention_is_the_coverage_weighted_mix_of_each_caption():
    torch.manual_seed(0)
    attention = SegmentAttention(16, 2, 0.0).eval()
    x, memory = torch.randn(1, 4, 16), torch.randn(1, 2, 5, 16)
    mask = torch.ones(1, 2, 5, dtype=torch.bool)
    mask[0, 1, 3:] = False
    coverage = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.25, 0.75], [0.5, 0.5]]])
    with torch.no_grad():
        mixed = attention(x, memory, mask, coverage)
        alone = [attention(x, memory[:, k:k + 1], mask[:, k:k + 1], torch.ones(1, 4, 1)) for k in range(2)]
    expected = coverage[0, :, :1] * alone[0][0] + coverage[0, :, 1:] * alone[1][0]
    assert torch.allclose(mixed[0], expected, atol=1e-6)


def test_a_window_with_one_caption_segment_is_plain_conditioning():
    model, codec = small_model(), frozen_codec()
    one = random_batch(2, seed=3)
    padded_slots = random_batch(2, seed=3, segments=3)  # other slots unused: they start at W
    padded_slots.segment_start[:, 1] = WINDOW
    padded_slots.style[:, :1], padded_slots.emotion[:, :1] = one.style, one.emotion
    assert torch.allclose(logits_of(model, codec, one), logits_of(model, codec, padded_slots), atol=1e-5)
    changing = random_batch(2, seed=3, segments=2)  # a change at frame 40 does matter
    changing.style[:, :1], changing.emotion[:, :1] = one.style, one.emotion
    assert not torch.allclose(logits_of(model, codec, one), logits_of(model, codec, changing), atol=1e-4)


def test_rotary_scores_depend_on_the_time_difference_only():
    torch.manual_seed(0)
    query, key = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(q_time: float, k_time: float) -> float:
        rq = apply_rotary(query, rotary_tables(torch.tensor([q_time]), 8, 10000.0))
        rk = apply_rotary(key, rotary_tables(torch.tensor([k_time]), 8, 10000.0))
        return float((rq * rk).sum())

    assert math.isclose(score(49.5, 40.0), score(9.5, 0.0), rel_tol=1e-4)
    assert math.isclose(score(-3.0, 7.0), score(97.0, 107.0), rel_tol=1e-4)
    assert not math.isclose(score(49.5, 40.0), score(49.5, 45.0), rel_tol=1e-2)


def test_training_loss_falls_on_a_fixed_set_of_windows():
    model, codec = small_model(seed=4), frozen_codec()
    fixed = random_batch(8, seed=4)
    history = train_ar(model, codec, lambda step: fixed, steps=60, lr=5e-3)
    first, last = history[0], np.mean([h["loss"] for h in history[-5:]])
    print(f"\nAR loss on 8 fixed windows: {first['loss']:.3f} -> {last:.3f}, bit accuracy "
          f"{first['bit_accuracy']:.3f} -> {history[-1]['bit_accuracy']:.3f}")
    assert last < 0.75 * first["loss"] and history[-1]["bit_accuracy"] > first["bit_accuracy"] + 0.1
    assert set(history[0]) == {"loss", "bit_accuracy"} | {f"bit_accuracy_scale{k}" for k in range(5)}


def test_loss_ignores_codes_of_padded_frames_only():
    model, codec, batch = small_model(), frozen_codec(), random_batch(2, seed=5)
    batch.valid[:, 60:] = False  # a short clip's last window
    captured = {}
    handle = model.head.register_forward_hook(lambda module, args, out: captured.update(out=out) or out.retain_grad())
    model.loss(batch, codec)["loss"].backward()
    handle.remove()
    grad = captured["out"].grad.abs().sum(-1)  # (B, N) per code token
    first_frame = model.token_span[model.config.prefix_tokens:, 0]  # each code token's first frame
    assert torch.all(grad[:, first_frame < 60] > 0) and torch.all(grad[:, first_frame >= 60] == 0)


def test_training_noise_only_in_training_mode_and_the_codec_stays_frozen():
    model, codec, batch = small_model(), frozen_codec(), random_batch(4, seed=6)
    assert torch.equal(model.loss(batch, codec)["loss"], model.loss(batch, codec)["loss"])  # eval: no noise
    model.train()
    torch.manual_seed(0)
    noisy = [float(model.loss(batch, codec)["loss"].detach()) for _ in range(2)]
    assert noisy[0] != noisy[1]  # bit flips and drops differ per call
    assert not any(p.requires_grad and p.grad is not None for p in codec.parameters())
    with pytest.raises(ValueError, match="eval mode"):
        model.loss(batch, codec.train())


# ----------------------------------------------------------------------------- sampling


def test_sampling_is_seeded_per_take():
    logits = torch.randn(2, 25, 32, 2, generator=torch.Generator().manual_seed(0))
    first = sample_bits(logits, 1.0, 1.0, generators(7, 2))
    assert torch.equal(first, sample_bits(logits, 1.0, 1.0, generators(7, 2)))
    assert not torch.equal(first, sample_bits(logits, 1.0, 1.0, generators(8, 2)))
    # take i draws from seed + i whatever the batch: the second take of seed 7 is the first of seed 8
    assert torch.equal(first[1], sample_bits(logits[1:], 1.0, 1.0, generators(8, 1))[0])


def test_temperature_and_top_p_per_bit():
    margin = torch.tensor([4.0, 0.4, -0.4, -4.0])  # P(True) = 0.982, 0.599, 0.401, 0.018
    logits = torch.stack([torch.zeros(4), margin], -1).expand(20000, 4, 2)[None]
    greedy = torch.tensor([True, True, False, False])
    assert torch.equal(sample_bits(logits, 0.0, 0.97, generators(0, 1))[0], greedy.expand(20000, 4))
    bits = sample_bits(logits, 1.0, 0.97, generators(0, 1))[0].float().mean(0)
    # confident bits (>= top_p) are taken, the others sampled at their probability
    assert bits[0] == 1.0 and bits[3] == 0.0 and abs(bits[1] - 0.599) < 0.02 and abs(bits[2] - 0.401) < 0.02
    assert 0.0 < sample_bits(logits, 1.0, 1.0, generators(0, 1))[0, :, 0].float().mean() < 1.0  # top_p 1: all sampled
    hot = sample_bits(logits, 4.0, 1.0, generators(0, 1))[0].float().mean(0)
    assert abs(hot[0] - torch.sigmoid(torch.tensor(1.0))) < 0.02  # temperature divides the log-odds


def test_guidance_terms_and_the_guided_logits():
    def terms(gs, ge, style=True, emotion=True):
        return [(t.condition, round(t.weight, 6)) for t in guidance_terms(gs, ge, style, emotion)]

    assert terms(1.0, 1.0) == [("both", 1.0)]
    assert terms(2.0, 2.0) == [("none", -1.0), ("both", 2.0)]
    assert terms(3.0, 1.5) == [("none", -0.5), ("emotion", -1.5), ("both", 3.0)]
    assert terms(2.0, 2.0, style=False) == [("none", -1.0), ("both", 2.0)]
    assert terms(3.0, 1.5, style=False) == [("none", -0.5), ("both", 1.5)]  # only emotion guidance acts
    assert terms(3.0, 1.5, emotion=False) == [("emotion", -2.0), ("both", 3.0)]  # "emotion" is then no caption
    assert terms(2.0, 2.0, style=False, emotion=False) == [("both", 1.0)]  # nothing to guide: one pass
    assert terms(0.0, 0.0) == [("none", 1.0)]
    logits = torch.randn(3, 5, 32, 2)
    assert torch.equal(guide(logits[:1], guidance_terms(1.0, 1.0, True, True)), logits[:1])
    none, emotion, both = logits[0:1], logits[1:2], logits[2:3]
    expected = none + 1.5 * (emotion - none) + 3.0 * (both - emotion)
    assert torch.allclose(guide(logits, guidance_terms(3.0, 1.5, True, True)), expected, atol=1e-5)


def test_scale_by_scale_steps_give_the_one_pass_logits():
    model, codec, batch = small_model(), frozen_codec(), random_batch(2, seed=7, segments=2)
    full = logits_of(model, codec, batch)
    with torch.no_grad():
        inputs = codec.quantiser.scale_inputs(codec.encode(batch.motion))
        context = model.context(batch.previous, batch.has_previous, batch.speech, batch.speech_valid, batch.style,
                                batch.style_mask, batch.emotion, batch.emotion_mask, batch.segment_start)
        state = model.begin(context)
        steps = [model.step(state, None if k == 0 else inputs[k]) for k in range(5)]
        with pytest.raises(ValueError, match="already"):
            model.step(state, inputs[1])
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
