"""Stage 1: train the motion codec on a dataset; write ``codec.safetensors`` and ``captalk.json``.

    python -m model train codec --data DATA --out CKPT [--size small] [--steps N] [--batch B] ...

Data flow: the train and val splits are loaded once (`ClipTable`, normalised with
channel statistics of the train split, stored in the state so a resumed run uses the
same ones); each step cuts random 100-frame windows and their previous windows
(`codec_batch`, the previous dropped with p = 0.1) and minimises `CodecLoss` (motion,
head and lip vertices, BSQ terms). Validation decodes fixed val windows (the grid
generation uses, true previous window as context) and reports the loss terms plus the
paper's metrics in real units (`model.metrics`: LVE, MHD, FDD, LODD mm; HPDD degrees).

Files in CKPT: ``train_state/codec/`` (resume), ``train_log.jsonl`` (appended), and at
the end ``codec.safetensors`` and ``captalk.json`` (`model.checkpoint`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.audio import MOTION_FPS
from ..checkpoint import save_weights
from ..core.checkpoint_manifest import CheckpointError, read_manifest, write_manifest
from ..codec import ChannelStats, CodecConfig, CodecLoss, MotionCodec
from ..data.dataset import DatasetError
from ..core.head_model import HeadModel
from ..metrics import mean_metrics, sequence_metrics
from . import distributed
from .data import (
    ClipTable, CodecBatch, codec_batch, cut_windows, grid_windows, load_motions, open_training_data, rank_rows,
    report_left_out,
)
from .loop import (
    LOG_FILE, STATE_SUBDIR, Tally, TrainConfig, TrainResult, check_resumable, load_latest, run_summary, train,
)

VALIDATION_CHUNK = 16  # windows per forward pass in validation

# Architecture presets; anything not named keeps CodecConfig's default. "base" is
# CodecConfig's own default size (the paper's codec is about twice as wide).
CODEC_SIZES: dict[str, dict] = {
    "tiny": {"width": 64, "layers": 1, "heads": 2},
    "small": {"width": 128, "layers": 2, "heads": 4},
    "base": {"width": 256, "layers": 4, "heads": 4},
}
# Manifest keys that belong to a stage-2 model trained on an earlier codec.
AR_KEYS = ("ar", "speech_encoder", "text_encoder")


@dataclass(frozen=True)
class CodecRun:
    """What to train on and where to write, besides the loop's `TrainConfig`."""

    data: Path
    out: Path
    size: str = "small"
    dropout: float | None = None  # None: CodecConfig's default
    head: Path | None = None  # head-model file; None: the open head
    device: str = "auto"
    val_windows: int = 32


def codec_config(channels: int, size: str, dropout: float | None) -> CodecConfig:
    if size not in CODEC_SIZES:
        raise ValueError(f"unknown --size {size!r}: use one of {', '.join(CODEC_SIZES)}")
    overrides = dict(CODEC_SIZES[size])
    if dropout is not None:
        overrides["dropout"] = dropout
    return CodecConfig(channels=channels, **overrides)


def codec_identity(config: CodecConfig, head_model: str) -> dict:
    """What a saved codec training state must match to be resumed."""
    return {"stage": "codec", "codec": config.to_dict(), "head_model": head_model}


def load_head(path: Path | None) -> tuple[HeadModel, Path]:
    from ..core.paths import default_open_head_file

    path = Path(path) if path else default_open_head_file()
    return HeadModel.load(path), path


class CodecLossModule(nn.Module):
    """forward(CodecBatch) -> loss terms; what DistributedDataParallel wraps."""

    def __init__(self, codec: MotionCodec, loss: CodecLoss):
        super().__init__()
        self.codec, self.loss = codec, loss

    def forward(self, batch: CodecBatch) -> dict[str, torch.Tensor]:
        out = self.codec(batch.motion, batch.previous, batch.has_previous)
        return self.loss(out.reconstruction, batch.motion, batch.valid, out.losses)


class CodecStage:
    name = "codec"
    objective = "total"

    def __init__(self, codec: MotionCodec, loss: CodecLoss, head: HeadModel, stats: ChannelStats,
                 train_table: ClipTable, val_table: ClipTable, config: TrainConfig, val_windows: int, device):
        self.model = codec
        self.loss_module = CodecLossModule(codec, loss).to(device)
        self.head, self.stats, self.config, self.device = head, stats, config, device
        self.train_table, self.val_table = train_table, val_table
        self.val_clips, self.val_starts = (grid_windows(val_table, val_windows) if len(val_table)
                                           else (np.zeros(0, np.int64), np.zeros(0, np.int64)))

    def identity(self) -> dict:
        return codec_identity(self.model.config, self.head.model_id)

    def batch(self, step: int, rank: int, world_size: int) -> CodecBatch:
        return codec_batch(self.train_table, self.config.seed, step, self.config.batch,
                           rank_rows(self.config.batch, rank, world_size))

    def validate(self, rank: int, world_size: int) -> Tally:
        """Loss terms and metrics (real units) of this rank's val windows (every world_size-th)."""
        clips, starts = self.val_clips[rank::world_size], self.val_starts[rank::world_size]
        tally, metrics = Tally(), []
        for first in range(0, len(clips), VALIDATION_CHUNK):
            chunk = slice(first, first + VALIDATION_CHUNK)
            motion, previous, valid, has_previous = cut_windows(self.val_table, clips[chunk], starts[chunk])
            batch = CodecBatch(*(torch.from_numpy(a) for a in (motion, previous, has_previous, valid))).to(self.device)
            out = self.model(batch.motion, batch.previous, batch.has_previous)
            terms = self.loss_module.loss(out.reconstruction, batch.motion, batch.valid, out.losses)
            tally.add({name: value.item() for name, value in terms.items()}, batch.size)
            decoded = self.stats.denormalise(out.reconstruction.float().cpu().numpy())
            truth = self.stats.denormalise(motion)
            for k in range(batch.size):
                frames = int(valid[k].sum())
                metrics.append(sequence_metrics(self.head, decoded[k, :frames], truth[k, :frames]))
        if metrics:
            tally.add(mean_metrics(metrics).as_dict(), len(metrics))
        return tally


def write_codec_checkpoint(out: Path, codec: MotionCodec, head: HeadModel, stats: ChannelStats, summary: dict) -> None:
    """codec.safetensors + captalk.json; a stage-2 model of an earlier codec is dropped from the manifest."""
    manifest = _manifest_or_empty(out)
    if any(key in manifest for key in AR_KEYS):
        print(f"note: '{out}' held a stage-2 model of an earlier codec; it no longer fits and must be retrained")
    manifest = {key: value for key, value in manifest.items() if key not in AR_KEYS + ("format", "format_version")}
    manifest.update(head_model=head.model_id, channels=list(head.channel_names),
                    channel_signature=head.channel_signature, stats=stats.to_dict(),
                    codec=codec.config.to_dict(), training={"codec": summary})
    save_weights(out, "codec", codec)
    write_manifest(out, manifest)


def train_codec(run: CodecRun, config: TrainConfig) -> TrainResult:
    """Train (or resume, or find finished) the codec of ``run.out``; rank 0 writes the files."""
    env = distributed.setup(run.device)
    try:
        return _train_codec(run, config, env)
    finally:
        distributed.teardown(env)


def _train_codec(run: CodecRun, config: TrainConfig, env) -> TrainResult:
    head, head_path = load_head(run.head)
    codec_cfg = codec_config(head.num_channels, run.size, run.dropout)
    identity = codec_identity(codec_cfg, head.model_id)
    out = Path(run.out)
    state_dir = out / STATE_SUBDIR / "codec"
    resume = load_latest(state_dir)
    finished = (out / "codec.safetensors").exists() and "codec" in _manifest_or_empty(out)
    if resume is not None:
        check_resumable(resume, config, identity, state_dir)
        if resume["step"] >= config.steps and finished:  # before any data is read
            if env.is_main:
                print(f"codec training in '{out}' is already complete ({resume['step']} steps); nothing to do "
                      "(pass a larger --steps to train on)")
            return TrainResult(int(resume["step"]), True, already_complete=True)

    fix = (f"Pass --head with that head model's file (training used '{head_path}'), "
           "or a dataset made for this head model.")
    train_records, val_records = open_training_data(Path(run.data), head.model_id, tuple(head.channel_names), fix, env)
    train_records, train_motions, bad = load_motions(train_records, head.num_channels)
    val_records, val_motions, bad_val = load_motions(val_records, head.num_channels)
    report_left_out(bad + bad_val, env)
    if not train_records:
        raise DatasetError(f"dataset '{run.data}' has no loadable clips in its train split")
    # a resumed run keeps the statistics it started with, whatever was added to the data since
    stats = ChannelStats.from_dict(resume["extra"]["stats"]) if resume else ChannelStats.from_motions(train_motions)
    train_table = ClipTable.build(train_records, train_motions, stats)
    val_table = ClipTable.build(val_records, val_motions, stats)
    del train_motions, val_motions

    torch.manual_seed(config.seed)  # the same initial weights on every rank
    codec = MotionCodec(codec_cfg).to(env.device)
    stage = CodecStage(codec, CodecLoss(head, stats), head, stats, train_table, val_table, config, run.val_windows,
                       env.device)
    if env.is_main:
        parameters = sum(p.numel() for p in codec.parameters())
        print(f"codec {run.size}: {parameters / 1e6:.2f} M parameters; {len(train_table)} train clips "
              f"({train_table.frames / MOTION_FPS / 3600:.3f} h), {len(val_table)} val clips, "
              f"{len(stage.val_clips)} val windows; batch {config.batch} = {env.world_size} x "
              f"{config.batch // env.world_size} on {env.device.type}")
    extra = {"stats": stats.to_dict(), "head_model": head.model_id}
    result = train(stage, config, env, state_dir, out / LOG_FILE, resume, extra)
    if env.is_main:
        if result.complete:  # also a finished state whose files were never written (a crash in between)
            summary = {"data": str(run.data), "data_hours": round(train_table.frames / MOTION_FPS / 3600, 4),
                       "clips": {"train": len(train_table), "val": len(val_table)},
                       "clips_left_out": len(bad) + len(bad_val), "size": run.size, **run_summary(result, config, env)}
            write_codec_checkpoint(out, codec, head, stats, summary)
            print(f"codec: {out / 'codec.safetensors'} and {out / 'captalk.json'} written "
                  f"({result.step} steps, {result.elapsed_s:.0f} s)")
        else:
            print(f"codec: stopped after step {result.step} of {config.steps}; training state in '{state_dir}'. "
                  "Rerun the same command to resume.")
    distributed.barrier(env)
    return result


def _manifest_or_empty(out: Path) -> dict:
    try:
        return read_manifest(out)
    except CheckpointError:
        return {}
