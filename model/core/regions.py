"""Derive the metric regions (lips, upper face, inner-lip pairs, eyes) from a rigged head.

Used when a head model comes without hand-made region masks (the open head always,
FLAME when the user gives no FLAME_masks file). The derivation reads the rig, not the
vertex numbering, so it works for any topology with a jaw joint:

- eyes: vertices skinned mostly (> 0.5) to the eye joints;
- inner-lip pairs: an upper-lip vertex (jaw weight < 0.4) and the nearest lower-lip
  vertex (jaw weight > 0.6) less than `max_gap` apart at rest that are not close on
  the mesh (more than `min_hops` edges apart), i.e. they face each other across the
  mouth slit; one pair per upper vertex;
- lips: vertices in a box around the mouth slit (1.15 x its half-width sideways,
  0.5 x up and down, in front of the slit's centre);
- upper face: frontal vertices above the point 55% of the way from the mouth to the
  eyes, eyeballs excluded.
"""
from __future__ import annotations

import numpy as np

from .head_model import HeadModelError


def derive_regions(
    template: np.ndarray,
    faces: np.ndarray,
    lbs_weights: np.ndarray,
    joints: np.ndarray,
    joint_names: tuple[str, ...] | list[str],
    joint_roles: dict[str, str],
    max_gap: float = 0.004,
    min_hops: int = 4,
) -> dict[str, np.ndarray]:
    """Region vertex sets for a rigged head; shapes as in `head_model` (region.*)."""
    if "jaw" not in joint_roles:
        raise HeadModelError("cannot derive lip regions: the rig has no jaw joint; supply a region masks file")
    jaw_w = lbs_weights[:, joint_names.index(joint_roles["jaw"])]
    eye_joints = [joint_names.index(joint_roles[r]) for r in ("eye_left", "eye_right") if r in joint_roles]
    eye_w = lbs_weights[:, eye_joints].sum(axis=1) if eye_joints else np.zeros(len(template))
    eyes = np.flatnonzero(eye_w > 0.5)

    pairs = inner_lip_pairs(template, faces, jaw_w, eye_w, max_gap, min_hops)
    if len(pairs) < 3:
        raise HeadModelError(
            "cannot derive lip regions: no mouth slit found between jaw and upper-lip vertices; "
            "supply a region masks file"
        )
    mid = 0.5 * (template[pairs[:, 0]] + template[pairs[:, 1]])
    centre = mid.mean(axis=0)
    half_width = max(float(np.abs(mid[:, 0] - centre[0]).max()), 1e-3)
    d = template - centre
    lips = np.flatnonzero(
        (np.abs(d[:, 0]) < 1.15 * half_width) & (np.abs(d[:, 2]) < 0.5 * half_width) & (d[:, 1] < 0.5 * half_width)
    )

    eye_level = joints[eye_joints, 2].mean() if eye_joints else centre[2] + 2.2 * half_width
    frontal = template[:, 1] < template[:, 1].mean()
    above = template[:, 2] > centre[2] + 0.55 * (eye_level - centre[2])
    upper_face = np.flatnonzero(frontal & above & (eye_w <= 0.5))
    return {"lips": lips, "upper_face": upper_face, "lip_pairs": pairs, "eyes": eyes}


def inner_lip_pairs(template, faces, jaw_w, eye_w, max_gap, min_hops) -> np.ndarray:
    upper = np.flatnonzero((jaw_w < 0.4) & (eye_w < 0.5))
    lower = np.flatnonzero(jaw_w > 0.6)
    if not len(upper) or not len(lower):
        return np.zeros((0, 2), dtype=np.int64)
    neighbours = _adjacency(faces, len(template))
    best: dict[int, tuple[float, int]] = {}
    for lo in lower:
        dist = np.linalg.norm(template[upper] - template[lo], axis=1)
        close = np.flatnonzero(dist < max_gap)
        if not len(close):
            continue
        near_on_mesh = _within_hops(neighbours, int(lo), min_hops)
        for k in close[np.argsort(dist[close])]:
            up = int(upper[k])
            if up in near_on_mesh:
                continue
            if up not in best or dist[k] < best[up][0]:
                best[up] = (float(dist[k]), int(lo))
            break
    pairs = np.array([(up, lo) for up, (_, lo) in sorted(best.items())], dtype=np.int64).reshape(-1, 2)
    return pairs


def _adjacency(faces: np.ndarray, num_vertices: int) -> list[set[int]]:
    neighbours: list[set[int]] = [set() for _ in range(num_vertices)]
    for a, b, c in faces:
        neighbours[a].update((b, c))
        neighbours[b].update((a, c))
        neighbours[c].update((a, b))
    return neighbours


def _within_hops(neighbours: list[set[int]], start: int, hops: int) -> set[int]:
    seen = {start}
    frontier = {start}
    for _ in range(hops):
        frontier = {n for v in frontier for n in neighbours[v]} - seen
        seen |= frontier
    return seen
