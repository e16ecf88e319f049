"""The paper's motion metrics: LVE, MHD, FDD, LODD, HPDD.

No two public codebases agree on these, so ours are written down here (field notes,
section 3). All work on one sequence at a time, on head-model vertices in millimetres
with the head model's own region sets; a dataset's figure is the mean over its
sequences. Prediction and truth are cut to the shorter of the two lengths.

Shapes: vertices (T, V, 3) in mm; motion (T, C) as in `head_model`.

Channel measures (`MEASURES`: mouth amplitude, head motion, smile, frown, brow raise, eye
widening) read one attribute of a clip straight from its named channels, for the
controllability report (`model.evaluate.controllability`) and any rig with ARKit names.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from .core.errors import BadInput
from .core.head_model import HeadModel
from .core.rotations import axis_angle_to_matrix, matrix_to_axis_angle

METRES_TO_MM = 1000.0
HEAD_JOINT = "head"  # the open head's head-pose joint: channels head.rx, head.ry, head.rz


class MeasureError(BadInput):
    """Motion a channel measure cannot read (a missing channel, a bad shape); the message says which."""


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


# ----------------------------------------------------------------------------- channel measures


def _columns(motion: np.ndarray, channels: Sequence[str], names: Sequence[str], attribute: str) -> np.ndarray:
    """(T, len(names)) float64: the named channels of ``motion``."""
    motion = np.asarray(motion)
    if motion.ndim != 2 or motion.shape[1] != len(channels) or motion.shape[0] < 1:
        raise MeasureError(f"{attribute}: expected (T >= 1, {len(channels)}) motion, got {motion.shape}")
    index = {name: i for i, name in enumerate(channels)}
    missing = [name for name in names if name not in index]
    if missing:
        raise MeasureError(f"{attribute} cannot be measured on this rig: it has no channel(s) "
                                   f"{', '.join(missing)} (ARKit expression names and {HEAD_JOINT}.rx/ry/rz needed)")
    return motion[:, [index[name] for name in names]].astype(np.float64)


def mouth_amplitude(motion: np.ndarray, channels: Sequence[str]) -> float:
    """std_t jawOpen_t (population std, blendshape weight).

    jawOpen alone: it carries most of the opening and the teacher scales it by the mouth
    gain and nothing else, while the lip channels the gain also scales (mouthStretch,
    mouthLowerDown) take emotion poses too, and the rounding ones (mouthPucker,
    mouthFunnel) only 0.7 + 0.3 x gain. A std ignores a constant offset, so an emotion's
    held jaw drop (surprise) does not count as amplitude.
    """
    return float(_columns(motion, channels, ("jawOpen",), "mouth_amplitude")[:, 0].std())


def head_motion(motion: np.ndarray, channels: Sequence[str]) -> float:
    """sqrt(mean_t theta_t^2) in degrees, theta_t = angle(Rbar^T R_t).

    R_t: the head joint's rotation (``head.rx/ry/rz`` axis-angle, radians); Rbar: the
    rotation nearest mean_t R_t (chordal mean, by SVD). The deviation from the clip's
    own mean, so a held posture (chin up when surprised) is not motion.
    """
    names = [f"{HEAD_JOINT}.{axis}" for axis in ("rx", "ry", "rz")]
    rotations = axis_angle_to_matrix(_columns(motion, channels, names, "head_motion"))  # (T, 3, 3)
    u, _, vt = np.linalg.svd(rotations.mean(axis=0))
    mean = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    angles = np.linalg.norm(matrix_to_axis_angle(mean.T @ rotations), axis=-1)  # (T,) radians
    return float(np.degrees(np.sqrt(np.mean(angles ** 2))))


def _mean_of(names: tuple[str, ...], attribute: str) -> Callable[[np.ndarray, Sequence[str]], float]:
    def measure(motion: np.ndarray, channels: Sequence[str]) -> float:
        return float(_columns(motion, channels, names, attribute).mean())

    measure.__name__ = attribute
    measure.__doc__ = f"mean over frames and channels of {', '.join(names)} (blendshape weight)."
    return measure


smile = _mean_of(("mouthSmileLeft", "mouthSmileRight"), "smile")
frown = _mean_of(("mouthFrownLeft", "mouthFrownRight"), "frown")
brow_raise = _mean_of(("browInnerUp", "browOuterUpLeft", "browOuterUpRight"), "brow_raise")
eye_widening = _mean_of(("eyeWideLeft", "eyeWideRight"), "eye_widening")

MEASURES: dict[str, Callable[[np.ndarray, Sequence[str]], float]] = {
    "mouth_amplitude": mouth_amplitude, "head_motion": head_motion, "smile": smile, "frown": frown,
    "brow_raise": brow_raise, "eye_widening": eye_widening,
}
