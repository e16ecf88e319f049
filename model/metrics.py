"""The paper's motion metrics: LVE, MHD, FDD, LODD, HPDD.

No two public codebases agree on these, so ours are written down here (field notes,
section 3). All work on one sequence at a time, on head-model vertices in millimetres
with the head model's own region sets; a dataset's figure is the mean over its
sequences. Prediction and truth are cut to the shorter of the two lengths.

Shapes: vertices (T, V, 3) in mm; motion (T, C) as in `head_model`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .core.head_model import HeadModel

METRES_TO_MM = 1000.0


@dataclass(frozen=True)
class MotionMetrics:
    """One sequence's (or a dataset's mean) metrics; units in each field's name."""

    lve_mm: float
    mhd_mm: float
    fdd_mm: float
    lodd_mm: float
    hpdd_deg: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def lip_vertex_error(pred: np.ndarray, truth: np.ndarray, lips: np.ndarray) -> float:
    """LVE (mm): mean over frames t of max over lip vertices i of ||pred_ti - truth_ti||.

    The plain (not squared) L2 distance, as Richard et al.; some codebases square it.
    """
    return float(np.linalg.norm(pred[:, lips] - truth[:, lips], axis=-1).max(axis=1).mean())


def mean_head_distance(pred: np.ndarray, truth: np.ndarray) -> float:
    """MHD (mm): mean over frames and all vertices of ||pred_ti - truth_ti||."""
    return float(np.linalg.norm(pred - truth, axis=-1).mean())


def upper_face_dynamics_deviation(
    pred: np.ndarray, truth: np.ndarray, template: np.ndarray, upper_face: np.ndarray
) -> float:
    """FDD (mm): | mean_i std_t ||truth_ti - tpl_i|| - mean_i std_t ||pred_ti - tpl_i|| |, i in upper face.

    How much the upper face moves over time (brows, blinks), compared as a whole:
    a prediction with the right amount of upper-face activity scores 0 even if its
    timing differs from the truth.
    """
    def activity(verts: np.ndarray) -> float:
        displacement = np.linalg.norm(verts[:, upper_face] - template[upper_face], axis=-1)
        return float(displacement.std(axis=0).mean())

    return abs(activity(truth) - activity(pred))


def lip_opening(verts: np.ndarray, lip_pairs: np.ndarray) -> np.ndarray:
    """(T, V, 3) -> (T,) mm: mean over inner-lip pairs (u, l) of ||v_u - v_l||."""
    return np.linalg.norm(verts[:, lip_pairs[:, 0]] - verts[:, lip_pairs[:, 1]], axis=-1).mean(axis=1)


def lip_opening_dynamics_deviation(pred: np.ndarray, truth: np.ndarray, lip_pairs: np.ndarray) -> float:
    """LODD (mm): | std_t opening_t(truth) - std_t opening_t(pred) |, opening = `lip_opening`."""
    return float(abs(lip_opening(truth, lip_pairs).std() - lip_opening(pred, lip_pairs).std()))


def head_pose_dynamics_deviation(pred_rotation: np.ndarray, truth_rotation: np.ndarray) -> float:
    """HPDD (degrees): | mean_a std_t truth_ta - mean_a std_t pred_ta |.

    Inputs (T, 3): the head's world rotation as an axis-angle vector per frame
    (`HeadModel.head_rotation`), in radians; a = x, y, z component, taken in degrees.
    """
    def spread(rotation: np.ndarray) -> float:
        return float(np.degrees(rotation).std(axis=0).mean())

    return abs(spread(truth_rotation) - spread(pred_rotation))


def sequence_metrics(head: HeadModel, pred_motion: np.ndarray, true_motion: np.ndarray) -> MotionMetrics:
    """All five metrics for one sequence of motion on ``head``."""
    frames = min(len(pred_motion), len(true_motion))
    if frames < 2:
        raise ValueError("metrics need at least 2 frames of prediction and truth")
    pred_motion, true_motion = pred_motion[:frames], true_motion[:frames]
    pred = head.vertices(pred_motion) * METRES_TO_MM
    truth = head.vertices(true_motion) * METRES_TO_MM
    regions = head.regions
    return MotionMetrics(
        lve_mm=lip_vertex_error(pred, truth, regions["lips"]),
        mhd_mm=mean_head_distance(pred, truth),
        fdd_mm=upper_face_dynamics_deviation(pred, truth, head.template * METRES_TO_MM, regions["upper_face"]),
        lodd_mm=lip_opening_dynamics_deviation(pred, truth, regions["lip_pairs"]),
        hpdd_deg=head_pose_dynamics_deviation(head.head_rotation(pred_motion), head.head_rotation(true_motion)),
    )


def mean_metrics(per_sequence: list[MotionMetrics]) -> MotionMetrics:
    """Dataset figure: the mean of each metric over sequences."""
    if not per_sequence:
        raise ValueError("no sequences to average")
    keys = per_sequence[0].as_dict().keys()
    return MotionMetrics(**{k: float(np.mean([m.as_dict()[k] for m in per_sequence])) for k in keys})
