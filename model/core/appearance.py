"""What a head looks like: a colour per vertex, so a render reads as a face.

Skin, lips (the head model's ``lips`` region), eyes with a white, an iris and a pupil
(the ``eyes`` region, by the angle from each eye joint's forward axis, so the iris moves
with the eye bone), and a dark mouth interior (vertices behind the lips, inside the head,
that show once the jaw opens). Blender shows it as the rig's colour attribute
(`captalk_addon.rig_builder`): in Workbench as attribute colours, in EEVEE and Cycles
through the skin material. numpy only.

    colours = vertex_colours(head)   # (V, 4) float32 RGBA, linear
"""
from __future__ import annotations

import numpy as np

from .head_model import HeadModel

SKIN = (0.72, 0.50, 0.40)
LIPS = (0.55, 0.24, 0.24)
SCLERA = (0.86, 0.84, 0.80)
IRIS = (0.16, 0.22, 0.34)
PUPIL = (0.01, 0.01, 0.01)
MOUTH = (0.16, 0.03, 0.04)
FORWARD = np.array([0.0, -1.0, 0.0])  # the face looks along -Y (Blender's front view)
PUPIL_COS = np.cos(np.radians(12.0))  # angular radius of the pupil seen from the eye's centre
IRIS_COS = np.cos(np.radians(27.0))
MOUTH_DEPTH = 0.045  # metres behind the lips' front that still count as the mouth interior


def vertex_colours(head: HeadModel) -> np.ndarray:
    """(V, 4) float32 RGBA of ``head``'s rest vertices (alpha 1)."""
    template = np.asarray(head.template, dtype=np.float64)
    colours = np.tile(np.array(SKIN + (1.0,), dtype=np.float32), (len(template), 1))
    lips = np.asarray(head.regions["lips"], dtype=np.int64)
    interior = mouth_interior(template, lips)
    colours[interior, :3] = MOUTH
    colours[lips, :3] = LIPS
    eyes = np.asarray(head.regions["eyes"], dtype=np.int64)
    if eyes.size:
        centres = np.stack([head.joints[head.joint_names.index(head.joint_roles[role])]
                            for role in ("eye_left", "eye_right")])
        # each eye vertex belongs to the nearer eye joint
        offsets = template[eyes][:, None, :] - centres[None, :, :]
        nearest = np.argmin(np.linalg.norm(offsets, axis=2), axis=1)
        direction = offsets[np.arange(len(eyes)), nearest]
        cosine = direction @ FORWARD / np.maximum(np.linalg.norm(direction, axis=1), 1e-9)
        colours[eyes, :3] = np.where(cosine[:, None] >= PUPIL_COS, PUPIL,
                                     np.where(cosine[:, None] >= IRIS_COS, IRIS, SCLERA))
    return colours


def mouth_interior(template: np.ndarray, lips: np.ndarray) -> np.ndarray:
    """Indices of the vertices behind the lips (within their width and height, up to
    MOUTH_DEPTH behind their front), not on the lips: the mouth bag where the head has one."""
    if lips.size == 0:
        return np.zeros(0, dtype=np.int64)
    low, high = template[lips].min(axis=0), template[lips].max(axis=0)
    front = low[1]  # the lips' front (most -Y)
    x, y, z = template[:, 0], template[:, 1], template[:, 2]
    within = (np.abs(x - (low[0] + high[0]) / 2) <= (high[0] - low[0]) / 2) & (y < front + MOUTH_DEPTH)
    # at the lips' height, anything behind them; below them only deeper in, where the chin's
    # own surface is not (the lower mouth bag shows there when the jaw opens)
    level = (z >= low[2] - 0.01) & (z <= high[2] + 0.01) & (y > high[1])
    below = (z >= low[2] - 0.03) & (z < low[2] - 0.01) & (y > high[1] + 0.012)
    inside = within & (level | below)
    return np.setdiff1d(np.flatnonzero(inside), lips)
