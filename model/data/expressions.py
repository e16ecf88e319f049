"""Emotion and tone as ARKit blendshape offsets, head posture and behaviour factors.

Each of the paper's eight emotions is a FACS-style pose at full ("strong") intensity
(action units in the comments), plus how it changes the rest of the face: head
posture, blink rate, mouth amplitude, head-motion energy. The teacher scales the pose
by the intensity and adds it to the lips, so speech articulation stays visible.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Expression:
    pose: dict[str, float] = field(default_factory=dict)  # ARKit channel -> value at full weight
    posture_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)  # head (pitch down, roll, yaw)
    blink_rate: float = 1.0  # factor on the resting blink rate
    mouth_gain: float = 1.0  # factor on articulation amplitude
    head_energy: float = 1.0  # factor on accent nods and drift
    accent_pose: dict[str, float] = field(default_factory=dict)  # extra on each accent


def _both(name: str, value: float) -> dict[str, float]:
    return {f"{name}Left": value, f"{name}Right": value}


EMOTION_EXPRESSIONS: dict[str, Expression] = {
    "neutral": Expression(),
    # AU6 cheek raiser + AU12 lip-corner puller (+ AU25 lips part)
    "happy": Expression(
        pose={**_both("mouthSmile", 0.85), **_both("cheekSquint", 0.6), **_both("eyeSquint", 0.25),
              **_both("mouthDimple", 0.2), "browInnerUp": 0.05},
        posture_deg=(-1.5, 2.0, 0.0), blink_rate=1.0, mouth_gain=1.1, head_energy=1.25,
        accent_pose={**_both("mouthSmile", 0.15), **_both("browOuterUp", 0.15)},
    ),
    # AU1 inner brow raiser + AU4 brow lowerer + AU15 lip-corner depressor + AU17
    "sad": Expression(
        pose={"browInnerUp": 0.95, **_both("browDown", 0.25), **_both("mouthFrown", 0.8),
              "mouthShrugLower": 0.3, **_both("eyeLookDown", 0.15), **_both("eyeSquint", 0.1)},
        posture_deg=(6.0, -1.5, 0.0), blink_rate=1.3, mouth_gain=0.75, head_energy=0.6,
        accent_pose={"browInnerUp": 0.15},
    ),
    # AU4 + AU5 upper-lid raiser + AU7 lid tightener + AU23/24 lip tightener and presser
    "angry": Expression(
        pose={**_both("browDown", 1.0), **_both("eyeSquint", 0.45), **_both("noseSneer", 0.4),
              **_both("mouthPress", 0.3), **_both("mouthStretch", 0.2), "jawForward": 0.1},
        posture_deg=(3.0, 0.0, 0.0), blink_rate=0.7, mouth_gain=1.25, head_energy=1.35,
        accent_pose={**_both("browDown", 0.15), **_both("noseSneer", 0.1)},
    ),
    # AU1 + AU2 brow raisers + AU5 upper-lid raiser + AU26 jaw drop
    "surprised": Expression(
        pose={"browInnerUp": 1.0, **_both("browOuterUp", 1.0), **_both("eyeWide", 0.9), "jawOpen": 0.12},
        posture_deg=(-4.0, 0.0, 0.0), blink_rate=0.6, mouth_gain=1.15, head_energy=1.2,
        accent_pose={"browInnerUp": 0.15, **_both("browOuterUp", 0.15)},
    ),
    # AU1 + AU2 + AU4 + AU5 + AU20 lip stretcher
    "fear": Expression(
        pose={"browInnerUp": 0.95, **_both("browOuterUp", 0.45), **_both("browDown", 0.3),
              **_both("eyeWide", 0.8), **_both("mouthStretch", 0.6), "jawOpen": 0.05},
        posture_deg=(-2.0, 0.0, 0.0), blink_rate=1.5, mouth_gain=0.9, head_energy=0.8,
        accent_pose={**_both("eyeWide", 0.1)},
    ),
    # AU9 nose wrinkler + AU10 upper-lip raiser + AU4
    "disgust": Expression(
        pose={**_both("noseSneer", 0.9), **_both("mouthUpperUp", 0.4), **_both("browDown", 0.55),
              **_both("eyeSquint", 0.3), **_both("mouthFrown", 0.25), "mouthShrugUpper": 0.25},
        posture_deg=(-2.0, 0.0, -3.0), blink_rate=1.0, mouth_gain=0.9, head_energy=0.9,
        accent_pose={**_both("noseSneer", 0.15)},
    ),
    # AU14 dimpler and AU12 on one side only (R), chin up
    "contempt": Expression(
        pose={"mouthDimpleRight": 0.7, "mouthSmileRight": 0.55, "mouthPressLeft": 0.15,
              "eyeSquintRight": 0.2, "browDownLeft": 0.1, "mouthRight": 0.15},
        posture_deg=(-4.0, -2.0, 4.0), blink_rate=0.8, mouth_gain=0.85, head_energy=0.8,
        accent_pose={"mouthDimpleRight": 0.1},
    ),
}

TONE_EXPRESSIONS: dict[str, Expression] = {
    "neutral": Expression(),
    "calm": Expression(blink_rate=0.8, mouth_gain=0.95, head_energy=0.75),
    "serious": Expression(pose={**_both("browDown", 0.15)}, blink_rate=0.9, head_energy=0.85),
    "cheerful": Expression(pose={**_both("mouthSmile", 0.15)}, head_energy=1.1,
                           accent_pose={**_both("browOuterUp", 0.1), "browInnerUp": 0.05}),
    "energetic": Expression(mouth_gain=1.08, head_energy=1.3,
                            accent_pose={**_both("browOuterUp", 0.2), "browInnerUp": 0.15}),
}


def pose_vector(pose: dict[str, float], channels: tuple[str, ...]) -> np.ndarray:
    """ARKit name -> value mapping as a (C,) vector on ``channels``; unknown names fail loudly."""
    vector = np.zeros(len(channels), dtype=np.float32)
    for name, value in pose.items():
        vector[channels.index(name)] = value
    return vector
