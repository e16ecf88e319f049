"""Real-time factor of generation and where the time goes.

    RTF = generation seconds / audio seconds

measured on a loaded `Generator` (loading excluded, encoders included): the wall time of
`Generator.generate` for one clip, median over ``repeats`` runs after one warm-up run.
The split comes from the generator's own timings (``meta["timings"]``): speech encoder,
text encoder (captions), AR sampling, codec decoding; the rest of ``total_s`` is
windowing, smoothing and copies.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import numpy as np
import torch

from ..core.audio import SAMPLE_RATE
from ..machine import cpu_name

PARTS = ("speech_encoder_s", "text_encoder_s", "ar_s", "decoder_s")


@dataclass(frozen=True)
class SpeedResult:
    audio_s: float
    wall_s: float  # median over the repeats
    timings: dict[str, float]  # the median run's meta["timings"]
    repeats: int
    device: str
    threads: int
    machine: str

    @property
    def rtf(self) -> float:
        return self.wall_s / self.audio_s

    def summary(self) -> dict:
        return {"audio_s": round(self.audio_s, 2), "wall_s": round(self.wall_s, 3), "rtf": round(self.rtf, 4),
                "timings": self.timings, "repeats": self.repeats, "device": self.device, "threads": self.threads,
                "machine": self.machine}


def measure_speed(generator, audio: np.ndarray, schedule, options, repeats: int = 3) -> SpeedResult:
    """Time ``generator.generate(audio, schedule, options)`` on (N,) 16 kHz ``audio``."""
    generator.generate(audio, schedule, options)  # warm-up: first-call allocations, lazy imports
    runs = []
    for _ in range(repeats):
        start = generator.sync_time()
        take = generator.generate(audio, schedule, options)[0]
        runs.append((generator.sync_time() - start, take.meta["timings"]))
    runs.sort(key=lambda run: run[0])
    wall, timings = runs[len(runs) // 2]
    machine = f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"
    return SpeedResult(audio.size / SAMPLE_RATE, wall, dict(timings), repeats, str(generator.device),
                       torch.get_num_threads(), machine)


def speed_markdown(results: list[SpeedResult]) -> str:
    lines = ["| audio | device | torch threads | wall | RTF | speech encoder | captions | AR | codec decoder "
             "| other |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        parts = [r.timings.get(p, 0.0) for p in PARTS]
        other = max(r.wall_s - sum(parts), 0.0)
        cells = " | ".join(f"{v:.2f} s ({100 * v / r.wall_s:.0f}%)" for v in [*parts, other])
        lines.append(f"| {r.audio_s:.0f} s | {r.device} | {r.threads} | {r.wall_s:.2f} s | {r.rtf:.4f} | {cells} |")
    if results:
        lines.append(f"\nMachine: {results[0].machine}; median of {results[0].repeats} runs after a warm-up run, "
                     "checkpoint load excluded.")
    return "\n".join(lines)

