"""Training end to end: real datasets from the data engine, real processes, tiny models.

Every run is ``python -m model train ...`` in a subprocess (one torch thread), as a user
or torchrun starts it; the batch builders are also checked in-process against the
dataset loader's own window cutting.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model.ar.batch import ARBatch
from model.ar.model import ARConfig, CapTalkAR
from model.checkpoint import load_weights
from model.core.checkpoint_manifest import read_manifest
from model.codec import ChannelStats, CodecConfig, MotionCodec
from model.data.dataset import WINDOW_FRAMES, open_dataset, window_at
from model.core.head_model import HeadModel
from model.train.data import (
    ARBatches, CaptionStates, ClipCaptions, ClipTable, FeatureTable, codec_batch, cut_windows, load_motions,
    rank_rows, sample_windows, window_segments,
)
from model.train.config import TrainConfig
from model.train.loop import learning_rate

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ["--size", "tiny", "--batch", "4", "--lr", "2e-3", "--log-every", "5", "--val-windows", "4", "--workers", "1"]

torch.set_num_threads(1)


def run_model(*args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m model ARGS`` with one torch thread; output captured (tqdm's bar goes to stderr)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-3000:]}")
    return result


def train(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_model("-m", "model", "train", *args, check=check)


def log_entries(folder: Path, stage: str, **match) -> list[dict]:
    lines = (folder / "train_log.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    return [e for e in entries if e["stage"] == stage and all(e.get(k) == v for k, v in match.items())]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def head(open_head_file) -> HeadModel:
    return HeadModel.load(open_head_file)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, open_head_file) -> Path:
    """A 36-second dataset (2 train clips, 2 val clips, one with two caption segments)."""
    root = tmp_path_factory.mktemp("train") / "data"
    run_model("-m", "model", "data", "synth", "--out", str(root), "--hours", "0.01",
              "--voices", "flite_slt,flite_awb,flite_rms", "--workers", "1")
    return root


@pytest.fixture(scope="module")
def codec_run(dataset, tmp_path_factory) -> Path:
    """A tiny codec trained for 60 steps in one go: the reference the resumed run must match."""
    out = tmp_path_factory.mktemp("codec") / "ckpt"
    train("codec", "--data", str(dataset), "--out", str(out), "--steps", "60", "--val-every", "30",
          "--save-every", "30", *TINY)
    return out


# ------------------------------------------------------------------------------ pure parts
def test_learning_rate_warms_up_then_decays_along_a_cosine():
    config = TrainConfig(steps=1000, lr=1e-3, warmup_steps=50, min_lr_ratio=0.1)
    rates = np.array([learning_rate(s, config) for s in range(1000)])
    assert rates[0] == pytest.approx(1e-3 / 50) and rates[49] == pytest.approx(1e-3)
    assert np.all(np.diff(rates[:50]) > 0) and np.all(np.diff(rates[50:]) <= 0)
    assert rates[-1] == pytest.approx(1e-4, rel=1e-3)
    short = TrainConfig(steps=60, lr=1e-3, warmup_steps=1000)  # warm-up capped at a tenth of the run
    assert learning_rate(5, short) == pytest.approx(1e-3)


def test_vectorised_windows_equal_the_loaders_windows(dataset, head):
    data = open_dataset(dataset)
    records, motions, bad = load_motions(data.clips, head.num_channels)
    assert not bad
    stats = ChannelStats.from_motions(motions)
    table = ClipTable.build(records, motions, stats)
    clips, starts = sample_windows(table.lengths, 64, np.random.default_rng(0))
    extra = [(k, int(table.lengths[k]) - 30) for k in range(len(table))]  # windows running past the end
    clips = np.concatenate([clips, [k for k, _ in extra]])
    starts = np.concatenate([starts, [s for _, s in extra]])
    motion, previous, valid, has_previous = cut_windows(table, clips, starts)
    assert (starts[:64] % WINDOW_FRAMES == 0).mean() > 0.3  # half snapped to the grid (plus chance)
    for b, (k, start) in enumerate(zip(clips, starts)):
        window = window_at(records[k], motions[k], int(start))
        assert np.allclose(motion[b], stats.normalise(window.motion), atol=1e-6)
        assert np.array_equal(valid[b], window.valid) and has_previous[b] == window.has_previous
        if window.has_previous:
            assert np.allclose(previous[b], stats.normalise(window.previous), atol=1e-6)
        else:
            assert not previous[b].any()
        captions = ClipCaptions.from_record(records[k])
        segments = [(frame, *captions.stored[s]) for frame, s in window_segments(captions.frames, int(start))]
        assert tuple(segments) == window.segments


def test_a_global_batch_splits_across_processes_without_changing(dataset, head):
    data = open_dataset(dataset)
    records, motions, _ = load_motions(data.split("train"), head.num_channels)
    table = ClipTable.build(records, motions, ChannelStats.from_motions(motions))
    whole = codec_batch(table, seed=3, step=11, batch=8, rows=rank_rows(8, 0, 1))
    halves = [codec_batch(table, seed=3, step=11, batch=8, rows=rank_rows(8, r, 2)) for r in range(2)]
    for name in ("motion", "previous", "has_previous", "valid"):
        assert torch.equal(getattr(whole, name), torch.cat([getattr(h, name) for h in halves]))
    assert not whole.has_previous.all()  # some previous windows dropped (p = 0.1, or a clip's start)
    other = codec_batch(table, seed=3, step=12, batch=8, rows=rank_rows(8, 0, 1))
    assert not torch.equal(other.motion, whole.motion)


def test_ar_batches_follow_the_contract_and_rerender_captions_each_epoch(dataset, head):
    from model.encoders import speech_encoder, text_encoder
    from model.encoders.cache import FeatureCache

    data = open_dataset(dataset)
    records, motions, _ = load_motions(data.clips, head.num_channels)
    table = ClipTable.build(records, motions, ChannelStats.from_motions(motions))
    encoder = speech_encoder("logmel")
    cache = FeatureCache(dataset / ".cache" / "features")
    speech = FeatureTable.build([cache.speech(encoder, r.audio) for r in records], encoder.dim)
    captions = [ClipCaptions.from_record(r) for r in records]
    assert all(c.controls for c in captions)  # data-engine clips carry their controls
    states = CaptionStates(text_encoder("minilm"), cache)
    batches = ARBatches(table, speech, captions, states, context=10, seed=0, steps_per_epoch=2)

    two = [k for k, c in enumerate(captions) if len(c.frames) == 2][0]
    change = captions[two].frames[1]
    clips, starts = np.array([two, 0, 1]), np.array([change - 40, 0, 100])
    batch = batches.fixed_batch(clips, starts)
    assert isinstance(batch, ARBatch) and batch.size == 3
    assert batch.speech.shape == (3, WINDOW_FRAMES + 20, encoder.dim) and batch.style.shape[:2] == (3, 2)
    assert batch.segment_start.tolist() == [[0, 40], [0, WINDOW_FRAMES], [0, WINDOW_FRAMES]]
    assert not batch.speech_valid[1, :10].any() and batch.speech_valid[1, 10:].all()  # frames before the clip
    end = int(speech.lengths[1]) - 100 + 10  # clip 1 is shorter than two windows: speech runs out
    assert batch.speech_valid[2, :end].all() and not batch.speech_valid[2, end:].any()
    assert batch.style_mask[0, :2].any(-1).all() and not batch.style_mask[1, 1].any()  # no second segment
    assert batch.has_previous.tolist() == [bool(change - 40 >= 100), False, True]

    stored = captions[0].stored
    assert captions[0].captions(0, None) == stored
    epoch0, again, epoch1 = (captions[0].captions(0, e) for e in (0, 0, 1))
    assert epoch0 == again and epoch0 != epoch1 and all(s and e for s, e in epoch0 + epoch1)
    first = batches.step_batch(0, 4, rank_rows(4, 0, 1))
    assert first.style.shape[-1] == states.dim and first.style_mask.any() and first.emotion_mask.any()
    assert torch.equal(first.style, batches.step_batch(0, 4, rank_rows(4, 0, 1)).style)


# ------------------------------------------------------------------------------ codec runs
def test_codec_training_lowers_the_loss_and_writes_a_loadable_checkpoint(codec_run, head):
    entries = log_entries(codec_run, "codec", split="train")
    assert entries[-1]["step"] == 60
    assert entries[-1]["total"] < 0.5 * entries[0]["total"], (entries[0], entries[-1])
    assert entries[-1]["motion"] < entries[0]["motion"]
    assert all(e["steps_per_s"] > 0 for e in entries)
    validation = log_entries(codec_run, "codec", split="val")
    assert [v["step"] for v in validation] == [30, 60]
    assert {"lve_mm", "mhd_mm", "lodd_mm", "hpdd_deg", "motion", "lips"} <= set(validation[-1])

    manifest = read_manifest(codec_run)
    assert manifest["head_model"] == head.model_id and manifest["channels"] == head.channel_names
    assert manifest["channel_signature"] == head.channel_signature
    stats = ChannelStats.from_dict(manifest["stats"])
    assert stats.channels == head.num_channels
    summary = manifest["training"]["codec"]
    assert summary["steps"] == 60 and summary["clips"] == {"train": 2, "val": 2} and summary["wall_s"] > 0
    assert summary["final"]["lve_mm"] == pytest.approx(validation[-1]["lve_mm"], rel=1e-4)
    codec = load_weights(codec_run, "codec", MotionCodec(CodecConfig.from_dict(manifest["codec"]))).eval()
    motion = torch.from_numpy(stats.normalise(np.zeros((1, WINDOW_FRAMES, head.num_channels), np.float32)))
    with torch.no_grad():
        assert torch.isfinite(codec.decode(codec.encode(motion))).all()


def test_an_interrupted_codec_run_resumes_to_the_same_weights(codec_run, dataset, tmp_path):
    out = tmp_path / "ckpt"
    options = ["codec", "--data", str(dataset), "--out", str(out), "--steps", "60", "--val-every", "30",
               "--save-every", "30", *TINY]
    first = train(*options, "--stop-after", "20")
    assert "stopped after step 20" in first.stdout and not (out / "codec.safetensors").exists()

    # a real interruption: Ctrl-C in the middle of the resumed run saves the step it is at
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "model", "train", *options], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if any(e["step"] >= 30 for e in log_entries(out, "codec", split="train")):
            process.send_signal(signal.SIGINT)
            break
        time.sleep(0.05)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    stopped = log_entries(out, "codec", event="stop")[-1]["step"]
    assert 30 <= stopped < 60 and f"stopped after step {stopped}" in output

    last = train(*options)
    resumes = [e["step"] for e in log_entries(out, "codec", event="resume")]
    assert resumes == [20, stopped], resumes
    ours, reference = weights(out / "codec.safetensors"), weights(codec_run / "codec.safetensors")
    assert ours.keys() == reference.keys()
    for name in reference:
        assert torch.equal(ours[name], reference[name]), name
    assert read_manifest(out)["stats"] == read_manifest(codec_run)["stats"]
    assert "written" in last.stdout

    written = (out / "codec.safetensors").stat().st_mtime_ns
    again = train(*options)
    assert "already complete" in again.stdout and (out / "codec.safetensors").stat().st_mtime_ns == written
    changed = train(*options, "--lr", "1e-3", check=False)  # the last --lr counts
    assert changed.returncode == 2 and "--lr" in changed.stderr, changed.stderr


def test_two_processes_keep_identical_replicas_and_split_the_global_batch(dataset, tmp_path):
    out = tmp_path / "ddp"
    run_model("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
              "-m", "model", "train", "codec", "--data", str(dataset), "--out", str(out), "--steps", "20",
              "--val-every", "10", "--save-every", "10", "--device", "cpu", *TINY)
    validation = log_entries(out, "codec", split="val")
    assert [v["step"] for v in validation] == [10, 20]
    for entry in validation:
        assert len(entry["checksums"]) == 2 and len(set(entry["checksums"])) == 1, entry["checksums"]
    steps = log_entries(out, "codec", split="train")
    assert all(e["samples_per_step"] == 4 and e["rank_batch"] == 2 for e in steps)
    assert steps[-1]["total"] < steps[0]["total"]
    summary = read_manifest(out)["training"]["codec"]
    assert summary["processes"] == 2 and len(set(summary["replica_checksums"])) == 1
    # the files rank 0 wrote hold the weights both replicas ended with
    codec = load_weights(out, "codec", MotionCodec(CodecConfig.from_dict(read_manifest(out)["codec"])))
    from model.train.distributed import parameter_checksum

    assert parameter_checksum(codec) == summary["replica_checksums"][0]


def test_a_dataset_for_another_head_model_is_refused(dataset, codec_run, tmp_path):
    other = tmp_path / "flame-data"
    other.mkdir()
    info = json.loads((dataset / "dataset.json").read_text())
    info.update(head_model="flame-2023-user", channels=[f"expression{k:03d}" for k in range(100)])
    (other / "dataset.json").write_text(json.dumps(info))
    shutil.copy(dataset / "manifest.jsonl", other / "manifest.jsonl")
    result = train("codec", "--data", str(other), "--out", str(tmp_path / "ckpt"), "--steps", "5", *TINY, check=False)
    assert result.returncode == 2
    assert "head model 'flame-2023-user'" in result.stderr and "--head" in result.stderr, result.stderr
    assert not (tmp_path / "ckpt" / "codec.safetensors").exists()
    refused = train("ar", "--data", str(other), "--checkpoint", str(codec_run), "--steps", "5",
                    "--speech-encoder", "logmel", *TINY, check=False)
    assert refused.returncode == 2 and "flame-2023-user" in refused.stderr, refused.stderr


def test_bad_clips_are_reported_and_skipped(dataset, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken, ignore=shutil.ignore_patterns(".cache"))
    entries = [json.loads(line) for line in (broken / "manifest.jsonl").read_text().splitlines()]
    train_clips = [e for e in entries if e["split"] == "train"]
    (broken / train_clips[0]["motion"]).write_bytes(b"not a motion file")
    lost = dict(train_clips[1], id="lost-audio", audio="clips/nowhere.wav")
    lines = [json.dumps(e) for e in entries] + [json.dumps(lost), "{not json"]
    (broken / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "ckpt"
    result = train("codec", "--data", str(broken), "--out", str(out), "--steps", "5", "--val-every", "5", *TINY)
    assert "3 clips left out" in result.stdout, result.stdout
    assert train_clips[0]["id"] in result.stdout and "lost-audio" in result.stdout and "line" in result.stdout
    assert read_manifest(out)["training"]["codec"]["clips"]["train"] == 1


# ------------------------------------------------------------------------------ AR run
def test_ar_training_lowers_the_cross_entropy(codec_run, dataset, tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    for name in ("codec.safetensors", "captalk.json"):
        shutil.copy(codec_run / name, checkpoint / name)
    result = train("ar", "--data", str(dataset), "--checkpoint", str(checkpoint), "--steps", "60",
                   "--val-every", "30", "--save-every", "30", "--speech-encoder", "logmel", "--text-encoder",
                   "minilm", *TINY)
    assert f"feature cache: {dataset / '.cache' / 'features'}" in result.stdout
    assert any((dataset / ".cache" / "features" / "speech").iterdir())
    entries = log_entries(checkpoint, "ar", split="train")
    assert entries[-1]["step"] == 60
    first, last = np.mean([e["ce"] for e in entries[:2]]), np.mean([e["ce"] for e in entries[-2:]])
    assert last < first - 0.01, [e["ce"] for e in entries]
    validation = log_entries(checkpoint, "ar", split="val")
    assert [v["step"] for v in validation] == [30, 60] and 0 < validation[-1]["bit_accuracy"] < 1
    # whole val clips generated with the weights being trained, scored against their motion
    assert {"gen_lve_mm", "gen_mhd_mm", "gen_lodd_mm", "gen_hpdd_deg"} <= set(validation[-1])
    assert 0 < validation[-1]["gen_lve_mm"] < 100

    manifest = read_manifest(checkpoint)
    assert manifest["speech_encoder"] == "logmel-80" and manifest["text_encoder"] == "minilm-l6-v2"
    assert manifest["codec"] == read_manifest(codec_run)["codec"] and "codec" in manifest["training"]
    assert manifest["training"]["ar"]["steps"] == 60
    config = ARConfig.from_dict(manifest["ar"])
    assert config.speech_dim == 81 and config.text_dim == 384
    load_weights(checkpoint, "ar", CapTalkAR(config))
