"""The training loop both stages share: AdamW, warm-up + cosine learning rate, gradient
clipping, progress bar, periodic validation, resumable state, one or many processes.

A stage (`Stage`) supplies the model, a loss module, batches, validation and its own
JSON state; this module owns everything about *how* it is trained.

Determinism and resume. Nothing random carries over from one step to the next: the data
of step s comes from a generator seeded by (seed, s) (see `model.train.data.step_rng`)
and torch's generator (dropout) is reseeded from (seed, s, rank) before the step. So
the weights after step s depend only on the weights and optimiser moments before it,
which is all the saved state holds: a run stopped at step k and resumed ends exactly
where an uninterrupted run ends (same options, same number of processes).

The learning-rate schedule spans ``steps``: linear warm-up over ``warmup_steps`` (at most
a tenth of the run), then a cosine from ``lr`` down to ``min_lr_ratio * lr``. Rerunning
with a larger ``--steps`` extends a finished run (the cosine is re-spread over the new
length from where it stands); to stop early without changing the schedule use
``stop_after``.

State files live in ``state_dir`` as ``step-NNNNNNNN.{safetensors,json}``
(`model.checkpoint.save_state`), named by ``latest.json`` which is rewritten last: a
crash while saving leaves the previous state in force.

Processes. Under torchrun every rank holds a replica wrapped in DistributedDataParallel
(on several machines the output folder and feature cache must be on shared storage);
``batch`` is the global batch, each rank computes its own rows of it (so it must divide
by the number of processes) and DDP averages the gradients, i.e. a step sees the same
``batch`` windows whatever the number of processes. (The average of per-rank means equals
the global mean up to terms that are not plain means over windows: frame masks of padded
windows, and the codec's codebook entropy, which each rank takes over its own rows.) Validation items are shared out
between ranks and their sums added up. Rank 0 alone prints, logs and writes files; every
validation also compares the replicas' parameter checksums and fails if they differ.
"""
from __future__ import annotations

import inspect
import json
import math
import signal
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_state, save_state
from ..core.checkpoint_manifest import CheckpointError
from . import distributed
from .config import TrainConfig
from .distributed import DistEnv
from ..core.errors import BadInput

STATE_SUBDIR = "train_state"  # in the checkpoint folder: one subfolder per stage
LOG_FILE = "train_log.jsonl"  # in the checkpoint folder, both stages
STATE_POINTER = "latest.json"
MAX_SKIPPED_STEPS = 20  # consecutive non-finite gradients before giving up
TORCH_STREAM = 7  # keeps torch's seeds apart from the data streams in model.train.data


class TrainingError(BadInput):
    """Training cannot go on (diverged, or a state that does not fit); the message says why."""


def learning_rate(step: int, config: TrainConfig) -> float:
    """Learning rate of (0-based) ``step``: warm-up then cosine (module docstring)."""
    warmup = max(1, min(config.warmup_steps, config.steps // 10))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, config.steps - warmup))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.lr * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


def seed_torch(seed: int, step: int, rank: int) -> None:
    """Reseed torch (CPU and every GPU) for one step: dropout differs per step and rank."""
    state = np.random.SeedSequence([seed, TORCH_STREAM, step, rank]).generate_state(2, dtype=np.uint32)
    torch.manual_seed(int(state[0]) << 32 | int(state[1]))


def make_optimiser(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (biases, norms, gains and single vectors are
    offsets and scales, which decaying towards 0 would only distort)."""
    decay, no_decay = [], []
    for _, parameter in sorted(model.named_parameters()):
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


class Stage(Protocol):
    """What a training stage gives the loop."""

    name: str  # "codec" | "ar": log entries and messages
    objective: str  # the loss term minimised (a key of the loss module's output)
    model: nn.Module  # the parameters trained, saved and restored
    loss_module: nn.Module  # forward(batch) -> dict of scalar tensors incl. ``objective``; holds ``model``

    def batch(self, step: int, rank: int, world_size: int) -> Any:
        """This rank's rows of step ``step``'s global batch (an object with ``.to(device)``)."""

    def validate(self, rank: int, world_size: int) -> "Tally":
        """Validation figures over this rank's share of the items (no gradients, eval mode)."""

    def identity(self) -> dict:
        """JSON: what a saved state must match to be resumed (model configuration)."""


class Tally:
    """Validation figures as sums and counts, so ranks can add theirs up; each figure has
    its own count (some are means over windows, others over clips)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def add(self, values: dict[str, float], count: float) -> None:
        """``values``: means over ``count`` items."""
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value) * count
            self.counts[name] = self.counts.get(name, 0.0) + count


@dataclass
class TrainResult:
    step: int  # steps done
    complete: bool  # reached ``steps``
    interrupted: bool = False  # stopped by a signal (state saved)
    already_complete: bool = False  # nothing to do: a saved state had reached ``steps``
    elapsed_s: float = 0.0  # wall time in the loop over all runs (validation and saving included)
    stepping_s: float = 0.0  # time in training steps over all runs (steps/s = step / stepping_s)
    validation: dict = field(default_factory=dict)  # the last validation's means
    checksums: list = field(default_factory=list)  # per-rank parameter checksums at the end
    extra: dict = field(default_factory=dict)  # the stage's JSON state as saved


def run_summary(result: TrainResult, config: TrainConfig, env: DistEnv) -> dict:
    """The manifest's training summary fields every stage shares (JSON)."""
    summary = {
        "steps": result.step, "batch": config.batch, "lr": config.lr, "seed": config.seed,
        "processes": env.world_size, "device": env.device.type, "wall_s": round(result.elapsed_s, 1),
        "steps_per_s": round(result.step / max(result.stepping_s, 1e-9), 4),
        "final": {name: round(value, 6) for name, value in result.validation.items()},
    }
    if result.checksums:
        summary["replica_checksums"] = result.checksums
    return summary


# ------------------------------------------------------------------------------ state files
def load_latest(state_dir: Path) -> dict | None:
    """The newest saved training state in ``state_dir``, or None for a fresh start."""
    pointer = Path(state_dir) / STATE_POINTER
    if not pointer.exists():
        return None
    try:
        stem = json.loads(pointer.read_text())["stem"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"'{pointer}' cannot be read ({exc}); delete {state_dir} to start afresh") from None
    return load_state(Path(state_dir) / stem)


def save_latest(state_dir: Path, step: int, state: dict) -> None:
    """Write ``state`` as step ``step``, point ``latest.json`` at it, remove older states."""
    state_dir = Path(state_dir)
    stem = f"step-{step:08d}"
    save_state(state_dir / stem, state)
    pointer = state_dir / STATE_POINTER
    temporary = pointer.with_suffix(".tmp")
    temporary.write_text(json.dumps({"stem": stem, "step": step}))
    temporary.replace(pointer)
    for old in state_dir.glob("step-*"):
        if not old.name.startswith(stem + "."):
            old.unlink(missing_ok=True)


def check_resumable(saved: dict, config: TrainConfig, identity: dict, state_dir: Path) -> None:
    """Refuse to resume a state made with other training options or another model."""
    saved_key, key = saved.get("config", {}), config.resume_key()
    changed = [f"--{name.replace('_', '-')} {saved_key.get(name)} (now {value})"
               for name, value in key.items() if saved_key.get(name) != value]
    if saved.get("identity") != identity:
        changed.append("the model configuration (--size, --dropout, or the codec it builds on)")
    if changed:
        raise TrainingError(
            f"'{state_dir}' holds a run made with other options: {'; '.join(changed)}. Rerun with the same "
            f"options to resume it, or delete '{state_dir}' (or choose another output folder) to start afresh."
        )


# ------------------------------------------------------------------------------ helpers
class RunLog:
    """``train_log.jsonl`` lines (rank 0 only): one JSON object per event."""

    def __init__(self, path: Path | None, stage: str, env: DistEnv):
        self.path, self.stage, self.env = path, stage, env

    def write(self, **entry) -> None:
        if not self.env.is_main or self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as stream:
            stream.write(json.dumps({"stage": self.stage, "time": round(time.time(), 3), **entry}) + "\n")


class Prefetcher:
    """Batches of the coming steps built in background threads, handed out in step order.
    Batches depend only on their step, so threads cannot change what a step sees."""

    def __init__(self, make: Callable[[int], Any], steps: range, workers: int):
        self.make, self.steps = make, iter(steps)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="batches") if workers > 0 else None
        self.pending: deque = deque()
        for _ in range(2 * workers):
            self._submit()

    def _submit(self) -> None:
        step = next(self.steps, None)
        if step is not None:
            self.pending.append(self.pool.submit(self.make, step))

    def next(self) -> Any:
        if self.pool is None:
            return self.make(next(self.steps))
        future = self.pending.popleft()
        self._submit()
        return future.result()

    def close(self) -> None:
        if self.pool is not None:
            for future in self.pending:
                future.cancel()
            self.pool.shutdown(wait=True)


class StopRequest:
    """SIGINT / SIGTERM ask the loop to stop after the current step and save its state; a
    second Ctrl-C stops at once (the last saved state stays)."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        for number in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[number] = signal.signal(number, self._handle)
            except ValueError:  # not the main thread: signals stay as they are
                pass
        return self

    def _handle(self, number, frame) -> None:
        if self.requested and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


class TermMeans:
    """Running means of the loss terms between two log lines (summed as tensors: no GPU sync per step)."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.count += 1

    def means(self, env: DistEnv) -> dict[str, float]:
        local = {name: value.item() / max(self.count, 1) for name, value in self.sums.items()}
        total = distributed.sum_values(env, local)
        self.sums, self.count = {}, 0
        return {name: value / env.world_size for name, value in total.items()}


def _no_buffer_sync() -> dict:
    """DDP's option for "do not broadcast buffers every forward" (renamed in newer torch)."""
    parameters = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in parameters else {"broadcast_buffers": False}


def _format(values: dict[str, float]) -> str:
    return "  ".join(f"{name} {value:.4g}" for name, value in values.items())


# ------------------------------------------------------------------------------ the loop
def validate(stage: Stage, env: DistEnv) -> dict[str, float]:
    """The stage's validation figures, each averaged over all ranks' items."""
    stage.loss_module.eval()
    with torch.no_grad():
        tally = stage.validate(env.rank, env.world_size)
    stage.loss_module.train()
    # a rank with no items has no figures: every rank adds up the union of the names
    names = list(dict.fromkeys(n for names in distributed.gather_objects(env, list(tally.sums)) for n in names))
    values = {}
    for name in names:
        values[f"sum:{name}"] = tally.sums.get(name, 0.0)
        values[f"count:{name}"] = tally.counts.get(name, 0.0)
    totals = distributed.sum_values(env, values)
    return {n: totals[f"sum:{n}"] / totals[f"count:{n}"] for n in names if totals[f"count:{n}"] > 0}


def replica_checksums(stage: Stage, env: DistEnv) -> list[str]:
    checksums = distributed.gather_objects(env, distributed.parameter_checksum(stage.model))
    if len(set(checksums)) > 1:
        raise TrainingError(f"the {env.world_size} processes' parameters differ (checksums {checksums}): "
                            "the replicas diverged")
    return checksums


def train(stage: Stage, config: TrainConfig, env: DistEnv, state_dir: Path, log_path: Path | None,
          resume: dict | None, extra_state: dict) -> TrainResult:
    """Train ``stage.model`` to ``config.steps`` (or ``stop_after``), resuming from ``resume``.

    ``extra_state`` (JSON) is saved with every state, e.g. the stage's channel statistics.
    Returns where it stopped; files other than the state and the log are the caller's.
    """
    if config.batch % env.world_size:
        raise TrainingError(f"--batch {config.batch} does not split evenly over {env.world_size} processes")
    seen = distributed.gather_objects(env, None if resume is None else int(resume["step"]))
    if len(set(seen)) > 1:
        raise TrainingError(f"the processes found different training states in '{state_dir}' (steps {seen}): "
                            "on several machines the output folder must be on storage they all see")
    log = RunLog(log_path, stage.name, env)
    model = stage.model
    optimiser = make_optimiser(model, config)
    start, elapsed, stepping, last_validation = 0, 0.0, 0.0, {}
    if resume is not None:
        check_resumable(resume, config, stage.identity(), state_dir)
        model.load_state_dict(resume["model"])
        optimiser.load_state_dict(resume["optimizer"])
        start, elapsed = int(resume["step"]), float(resume.get("elapsed_s", 0.0))
        stepping = float(resume.get("stepping_s", 0.0))
        last_validation = resume.get("validation", {})
        if start >= config.steps:
            return TrainResult(start, True, already_complete=True, elapsed_s=elapsed, stepping_s=stepping,
                               validation=last_validation, extra=resume.get("extra", {}))
        notes = []
        if resume.get("steps") != config.steps:
            notes.append(f"schedule re-spread from {resume.get('steps')} to {config.steps} steps")
        if resume.get("world_size") != env.world_size:
            notes.append(f"{resume.get('world_size')} -> {env.world_size} processes: same global batch, "
                         "other dropout draws than an uninterrupted run")
        if env.is_main:
            detail = f" ({'; '.join(notes)})" if notes else ""
            print(f"{stage.name}: resuming at step {start} of {config.steps}{detail}")
        log.write(event="resume", step=start, steps=config.steps, world_size=env.world_size, notes=notes)
    else:
        log.write(event="start", steps=config.steps, batch=config.batch, world_size=env.world_size,
                  config=asdict(config))
    end = min(config.steps, config.stop_after) if config.stop_after else config.steps
    if start >= end:
        return TrainResult(start, start >= config.steps, elapsed_s=elapsed, stepping_s=stepping,
                           validation=last_validation, extra=extra_state)

    module: nn.Module = stage.loss_module
    if env.distributed:
        # no buffer broadcast per step: nothing trained has running statistics, and the
        # loss modules hold large constant buffers (head-model bases)
        module = nn.parallel.DistributedDataParallel(
            stage.loss_module, device_ids=[env.device.index] if env.device.type == "cuda" else None,
            find_unused_parameters=getattr(stage, "find_unused_parameters", False), **_no_buffer_sync(),
        )
    module.train()

    def state(step: int) -> dict:
        return {"step": step, "steps": config.steps, "model": model.state_dict(), "optimizer": optimiser.state_dict(),
                "config": config.resume_key(), "identity": stage.identity(), "extra": extra_state,
                "world_size": env.world_size, "elapsed_s": elapsed + time.perf_counter() - run_start,
                "stepping_s": stepping, "validation": last_validation}

    from tqdm.auto import tqdm

    bar = tqdm(total=config.steps, initial=start, desc=f"train {stage.name}", unit="step", disable=not env.is_main,
               dynamic_ncols=True, mininterval=1.0)
    prefetch = Prefetcher(lambda s: stage.batch(s, env.rank, env.world_size), range(start, end), config.workers)
    means, skipped, interrupted = TermMeans(), 0, False
    step = start
    interval_seconds, interval_steps = 0.0, 0
    run_start = time.perf_counter()
    try:
        with StopRequest() as stop:
            for step in range(start, end):
                began = time.perf_counter()
                seed_torch(config.seed, step, env.rank)
                batch = prefetch.next().to(env.device)
                rate = learning_rate(step, config)
                for group in optimiser.param_groups:
                    group["lr"] = rate
                terms = module(batch)
                optimiser.zero_grad(set_to_none=True)
                terms[stage.objective].backward()
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                if torch.isfinite(norm):  # the same on every rank: gradients are averaged before this
                    optimiser.step()
                    skipped = 0
                else:
                    skipped += 1
                    if skipped >= MAX_SKIPPED_STEPS:
                        raise TrainingError(f"{stage.name}: {skipped} steps in a row gave non-finite gradients "
                                            f"(step {step + 1}); lower --lr or check the data")
                means.add({**terms, "grad_norm": norm})
                took = time.perf_counter() - began  # the step and the wait for its batch, not validation
                stepping += took
                interval_seconds += took
                interval_steps += 1
                done = step + 1
                bar.update(1)
                if done % config.log_every == 0 or done == end:
                    speed = interval_steps / max(interval_seconds, 1e-9)
                    train_means = means.means(env)
                    bar.set_postfix(loss=f"{train_means[stage.objective]:.4g}", lr=f"{rate:.2e}",
                                    steps_s=f"{speed:.2f}")
                    log.write(split="train", step=done, lr=rate, steps_per_s=round(speed, 4),
                              samples_per_step=config.batch, rank_batch=config.batch // env.world_size,
                              **{k: round(v, 6) for k, v in train_means.items()})
                    interval_seconds, interval_steps = 0.0, 0
                if done % config.val_every == 0 or done == config.steps:
                    last_validation = validate(stage, env)
                    checksums = replica_checksums(stage, env)
                    log.write(split="val", step=done, checksums=checksums,
                              **{k: round(v, 6) for k, v in last_validation.items()})
                    if env.is_main:
                        figures = _format(last_validation) if last_validation else "no val clips"
                        bar.write(f"{stage.name} step {done}/{config.steps}  val: {figures}")
                interrupted = distributed.any_rank(env, stop.requested)
                if done % config.save_every == 0 or done == end or interrupted:
                    if env.is_main:
                        save_latest(state_dir, done, state(done))
                    distributed.barrier(env)
                if interrupted:
                    break
    finally:
        prefetch.close()
        bar.close()
    done = step + 1
    elapsed += time.perf_counter() - run_start
    checksums = replica_checksums(stage, env)
    if interrupted or done < config.steps:
        log.write(event="stop", step=done, interrupted=interrupted)
    return TrainResult(done, done >= config.steps, interrupted=interrupted, elapsed_s=elapsed, stepping_s=stepping,
                       validation=last_validation, checksums=checksums, extra=extra_state)
