"""The stage-1 motion codec: multi-scale BSQ, normalisation, the codec and its loss."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import flame_fixtures
from model.codec.bsq import BSQConfig, MultiScaleBSQ, bits_to_vectors, down, up
from model.codec.codec import CodecConfig, MotionCodec
from model.codec.losses import CodecLoss, CodecLossConfig, masked_mean, quantiser_loss, vertex_subset
from model.codec.normalise import ChannelStats
from model.core.flame_import import import_flame
from model.head_model_torch import TorchHeadModel
from test_head_model import tiny_head

FPS = 25
WINDOW = 100
OPEN_HEAD_CHANNELS = 55  # 52 ARKit weights (alphabetical) + head rotation
JAW_OPEN, BLINKS, HEAD = 24, (8, 9), slice(52, 55)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def smooth_noise(rng: np.random.Generator, frames: int, channels: int, knot_every: int) -> np.ndarray:
    """(frames, channels) piecewise-linear noise through N(0, 1) knots, then a 5-frame average."""
    knots = rng.normal(size=(frames // knot_every + 2, channels))
    x = np.arange(frames) / knot_every
    curve = np.stack([np.interp(x, np.arange(len(knots)), knots[:, c]) for c in range(channels)], axis=1)
    kernel = np.ones(5) / 5
    return np.stack([np.convolve(curve[:, c], kernel, mode="same")[:frames] for c in range(channels)], axis=1)


def speech_like_motion(frames: int, seed: int = 0) -> np.ndarray:
    """(frames, 55) open-head-like motion in real units: a syllable-rate jaw, blinks, slow
    brows/smile/mouth shapes, a swaying head; the other ARKit channels stay at 0."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / FPS
    motion = np.zeros((frames, OPEN_HEAD_CHANNELS))
    envelope = np.clip(0.6 + 0.4 * smooth_noise(rng, frames, 1, 20)[:, 0], 0, 1)
    motion[:, JAW_OPEN] = 0.35 * envelope * (0.5 - 0.5 * np.cos(2 * np.pi * 4.0 * t + rng.uniform(0, 6)))
    for start in rng.integers(0, frames - 6, size=frames // 60 + 1):  # 240 ms blinks
        motion[start:start + 6, BLINKS] = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(6) / 6))[:, None]
    slow = [0, 1, 2, 31, 37, 43, 44]  # brows, funnel, pucker, smile
    motion[:, slow] = np.clip(0.2 + 0.1 * smooth_noise(rng, frames, len(slow), 25), 0, 1)
    motion[:, HEAD] = 0.05 * smooth_noise(rng, frames, 3, 30)
    return motion.astype(np.float32)


def tiny_codec(channels: int, seed: int = 0, **changes) -> MotionCodec:
    torch.manual_seed(seed)
    return MotionCodec(CodecConfig(**{"channels": channels, "width": 64, "layers": 2, "heads": 4, "dropout": 0.0, **changes}))


def smooth_latent(batch: int, seed: int = 0, bits: int = 32) -> torch.Tensor:
    """(batch, 100, bits) latent with structure at every scale, coarse parts largest."""
    g = torch.Generator().manual_seed(seed)
    scales = BSQConfig().scales
    parts = [up(torch.randn(batch, s, bits, generator=g), WINDOW) * 0.5**k for k, s in enumerate(scales)]
    return sum(parts) / math.sqrt(bits)


# ------------------------------------------------------------------------------ BSQ
def test_codes_are_bits_of_signed_unit_vectors():
    quantiser = MultiScaleBSQ()
    codes = quantiser(smooth_latent(3)).codes
    assert [tuple(c.shape) for c in codes] == [(3, s, 32) for s in (1, 5, 25, 50, 100)]
    for bits in codes:
        assert bits.dtype == torch.bool
        vectors = bits_to_vectors(bits)
        assert torch.equal(vectors.abs(), torch.full_like(vectors, 1 / math.sqrt(32)))
        assert torch.allclose(vectors.norm(dim=-1), torch.ones(vectors.shape[:-1]))
        assert torch.equal(vectors > 0, bits)


def test_codes_to_latent_reproduces_the_quantiser_output_bit_exactly():
    quantiser = MultiScaleBSQ()
    with torch.no_grad():
        quantiser.log_gain.add_(torch.linspace(-0.3, 0.2, 5))  # any gains, not only the initial ones
    out = quantiser(smooth_latent(4, seed=1))
    assert torch.equal(quantiser.codes_to_latent(out.codes), out.latent)


def test_residual_error_falls_scale_by_scale():
    quantiser = MultiScaleBSQ()
    z = smooth_latent(8, seed=2)
    codes = quantiser(z).codes
    errors = [(z - quantiser.codes_to_latent(codes[:k])).square().sum(-1).mean().item() for k in range(1, 6)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.1 * z.square().sum(-1).mean().item()


def test_straight_through_gradient_reaches_the_input_and_gains_learn_from_the_codebook_term():
    quantiser = MultiScaleBSQ()
    z = smooth_latent(2, seed=3).requires_grad_()
    out = quantiser(z)
    (out.latent * torch.arange(32.0)).sum().backward()
    assert torch.equal(z.grad, torch.arange(32.0).expand_as(z))  # identity through sign()
    assert quantiser.log_gain.grad is None
    z.grad = None
    out = quantiser(z)
    (out.losses["codebook"] + out.losses["token_entropy"]).backward()
    assert (quantiser.log_gain.grad.abs() > 0).all() and z.grad.abs().sum() > 0


def test_scale_inputs_are_the_resized_partial_sums():
    quantiser = MultiScaleBSQ()
    codes = quantiser(smooth_latent(2, seed=4)).codes
    inputs = quantiser.scale_inputs(codes)
    assert [tuple(i.shape) for i in inputs] == [(2, s, 32) for s in (1, 5, 25, 50, 100)]
    assert torch.equal(inputs[0], torch.zeros(2, 1, 32))
    for k in range(1, 5):
        assert torch.equal(inputs[k], down(quantiser.codes_to_latent(codes[:k]), quantiser.config.scales[k]))
    # the last scale's codes are never an input
    assert all(torch.equal(a, b) for a, b in zip(quantiser.scale_inputs(codes[:4]), inputs))


def test_resizing_is_area_down_and_linear_up():
    x = torch.arange(8.0).reshape(1, 4, 2)  # frames (0,1) (2,3) (4,5) (6,7)
    assert torch.equal(down(x, 2), torch.tensor([[[1.0, 2.0], [5.0, 6.0]]]))
    assert torch.equal(down(x, 1), x.mean(1, keepdim=True))
    two = torch.tensor([[[0.0], [4.0]]])  # codes centred on frames 1.5 and 5.5 of 8
    assert torch.allclose(up(two, 8)[0, :, 0], torch.tensor([0, 0, 0.5, 1.5, 2.5, 3.5, 4, 4]))


def test_entropy_terms_reward_confident_bits_and_a_used_codebook():
    quantiser = MultiScaleBSQ(BSQConfig(scales=(100,), inv_temperature=4.0))
    rng = torch.Generator().manual_seed(5)
    one_code = bits_to_vectors(torch.ones(4, 100, 32, dtype=torch.bool))
    random_codes = bits_to_vectors(torch.rand(4, 100, 32, generator=rng) > 0.5)
    # all the length along one axis: the other 31 bits sit on their decision boundary
    one_axis = torch.randn(4, 100, 32, generator=rng) * 1e-4 + torch.eye(32)[0]
    same, spread, vague = (quantiser(z).losses for z in (one_code, random_codes, one_axis))
    for losses in (same, spread, vague):
        assert 0 <= losses["token_entropy"] <= 1 and 0 <= losses["codebook_entropy"] <= 1
    assert spread["token_entropy"] < 0.01 and spread["codebook_entropy"] > 0.99
    assert same["codebook_entropy"] < 0.01
    assert vague["token_entropy"] > 0.9


def test_bsq_config_checks_its_scales():
    with pytest.raises(ValueError, match="increasing"):
        BSQConfig(scales=(5, 1, 100))
    with pytest.raises(ValueError, match="last scale"):
        BSQConfig(scales=(1, 5, 50))
    with pytest.raises(ValueError, match="divide"):
        BSQConfig(scales=(1, 3, 100))
    with pytest.raises(ValueError, match="bool"):
        MultiScaleBSQ().codes_to_latent([torch.zeros(1, 1, 32)])


# ------------------------------------------------------------------- normalisation
def test_channel_stats_round_trip_json_and_floor_constant_channels():
    motion = speech_like_motion(300)
    stats = ChannelStats.from_motions([motion[:120], motion[120:]])
    np.testing.assert_allclose(stats.mean, motion.mean(0), atol=1e-6)
    constant = 5  # cheekPuff never moves in this motion
    assert stats.std[constant] == 0.01 and stats.std[JAW_OPEN] > 0.05
    again = ChannelStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert again == stats
    normalised = stats.normalise(motion)
    assert normalised.dtype == np.float32 and np.isfinite(normalised).all()
    assert np.all(normalised[:, constant] == 0)
    np.testing.assert_allclose(stats.denormalise(normalised), motion, atol=1e-6)
    as_torch = stats.normalise(torch.from_numpy(motion).double())
    assert as_torch.dtype == torch.float64
    np.testing.assert_allclose(as_torch.numpy(), normalised, atol=1e-5)
    np.testing.assert_allclose(stats.denormalise(as_torch).numpy(), motion, atol=1e-9)
    with pytest.raises(ValueError, match="channels"):
        stats.normalise(motion[:, :10])
    with pytest.raises(ValueError):
        ChannelStats((0.0,), (0.0,))


# --------------------------------------------------------------------------- codec
@pytest.fixture(scope="module")
def fitted():
    """A tiny codec fitted to the two windows of one 200-frame clip, the second decoded
    after the first (previous = the true first window, dropped a tenth of the time)."""
    motion = speech_like_motion(2 * WINDOW, seed=1)
    stats = ChannelStats.from_motions([motion])
    clip = torch.from_numpy(stats.normalise(motion)).reshape(2, WINDOW, OPEN_HEAD_CHANNELS)
    current, previous = clip, torch.stack([torch.zeros_like(clip[0]), clip[0]])
    has_previous = torch.tensor([False, True])
    codec = tiny_codec(OPEN_HEAD_CHANNELS)
    optimiser = torch.optim.AdamW(codec.parameters(), lr=2e-3)
    drop = torch.Generator().manual_seed(0)

    def error() -> float:
        with torch.no_grad():
            return (codec(current, previous, has_previous).reconstruction - current).square().mean().item()

    start = error()
    for _ in range(300):
        keep = has_previous & (torch.rand(2, generator=drop) >= 0.1)
        out = codec(current, previous, keep)
        loss = (out.reconstruction - current).square().mean() + quantiser_loss(out.losses)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    codec.eval()
    return codec, clip, start, error()


def test_fitting_one_clip_cuts_the_reconstruction_error_tenfold(fitted):
    codec, clip, start, end = fitted
    assert end < start / 10, (start, end)


def test_decoding_window_after_window_leaves_no_seam(fitted):
    codec, clip, _, _ = fitted
    with torch.no_grad():
        codes = codec.encode(clip)
        first = codec.decode([c[:1] for c in codes])  # a clip's first window: no previous
        second = codec.decode([c[1:] for c in codes], previous=first)  # the generated one, as at inference
    joined = torch.cat([first[0], second[0]])  # (200, C)
    steps = (joined[1:] - joined[:-1]).norm(dim=-1)
    border, inside = steps[WINDOW - 1], torch.cat([steps[:WINDOW - 1], steps[WINDOW:]])
    true_steps = (clip.reshape(-1, OPEN_HEAD_CHANNELS).diff(dim=0)).norm(dim=-1)
    # soft check (the AR model's tests own continuity): the join is an ordinary step
    assert border <= 2 * inside.max() and border <= 2 * true_steps[WINDOW - 1] + inside.median(), (
        border.item(), inside.median().item(), inside.max().item(), true_steps[WINDOW - 1].item())


def test_no_previous_path_is_one_learned_prefix():
    codec = tiny_codec(OPEN_HEAD_CHANNELS, seed=2).eval()
    clip = torch.from_numpy(speech_like_motion(WINDOW)).unsqueeze(0).repeat(2, 1, 1)
    previous = torch.randn(2, WINDOW, OPEN_HEAD_CHANNELS)
    with torch.no_grad():
        codes = codec.encode(clip)
        alone = codec.decode(codes)
        mixed = codec.decode(codes, previous, torch.tensor([False, True]))
        with_previous = codec.decode(codes, previous)
        from_latent = codec.decode(codec.quantiser.codes_to_latent(codes))
        forward = codec(clip).reconstruction
        coarse = codec.decode(codes[:2])  # a coarse preview from the first scales
    assert alone.shape == (2, WINDOW, OPEN_HEAD_CHANNELS)
    assert torch.equal(mixed[0], alone[0])
    assert torch.equal(mixed[1], with_previous[1]) and not torch.allclose(mixed[1], alone[1])
    assert torch.equal(from_latent, alone) and torch.equal(forward, alone)
    assert coarse.shape == alone.shape and torch.isfinite(coarse).all()


def test_codec_is_deterministic_given_the_seed_and_its_config_is_json():
    clip = torch.from_numpy(speech_like_motion(WINDOW)).unsqueeze(0)
    results = []
    for _ in range(2):
        codec = tiny_codec(OPEN_HEAD_CHANNELS, seed=7, dropout=0.1)
        optimiser = torch.optim.AdamW(codec.parameters(), lr=1e-3)
        torch.manual_seed(8)  # dropout draws
        for _ in range(3):
            out = codec(clip)
            loss = (out.reconstruction - clip).square().mean() + quantiser_loss(out.losses)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        results.append([p.detach().clone() for p in codec.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results))
    config = codec.config
    assert CodecConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="motion must be"):
        codec.encode(clip[:, :50])


# ---------------------------------------------------------------------------- loss
@pytest.fixture(scope="module")
def flame_head(tmp_path_factory):
    return import_flame(flame_fixtures.write_flame_npz(tmp_path_factory.mktemp("codec") / "flame.npz"))


def flame_like_motion(head, frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    motion = np.zeros((frames, head.num_channels), dtype=np.float32)
    motion[:, :10] = smooth_noise(rng, frames, 10, 10)
    motion[:, head.rotation_slice("jaw")] = np.abs(0.1 * smooth_noise(rng, frames, 3, 6))
    motion[:, head.rotation_slice("neck")] = 0.05 * smooth_noise(rng, frames, 3, 30)
    return motion


def test_vertex_subset_evaluates_exactly_those_vertices(flame_head):
    motion = torch.from_numpy(flame_like_motion(flame_head, 4)).double()
    index = np.array([0, 5, 17, 400, 799])
    full = TorchHeadModel(flame_head, dtype=torch.float64)(motion)
    subset_model = vertex_subset(flame_head, index).double()
    assert torch.allclose(subset_model(motion), full[:, index], atol=1e-12)
    assert not [name for name, _ in subset_model.named_buffers() if name.startswith("region_")]


def test_codec_loss_terms(flame_head):
    motion = flame_like_motion(flame_head, 2 * WINDOW, seed=3)
    stats = ChannelStats.from_motions([motion])
    target = torch.from_numpy(stats.normalise(motion)).reshape(2, WINDOW, -1)
    loss = CodecLoss(flame_head, stats, CodecLossConfig(head_vertices=200))
    assert len(loss.head_index) == 200 and len(loss.lip_index) == len(flame_head.regions["lips"])
    same = loss(target.clone(), target)
    assert same["vertices"] == 0 and same["lips"] == 0 and same["motion"] == 0 and same["total"] == 0

    codec = tiny_codec(flame_head.num_channels, seed=4)
    out = codec(target)
    valid = torch.ones(2, WINDOW, dtype=torch.bool)
    valid[1, 60:] = False  # a clip's padded tail
    terms = loss(out.reconstruction, target, valid, out.losses)
    expected = {"motion", "vertices", "lips", "commitment", "codebook", "token_entropy", "codebook_entropy", "total"}
    assert set(terms) == expected and all(torch.isfinite(v) for v in terms.values())
    assert terms["vertices"] > 0 and terms["lips"] > 0
    terms["total"].backward()
    assert codec.motion_in.weight.grad.abs().sum() > 0  # through the straight-through estimator

    # padded frames do not count
    changed = out.reconstruction.detach().clone()
    changed[1, 60:] += 5.0
    again = loss(changed, target, valid)
    before = loss(out.reconstruction.detach(), target, valid)
    for name in ("motion", "vertices", "lips"):
        assert torch.allclose(again[name], before[name])
    assert masked_mean(torch.ones(2, WINDOW, 3), valid) == 1


def test_codec_trains_with_the_full_loss(flame_head):
    motion = flame_like_motion(flame_head, WINDOW, seed=5)
    stats = ChannelStats.from_motions([motion])
    target = torch.from_numpy(stats.normalise(motion)).unsqueeze(0)
    loss = CodecLoss(flame_head, stats, CodecLossConfig(head_vertices=128))
    codec = tiny_codec(flame_head.num_channels, seed=6)
    optimiser = torch.optim.AdamW(codec.parameters(), lr=2e-3)
    history = []
    for _ in range(60):
        out = codec(target)
        terms = loss(out.reconstruction, target, None, out.losses)
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()
        history.append({k: v.item() for k, v in terms.items()})
    for name in ("motion", "vertices", "lips"):
        assert history[-1][name] < history[0][name] / 3, (name, history[0][name], history[-1][name])


def test_codec_loss_refuses_statistics_of_another_head():
    with pytest.raises(ValueError, match="channels"):
        CodecLoss(tiny_head(), ChannelStats((0.0,) * 3, (1.0,) * 3))
