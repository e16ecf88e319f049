"""Dense correspondence from the open head to a user's FLAME template, no vertex numbers assumed.

Steps (each rig read through its own rig data, never its numbering):

1. parts and labels from the skinning: the surface is the largest connected piece plus
   the eyeballs (a tongue or teeth are left out); every vertex is labelled *rest*, *jaw*
   (lower lip, chin), *eye_left* or *eye_right*;
2. anchors from each rig: the eye joints, the jaw joint, the mouth corners, the slit
   centre and points along the upper and lower inner-lip contours (from the lip pairs);
3. a similarity (scale, rotation, translation) on the anchors, then a thin-plate-spline
   warp through them;
4. non-rigid ICP: closest target vertices of the *same label* (an upper lip never
   matches a lower lip), a displacement field kept smooth by a graph-Laplacian term whose
   stiffness decreases over the rounds;
5. for every target vertex, the closest point on the registered source surface among
   the triangles of its label: (triangle, barycentric weights).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.interpolate import RBFInterpolator
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import factorized
from scipy.spatial import cKDTree

from ..core.head_model import HeadModel
from ..core.errors import BadInput

REST, JAW, EYE_LEFT, EYE_RIGHT = 0, 1, 2, 3
CONTOUR_POINTS = 7
STIFFNESS = (30.0, 10.0, 3.0, 1.0, 0.3)  # NRICP rounds, relative to the data term
INNER_ITERATIONS = 3
NEIGHBOURS = 8  # closest target vertices considered per source vertex
NORMAL_AGREEMENT = 0.3  # cosine
CANDIDATE_TRIANGLES = 12


class RegistrationError(BadInput):
    """The open head could not be registered onto the FLAME template; the message says why."""


@dataclass(frozen=True)
class Parts:
    """labels (V,) int (REST/JAW/EYE_*), surface (V,) bool (vertices taking part)."""

    labels: np.ndarray
    surface: np.ndarray


@dataclass(frozen=True, eq=False)
class Registration:
    """Source -> target correspondence.

    scale, rotation (3, 3), translation (3,): the similarity, target = s R source + t;
    registered (Vs, 3): source vertices after the non-rigid fit (target frame);
    triangles (Vt, 3) int source vertex ids and bary (Vt, 3): each target vertex's point on
    the source surface; distance (Vt,): from the target vertex to that point (metres);
    target_surface (Vt,) bool; quality: figures for the report and the failure check.
    """

    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    registered: np.ndarray
    triangles: np.ndarray
    bary: np.ndarray
    distance: np.ndarray
    target_surface: np.ndarray
    quality: dict

    def interpolate(self, values: np.ndarray) -> np.ndarray:
        """Per-source-vertex values (..., Vs, C) -> per-target-vertex (..., Vt, C)."""
        return np.einsum("...vkc,vk->...vc", values[..., self.triangles, :], self.bary)


# ------------------------------------------------------------------ labels
def rig_parts(head: HeadModel) -> Parts:
    """Labels from the skinning weights and the parts that take part in the registration."""
    w = head.lbs_weights
    roles = head.joint_roles
    col = lambda role: w[:, head.joint_names.index(roles[role])] if role in roles else np.zeros(len(w))
    labels = np.full(head.num_vertices, REST)
    labels[col("jaw") > 0.5] = JAW
    labels[col("eye_left") > 0.5] = EYE_LEFT
    labels[col("eye_right") > 0.5] = EYE_RIGHT
    f = head.faces
    V = head.num_vertices
    graph = sp.coo_matrix((np.ones(f.size), (f.ravel(), np.roll(f, 1, axis=1).ravel())), shape=(V, V))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    surface = component == np.argmax(sizes)
    for c in range(len(sizes)):  # eyeballs are separate pieces; keep them
        members = component == c
        if np.mean(np.isin(labels[members], (EYE_LEFT, EYE_RIGHT))) > 0.9:
            surface |= members
    return Parts(labels, surface)


def rig_anchors(head: HeadModel) -> tuple[np.ndarray, np.ndarray]:
    """(A, 3) anchor points and (A,) weights, in the same order for every rig.

    Eye joints, jaw joint (low weight: rigs put the pivot in different places), mouth
    corners, slit centre, CONTOUR_POINTS along the upper and along the lower inner lip.
    """
    roles = head.joint_roles
    joint = lambda role: head.joints[head.joint_names.index(roles[role])].astype(np.float64)
    pairs = head.regions["lip_pairs"]
    if len(pairs) < 3 or not all(r in roles for r in ("jaw", "eye_left", "eye_right")):
        raise RegistrationError(f"head model '{head.model_id}' has no mouth slit or no jaw/eye joints to register")
    upper, lower = head.template[pairs[:, 0]].astype(np.float64), head.template[pairs[:, 1]].astype(np.float64)
    mid = 0.5 * (upper + lower)
    side = joint("eye_left") - joint("eye_right")
    side /= np.linalg.norm(side)
    along = (mid - mid.mean(axis=0)) @ side
    # Kernel averages along the slit, not picks: the result must not depend on vertex order
    # (a symmetric mouth has pairs at equal positions, whose sort order is arbitrary).
    span = float(along.max() - along.min())
    width = span / (CONTOUR_POINTS + 1)

    def at(points: np.ndarray, station: float) -> np.ndarray:
        w = np.exp(-0.5 * ((along - station) / (0.5 * width)) ** 2)
        return w @ points / w.sum()

    stations = np.linspace(along.min(), along.max(), CONTOUR_POINTS + 2)[1:-1]
    corners = [at(mid, along.min()), at(mid, along.max())]
    points = [joint("eye_left"), joint("eye_right"), joint("jaw"), *corners, mid.mean(axis=0),
              *(at(upper, s) for s in stations), *(at(lower, s) for s in stations)]
    weights = np.ones(len(points))
    weights[2] = 0.2
    return np.asarray(points), weights


def similarity(source: np.ndarray, target: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted Umeyama: (s, R, t) minimising sum w |s R source + t - target|^2."""
    w = weights / weights.sum()
    mu_s, mu_t = w @ source, w @ target
    a, b = source - mu_s, target - mu_t
    cov = (b * w[:, None]).T @ a
    U, S, Vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.diag([1.0, 1.0, d])
    R = U @ D @ Vt
    var = float(w @ np.sum(a * a, axis=1))
    s = float(np.trace(np.diag(S) @ D) / var)
    return s, R, mu_t - s * R @ mu_s


# ------------------------------------------------------------ registration
def register(source: HeadModel, target: HeadModel) -> Registration:
    """Register ``source`` (the open head) onto ``target`` (a FLAME template); see the module docstring."""
    src_parts, tgt_parts = rig_parts(source), rig_parts(target)
    src_anchor, anchor_w = rig_anchors(source)
    tgt_anchor, _ = rig_anchors(target)
    s, R, t = similarity(src_anchor, tgt_anchor, anchor_w)
    aligned = source.template.astype(np.float64) @ (s * R).T + t
    anchor_aligned = src_anchor @ (s * R).T + t
    scale = float(np.linalg.norm(tgt_anchor[0] - tgt_anchor[1]))  # eye distance: the unit of the checks

    warp = RBFInterpolator(anchor_aligned, tgt_anchor - anchor_aligned, kernel="thin_plate_spline",
                           smoothing=1e-3 * scale**2)
    warped = aligned + warp(aligned)
    registered = _nricp(warped, source.faces, src_parts, target, tgt_parts, scale)
    triangles, bary, distance = _closest_on_surface(target.template.astype(np.float64), tgt_parts, registered,
                                                    source.faces, src_parts)
    face = tgt_parts.surface & (target.template[:, 1] < target.template[tgt_parts.surface, 1].mean())
    moved = np.linalg.norm(registered - aligned, axis=1)[src_parts.surface]
    quality = {
        "scale": s,
        "eye_distance_m": scale,
        "anchor_rms_m": float(np.sqrt(np.mean(np.sum((anchor_aligned - tgt_anchor) ** 2, axis=1)))),
        "face_distance_mean_m": float(distance[face].mean()),
        "face_distance_p95_m": float(np.percentile(distance[face], 95)),
        "nonrigid_rms_m": float(np.sqrt(np.mean(moved**2))),
    }
    return Registration(s, R, t, registered, triangles, bary, distance, tgt_parts.surface, quality)


def _nricp(points, faces, src_parts, target, tgt_parts, scale) -> np.ndarray:
    """Non-rigid ICP of the source surface onto the target's, label to label."""
    V = len(points)
    keep = src_parts.surface
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = edges[keep[edges].all(axis=1)]
    adjacency = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(V, V))
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float64)
    laplacian = sp.diags(np.asarray(adjacency.sum(axis=1)).ravel()) - adjacency
    tgt = target.template.astype(np.float64)
    trees = {label: (cKDTree(tgt[idx]), idx) for label in np.unique(tgt_parts.labels[tgt_parts.surface])
             for idx in [np.flatnonzero(tgt_parts.surface & (tgt_parts.labels == label))]}
    tgt_normals = vertex_normals(tgt, target.faces)
    reject = 0.1 * scale  # farther than this: no correspondence this round
    current = points.copy()
    for stiffness in STIFFNESS:
        for _ in range(INNER_ITERATIONS):
            total, count = np.zeros((V, 3)), np.zeros(V)
            normals = vertex_normals(current, faces)
            for label, (tree, idx) in trees.items():
                mine = np.flatnonzero(keep & (src_parts.labels == label))
                if not len(mine):
                    continue
                # forward: each source vertex to the nearest of its closest target vertices
                # whose normal agrees (the inner face of a lip lies a millimetre from its outer face)
                dist, nearest = tree.query(current[mine], k=min(NEIGHBOURS, len(idx)))
                dist, nearest = dist.reshape(len(mine), -1), nearest.reshape(len(mine), -1)
                agree = np.einsum("nkc,nc->nk", tgt_normals[idx[nearest]], normals[mine]) > NORMAL_AGREEMENT
                ok = agree & (dist < reject)
                first = np.argmax(ok, axis=1)
                found = ok[np.arange(len(mine)), first]
                np.add.at(total, mine[found], tgt[idx[nearest[np.arange(len(mine)), first]][found]])
                np.add.at(count, mine[found], 1.0)
                # backward: each target vertex pulls its nearest source vertex, so no target
                # part is left uncovered and no source vertex sits on a neighbour's target
                back_dist, back = cKDTree(current[mine]).query(tgt[idx])
                ok = back_dist < reject
                np.add.at(total, mine[back[ok]], tgt[idx[ok]])
                np.add.at(count, mine[back[ok]], 1.0)
            has = count > 0
            goal = current.copy()
            goal[has] = total[has] / count[has][:, None]
            confidence = has.astype(np.float64)
            # Off-surface vertices (tongue...) just follow the field with a weak pull to stay put.
            confidence[~keep] = 1e-3
            system = sp.diags(confidence) + stiffness * laplacian + 1e-6 * sp.eye(V)
            solve = factorized(system.tocsc())
            rhs = confidence[:, None] * (goal - current)
            step = np.stack([solve(rhs[:, c]) for c in range(3)], axis=1)
            current = current + step
    return current


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit area-weighted vertex normals (zero for unused vertices)."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    n = np.cross(b - a, c - a)
    normals = np.zeros_like(vertices, dtype=np.float64)
    for k in range(3):
        np.add.at(normals, faces[:, k], n)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-20)


def _closest_on_surface(points, tgt_parts, vertices, faces, src_parts):
    """Per target vertex: closest point on the source triangles of its label."""
    Vt = len(points)
    triangles = np.zeros((Vt, 3), dtype=np.int64)
    bary = np.zeros((Vt, 3))
    distance = np.full(Vt, np.inf)
    face_labels = src_parts.labels[faces]
    usable = src_parts.surface[faces].all(axis=1)
    for label in np.unique(tgt_parts.labels):
        mine = np.flatnonzero(tgt_parts.labels == label)
        # a triangle belongs to the label most of its corners have: at a mouth corner a
        # lower-lip triangle touching one upper-lip vertex stays lower lip
        tri = faces[usable & ((face_labels == label).sum(axis=1) >= 2)]
        if not len(tri):  # no such part on the source: any surface triangle
            tri = faces[usable]
        cand = _candidates(points[mine], vertices, tri)
        corners = vertices[tri[cand]]  # (n, k, 3, 3)
        closest, weights = closest_point_on_triangles(points[mine][:, None], corners)
        dist = np.linalg.norm(closest - points[mine][:, None], axis=-1)
        dist[cand < 0] = np.inf
        best = np.argmin(dist, axis=1)
        rows = np.arange(len(mine))
        triangles[mine] = tri[cand[rows, best]]
        bary[mine] = weights[rows, best]
        distance[mine] = dist[rows, best]
    return triangles, bary, distance


def _candidates(points: np.ndarray, vertices: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """(n, k) candidate triangle ids per point (-1: none): the triangles around its nearest
    source vertices, and those with the nearest centroids (long thin triangles at the lips
    have far centroids, so centroids alone miss them)."""
    used = np.unique(tri)
    incident = [[] for _ in range(len(vertices))]
    for t, corners in enumerate(tri):
        for v in corners:
            incident[v].append(t)
    width = max(len(incident[v]) for v in used)
    table = np.full((len(vertices), width), -1)
    for v in used:
        table[v, : len(incident[v])] = incident[v]
    near = cKDTree(vertices[used]).query(points, k=min(3, len(used)))[1].reshape(len(points), -1)
    around = table[used[near]].reshape(len(points), -1)
    k = min(CANDIDATE_TRIANGLES, len(tri))
    nearest = cKDTree(vertices[tri].mean(axis=1)).query(points, k=k)[1].reshape(len(points), k)
    return np.concatenate([around, nearest], axis=1)


def closest_point_on_triangles(p: np.ndarray, tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest points of p (..., 3) on triangles tri (..., 3, 3): (points, barycentric (..., 3)).

    The region tests of Ericson, Real-Time Collision Detection 5.1.5, vectorised: the
    first region that matches (vertex A, B, edge AB, vertex C, edges AC, BC, inside) wins,
    so they are applied here from the last to the first.
    """
    a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]
    dot = lambda x, y: np.sum(x * y, axis=-1)
    ab, ac = b - a, c - a
    d1, d2 = dot(ab, p - a), dot(ac, p - a)
    d3, d4 = dot(ab, p - b), dot(ac, p - b)
    d5, d6 = dot(ab, p - c), dot(ac, p - c)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    ratio = lambda x, y: x / np.where(np.abs(y) > 1e-30, y, 1e-30)
    zero, one = np.zeros_like(d1), np.ones_like(d1)
    total = va + vb + vc
    v, w = ratio(vb, total), ratio(vc, total)
    t_ab, t_ac, t_bc = ratio(d1, d1 - d3), ratio(d2, d2 - d6), ratio(d4 - d3, (d4 - d3) + (d5 - d6))
    regions = [  # last to first
        (one > 0, (1 - v - w, v, w)),
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), (zero, 1 - t_bc, t_bc)),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), (1 - t_ac, zero, t_ac)),
        ((d6 >= 0) & (d5 <= d6), (zero, zero, one)),
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), (1 - t_ab, t_ab, zero)),
        ((d3 >= 0) & (d4 <= d3), (zero, one, zero)),
        ((d1 <= 0) & (d2 <= 0), (one, zero, zero)),
    ]
    out = np.zeros(d1.shape + (3,))
    for condition, weights in regions:
        out = np.where(condition[..., None], np.stack(weights, axis=-1), out)
    return np.einsum("...k,...kc->...c", out, tri), out
