"""Captions that change mid-sentence: how fast a change takes effect, and whether it jumps.

One audio clip is generated three times with the same seed: with the change at
``switch_s`` ("switched"), and with the captions before and after the change held for the
whole clip ("before", "after"). With c the first frame of the change
(`model.core.schedule.start_frame`), fps 25:

- attribute trace a(t): the mean of the attribute's channels per frame (e.g. the two
  mouthSmile channels for a change to happy);
- levels L_before, L_after: the means of a(t) over frames [c, T) of the "before" and
  "after" runs, i.e. where the switched run should end up and where it came from;
- take-effect delay: (f - c) / fps for the first frame f >= c at which the 5-frame mean
  of the switched trace, a(f..f+4), has covered half the way from L_before to L_after;
  the bar is 0.5 s;
- untouched before: max |switched - before| over frames [0, c) and all channels; a
  change must not act before its start (exactly 0 with smoothing off);
- frame-to-frame change d(t) = mean over head vertices of ||v(t) - v(t-1)|| in mm;
  the jump at the switch is max d(t) over t in [c, c + 13) (the half second after
  the change); the clip's normal range is max d(t) over every frame of the "before"
  and "after" runs (their 99th percentile is reported too). The bar: jump <= range.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..core.audio import MOTION_FPS
from ..core.schedule import CaptionSegment
from ..core.head_model import HeadModel
from ..metrics import METRES_TO_MM
from ..core.schedule import start_frame

TAKE_EFFECT_BAR_S = 0.5
JUMP_SPAN_FRAMES = 13  # 0.5 s after the change
TRACE_MEAN_FRAMES = 5

GenerateClip = Callable[[object, Sequence[CaptionSegment]], np.ndarray]


@dataclass(frozen=True)
class SwitchCase:
    """A change of captions at ``switch_s`` seconds, watched through ``channels``."""

    switch_s: float
    style: str
    emotion_before: str
    emotion_after: str
    attribute: str  # what the trace shows, for labels ("smile")
    channels: tuple[str, ...]


@dataclass(frozen=True)
class SwitchResult:
    case: SwitchCase
    change_frame: int
    take_effect_s: float  # inf when the switched run never gets half way
    level_before: float
    level_after: float
    untouched_before: float  # max |switched - before| before the change, real units
    jump_mm: float
    normal_max_mm: float
    normal_p99_mm: float
    traces: dict  # name -> (T,) arrays for the plot: switched/before/after attribute, d_switched

    @property
    def takes_effect_in_time(self) -> bool:
        return self.take_effect_s <= TAKE_EFFECT_BAR_S

    @property
    def no_jump(self) -> bool:
        return self.jump_mm <= self.normal_max_mm


def frame_to_frame_mm(head: HeadModel, motion: np.ndarray) -> np.ndarray:
    """(T, C) motion -> (T,) d(t) in mm, d(0) = 0 (module docstring)."""
    vertices = head.vertices(motion) * METRES_TO_MM
    steps = np.linalg.norm(np.diff(vertices, axis=0), axis=-1).mean(axis=1)
    return np.concatenate([[0.0], steps])


def border_steps(head: HeadModel, motion: np.ndarray, window: int) -> tuple[float, float, float]:
    """(max d(t) at window borders t = k W, max and 99th percentile of d(t) at every
    other frame), in mm: a codec that continues its prefix shows no seam at the borders."""
    steps = frame_to_frame_mm(head, motion)
    at_border = np.zeros(len(steps), dtype=bool)
    at_border[window::window] = True
    return float(steps[at_border].max(initial=0.0)), float(steps[~at_border][1:].max()), \
        float(np.percentile(steps[~at_border][1:], 99))


def attribute_trace(motion: np.ndarray, channels: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """(T,) mean of the named channels per frame."""
    missing = [n for n in names if n not in channels]
    if missing:
        raise ValueError(f"the rig has no channel {', '.join(missing)}")
    return motion[:, [list(channels).index(n) for n in names]].mean(axis=1)


def take_effect_frame(trace: np.ndarray, change: int, level_before: float, level_after: float) -> int | None:
    """First frame f >= change where the mean of trace[f:f+5] is half way to level_after."""
    half = level_before + 0.5 * (level_after - level_before)
    rising = level_after >= level_before
    for frame in range(change, len(trace)):
        mean = trace[frame:frame + TRACE_MEAN_FRAMES].mean()
        if (mean >= half) if rising else (mean <= half):
            return frame
    return None


def measure_switch(generate: GenerateClip, head: HeadModel, audio, case: SwitchCase) -> SwitchResult:
    runs = {
        "switched": [CaptionSegment(0.0, case.style, case.emotion_before),
                     CaptionSegment(case.switch_s, case.style, case.emotion_after)],
        "before": [CaptionSegment(0.0, case.style, case.emotion_before)],
        "after": [CaptionSegment(0.0, case.style, case.emotion_after)],
    }
    motion = {name: generate(audio, segments) for name, segments in runs.items()}
    change = start_frame(case.switch_s)
    channels = head.channel_names
    trace = {name: attribute_trace(m, channels, case.channels) for name, m in motion.items()}
    level_before = float(trace["before"][change:].mean())
    level_after = float(trace["after"][change:].mean())
    frame = take_effect_frame(trace["switched"], change, level_before, level_after)
    steps = {name: frame_to_frame_mm(head, m) for name, m in motion.items()}
    reference = np.concatenate([steps["before"][1:], steps["after"][1:]])
    return SwitchResult(
        case=case, change_frame=change,
        take_effect_s=float("inf") if frame is None else (frame - change) / MOTION_FPS,
        level_before=level_before, level_after=level_after,
        untouched_before=float(np.abs(motion["switched"][:change] - motion["before"][:change]).max(initial=0.0)),
        jump_mm=float(steps["switched"][change:change + JUMP_SPAN_FRAMES].max()),
        normal_max_mm=float(reference.max()), normal_p99_mm=float(np.percentile(reference, 99)),
        traces={**{f"{k}_attribute": v for k, v in trace.items()}, "d_switched": steps["switched"],
                "d_before": steps["before"], "d_after": steps["after"]},
    )


def plot_switches(results: Sequence[SwitchResult], path) -> None:
    """PNG: per case, the attribute traces (top) and d(t) (bottom) around the change."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(4.2 * len(results), 5.6), squeeze=False, sharex="col")
    for column, result in enumerate(results):
        t = np.arange(len(result.traces["switched_attribute"])) / MOTION_FPS
        top, bottom = axes[0, column], axes[1, column]
        top.plot(t, result.traces["before_attribute"], color="0.6", lw=1, label=f"'{result.case.emotion_before}' only")
        top.plot(t, result.traces["after_attribute"], color="tab:orange", lw=1, alpha=0.7,
                 label=f"'{result.case.emotion_after}' only")
        top.plot(t, result.traces["switched_attribute"], color="tab:blue", lw=1.6, label="switched")
        top.axvline(result.case.switch_s, color="k", ls="--", lw=0.8)
        if np.isfinite(result.take_effect_s):
            top.axvline(result.case.switch_s + result.take_effect_s, color="tab:green", lw=0.8)
        top.set_title(f"switch at {result.case.switch_s:g} s: effect after {result.take_effect_s:.2f} s", fontsize=9)
        top.set_ylabel(result.case.attribute)
        top.legend(fontsize=7, loc="upper left")
        bottom.plot(t, result.traces["d_switched"], color="tab:blue", lw=1)
        bottom.axhline(result.normal_max_mm, color="tab:red", lw=0.8, label="max of the unswitched runs")
        bottom.axhline(result.normal_p99_mm, color="tab:red", lw=0.8, ls=":", label="their 99th percentile")
        bottom.axvline(result.case.switch_s, color="k", ls="--", lw=0.8)
        bottom.set_xlabel("seconds")
        bottom.set_ylabel("frame-to-frame change (mm)")
        bottom.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def switches_markdown(results: Sequence[SwitchResult]) -> str:
    lines = ["| change at | captions | attribute | takes effect after | jump at the switch | normal max (p99) "
             "| untouched before |", "|---:|---|---|---:|---:|---:|---:|"]
    for r in results:
        effect = f"{r.take_effect_s:.2f} s" if np.isfinite(r.take_effect_s) else "never"
        lines.append(f"| {r.case.switch_s:g} s (frame {r.change_frame}) | '{r.case.emotion_before}' -> "
                     f"'{r.case.emotion_after}' | {r.case.attribute} {r.level_before:.3f} -> {r.level_after:.3f} | "
                     f"{effect} {'(ok)' if r.takes_effect_in_time else '(**over 0.5 s**)'} | {r.jump_mm:.3f} mm "
                     f"{'(ok)' if r.no_jump else '(**above range**)'} | {r.normal_max_mm:.3f} ({r.normal_p99_mm:.3f}) mm"
                     f" | {r.untouched_before:.2g} |")
    return "\n".join(lines)
