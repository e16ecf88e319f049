"""The paper's Tables 1 and 4 on our test split: metrics under five caption conditions.

Every test clip is generated five ways and scored against the teacher's motion with the
five metrics of `model.metrics` (LVE, MHD, FDD, LODD, HPDD; a dataset figure is the mean
over clips):

- (a) ``both``:    the clip's own timed captions, style and emotion;
- (b) ``none``:    no captions (both empty: the unconditional model);
- (c) ``style``:   the style captions only (emotion empty);
- (d) ``emotion``: the emotion captions only (style empty);
- (e) ``static``:  no model at all, the neutral face held still (all channels 0), the
                   floor any animation must beat.

Head pose is not predictable from speech (the teacher's head sways at random), and a
swaying head moves the lips by millimetres, so LVE of a moving head against another
moving head can exceed a still face's. ``face_lve_mm`` is LVE with the head pose
(the neck and head joints' rotations) set to rest in prediction and truth alike: the
articulation alone, reported next to the paper's LVE.

The bars of issue 5, with r(x) the relative improvement 1 - x(a) / x(b):
    LVE(a) <= LVE(e) / 2;   r(LODD) >= 0.25;   r(HPDD) >= 0.25;   r(FDD) > 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..core.schedule import CaptionSegment
from ..data.dataset import ClipRecord
from ..core.head_model import HeadModel
from ..metrics import METRES_TO_MM, MotionMetrics, lip_vertex_error, mean_metrics, sequence_metrics

CONDITIONS = {
    "both": "(a) both captions",
    "none": "(b) no captions",
    "style": "(c) style caption only",
    "emotion": "(d) emotion caption only",
    "static": "(e) static neutral face",
}
METRIC_LABELS = {"lve_mm": "LVE (mm)", "mhd_mm": "MHD (mm)", "fdd_mm": "FDD (mm)", "lodd_mm": "LODD (mm)",
                 "hpdd_deg": "HPDD (deg)"}

# audio path, caption segments -> (T, C) motion on the evaluated head
GenerateClip = Callable[[object, Sequence[CaptionSegment]], np.ndarray]


def condition_segments(segments: Sequence[CaptionSegment], condition: str) -> list[CaptionSegment]:
    """The clip's timed captions with the parts ``condition`` leaves out made empty."""
    keep_style = condition in ("both", "style")
    keep_emotion = condition in ("both", "emotion")
    return [CaptionSegment(s.start, s.style if keep_style else "", s.emotion if keep_emotion else "")
            for s in segments]


def without_head_pose(head: HeadModel, motion: np.ndarray) -> np.ndarray:
    """(T, C) motion with the neck and head joints' rotations at rest (0)."""
    posed = motion.copy()
    for role in ("neck", "head"):
        joint = head.joint_roles.get(role)
        if joint in head.motion_joints:
            posed[:, head.rotation_slice(joint)] = 0.0
    return posed


def face_lve(head: HeadModel, pred: np.ndarray, truth: np.ndarray) -> float:
    """LVE (mm) of `without_head_pose` prediction and truth (module docstring)."""
    frames = min(len(pred), len(truth))
    vertices = [head.vertices(without_head_pose(head, m[:frames])) * METRES_TO_MM for m in (pred, truth)]
    return lip_vertex_error(*vertices, head.regions["lips"])


@dataclass(frozen=True)
class ConditionsResult:
    clips: int
    seconds: float  # total test audio evaluated
    metrics: dict[str, MotionMetrics]  # condition -> mean over clips
    face_lve_mm: dict[str, float]  # condition -> mean over clips of `face_lve`

    def bars(self) -> dict[str, tuple[float, float, bool]]:
        """name -> (value, target, met) for the bars in the module docstring."""
        a, b, e = self.metrics["both"], self.metrics["none"], self.metrics["static"]
        gain = lambda key: 1.0 - getattr(a, key) / getattr(b, key)  # noqa: E731
        return {
            "LVE (a) / LVE (e)": (a.lve_mm / e.lve_mm, 0.5, a.lve_mm <= 0.5 * e.lve_mm),
            "face LVE (a) / face LVE (e), head pose at rest": (
                self.face_lve_mm["both"] / self.face_lve_mm["static"], 0.5,
                self.face_lve_mm["both"] <= 0.5 * self.face_lve_mm["static"]),
            "LODD gain of (a) over (b)": (gain("lodd_mm"), 0.25, gain("lodd_mm") >= 0.25),
            "HPDD gain of (a) over (b)": (gain("hpdd_deg"), 0.25, gain("hpdd_deg") >= 0.25),
            "FDD gain of (a) over (b)": (gain("fdd_mm"), 0.0, gain("fdd_mm") > 0.0),
        }

    def summary(self) -> dict:
        return {"clips": self.clips, "seconds": round(self.seconds, 1),
                "metrics": {k: {n: round(v, 4) for n, v in m.as_dict().items()} | {"face_lve_mm": round(
                    self.face_lve_mm[k], 4)} for k, m in self.metrics.items()},
                "bars": {k: {"value": round(v, 4), "target": t, "met": ok} for k, (v, t, ok) in self.bars().items()}}


def evaluate_conditions(generate: GenerateClip, head: HeadModel, records: Sequence[ClipRecord],
                        truths: Sequence[np.ndarray], progress: Callable[[str], None] = lambda _: None
                        ) -> ConditionsResult:
    """Mean metrics per condition over ``records`` (their teacher motions ``truths``,
    each (T, C) on ``head``); ``generate(audio, segments)`` runs the model."""
    if not records:
        raise ValueError("no test clips to evaluate")
    per_condition: dict[str, list[MotionMetrics]] = {name: [] for name in CONDITIONS}
    face: dict[str, list[float]] = {name: [] for name in CONDITIONS}
    for index, (record, truth) in enumerate(zip(records, truths)):
        progress(f"clip {index + 1}/{len(records)} {record.clip_id}")
        for condition in CONDITIONS:
            if condition == "static":
                motion = head.neutral_motion(len(truth))
            else:
                motion = generate(record.audio, condition_segments(record.segments, condition))
            per_condition[condition].append(sequence_metrics(head, motion, truth))
            face[condition].append(face_lve(head, motion, truth))
    seconds = sum(len(t) for t in truths) / 25.0
    return ConditionsResult(len(records), seconds, {k: mean_metrics(v) for k, v in per_condition.items()},
                            {k: float(np.mean(v)) for k, v in face.items()})


def conditions_markdown(result: ConditionsResult) -> str:
    lines = [f"{result.clips} test clips, {result.seconds / 60:.1f} min of speech; lower is better.", "",
             "| condition | " + " | ".join(METRIC_LABELS.values()) + " | face LVE, head pose at rest (mm) |",
             "|---|" + "---:|" * (len(METRIC_LABELS) + 1)]
    for key, label in CONDITIONS.items():
        values = result.metrics[key].as_dict()
        lines.append(f"| {label} | " + " | ".join(f"{values[m]:.3f}" for m in METRIC_LABELS)
                     + f" | {result.face_lve_mm[key]:.3f} |")
    lines += ["", "| bar | value | target | met |", "|---|---:|---:|:---:|"]
    for name, (value, target, met) in result.bars().items():
        comparison = "<=" if "LVE" in name else (">" if name.startswith("FDD") else ">=")
        lines.append(f"| {name} | {value:.3f} | {comparison} {target:g} | {'yes' if met else '**no**'} |")
    return "\n".join(lines)
