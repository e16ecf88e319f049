"""Build a FLAME adapter (`model.core.flame_adapter`) from the open head and a FLAME head model.

1. `registration.register`: dense correspondence open head -> FLAME template;
2. deformation transfer: each ARKit shape's displacement carried to the FLAME vertices
   through the correspondence (scaled and rotated by the similarity);
3. per shape: the FLAME joint rotations the channel moves (jaw for jaw* and mouthClose,
   the eyes for eyeLook*; jawForward is a translation no FLAME joint makes, so it goes to
   the expressions), by a rigid fit of the vertices skinned to that joint; the rest,
   un-posed through FLAME's skinning and pose correctives, projected onto FLAME's
   expression basis by face-weighted, regularised least squares; the residual per
   channel is reported;
4. what the per-frame lip-gap solve needs (the lip pairs' rest gaps on both heads, their
   change per shape, the factorised normal equations).

Runs in the back end (scipy); the result is numpy arrays only.
"""
from __future__ import annotations

import numpy as np

from ..core.flame_adapter import FlameAdapter
from ..core.head_model import HeadModel, pose_features, skinning_transforms
from ..core.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from .registration import Registration, RegistrationError, register, rig_parts

UNMAPPED = ("tongueOut",)  # FLAME has no tongue
JAW_SHAPES = ("jawLeft", "jawOpen", "jawRight", "mouthClose")
EYE_PREFIX = "eyeLook"
LIP_WEIGHT, FACE_WEIGHT, BACK_WEIGHT = 10.0, 1.0, 0.05
RIDGE = 1e-6  # regulariser, relative to the mean diagonal of the weighted normal matrix
GAP_WEIGHT = 1.0  # the lip-gap term's share, relative to the data term's trace
# A registration is refused when the FLAME face lies this far (x the eye distance) from
# the fitted open head, or when the basis leaves most of the mouth shapes unexpressed.
MAX_FACE_DISTANCE = 0.05
MAX_MOUTH_RESIDUAL = 0.6


def build_adapter(source: HeadModel, target: HeadModel, keep_shapes: bool = True) -> FlameAdapter:
    """The adapter driving ``target`` (a FLAME head model) from ``source``'s (the open head's) channels.

    Raises `RegistrationError` (a `BadInput`) with the reason when the FLAME template
    cannot be registered or its basis cannot express the ARKit shapes.
    """
    if tuple(target.motion_joints) != tuple(target.joint_names):  # map_to_rig poses every joint
        raise RegistrationError(f"'{target.name}' does not animate all its joints; only FLAME-layout rigs have adapters")
    reg = register(source, target)
    q = reg.quality
    if q["face_distance_p95_m"] > MAX_FACE_DISTANCE * q["eye_distance_m"]:
        raise RegistrationError(
            f"registration failed: the face of '{target.name}' stays {1000 * q['face_distance_p95_m']:.1f} mm from "
            f"the fitted open head (95th percentile; limit {1000 * MAX_FACE_DISTANCE * q['eye_distance_m']:.1f} mm), "
            "so it does not look like a human head; the bundled model cannot drive this rig (a model trained "
            "on its own motion can)")
    names = [n for n in source.expression_names if n not in UNMAPPED]
    unmapped = tuple(n for n in source.expression_names if n in UNMAPPED)
    shapes = transfer_shapes(source, reg, names)  # (S, Vt, 3)
    fit = ShapeFit(target, reg)
    psi, rates, report = fit.fit_all(names, shapes)
    mouth = [report[n]["relative"] for n in names if n.startswith(("mouth", "jaw"))]
    if np.median(mouth) > MAX_MOUTH_RESIDUAL:
        raise RegistrationError(
            f"registration failed: FLAME's expression basis in '{target.name}' leaves {100 * np.median(mouth):.0f}% "
            "of the mouth shapes unexpressed (median); the bundled model cannot drive this rig")
    arrays = {"psi": psi, "rates": rates, "head_map": reg.rotation, **fit.gap_arrays(names, shapes, source, reg)}
    joint_map = {}
    for joint in source.motion_joints:
        role = next((r for r, j in source.joint_roles.items() if j == joint), None)
        if role is None or role not in target.joint_roles:
            raise RegistrationError(f"the source joint '{joint}' has no counterpart in '{target.name}'")
        joint_map[joint] = target.joint_roles[role]
    notes = (f"registered '{source.model_id}' onto '{target.model_id}': scale {reg.scale:.3f}, anchors "
             f"{1000 * q['anchor_rms_m']:.1f} mm rms, face {1000 * q['face_distance_mean_m']:.2f} mm mean / "
             f"{1000 * q['face_distance_p95_m']:.2f} mm p95 from the fitted surface",
             f"{', '.join(unmapped)} unmapped (FLAME has no tongue); jawForward is a translation the FLAME jaw "
             "cannot make: it is carried by the expressions only")
    return FlameAdapter(
        target_model_id=target.model_id, target_channels=tuple(target.channel_names),
        source_model_id=source.model_id, source_channels=tuple(source.channel_names),
        shape_names=tuple(names), unmapped=unmapped, motion_joints=tuple(target.motion_joints),
        joint_map=joint_map, arrays=arrays, report={"channels": report, "registration": q}, notes=notes,
        shapes=shapes.astype(np.float32) if keep_shapes else None)


def transfer_shapes(source: HeadModel, reg: Registration, names: list[str]) -> np.ndarray:
    """(S, Vt, 3): each ARKit displacement at the FLAME vertices, in FLAME's frame and scale."""
    index = [source.expression_names.index(n) for n in names]
    displaced = reg.interpolate(source.expression_basis[index].astype(np.float64))
    return reg.scale * displaced @ reg.rotation.T


def face_weights(target: HeadModel, surface: np.ndarray) -> np.ndarray:
    """(Vt,) weights of the fit: lips >> the front of the face >> the back of the head and neck.

    FLAME 2020's expression components move the whole head, so an unweighted fit would
    trade lip accuracy for the scalp.
    """
    rest = target.template
    front = rest[:, 1] < rest[surface, 1].mean()  # the face looks along -Y
    w = np.where(front, FACE_WEIGHT, BACK_WEIGHT)
    w[target.regions["lips"]] = LIP_WEIGHT
    return np.where(surface, w, 0.0)


class ShapeFit:
    """The target's weighted least-squares projection, shared by every shape."""

    def __init__(self, target: HeadModel, reg: Registration):
        self.target = target
        self.rest = target.template.astype(np.float64)
        self.parts = rig_parts(target)
        self.W = face_weights(target, reg.target_surface)
        B = target.expression_basis.astype(np.float64)  # (E, V, 3)
        self.B = B
        Bw = B * self.W[None, :, None]
        normal = np.einsum("evc,fvc->ef", Bw, B)
        self.ridge = RIDGE * np.trace(normal) / len(normal)
        self.M = normal + self.ridge * np.eye(len(normal))
        self.Bw = Bw

    def project(self, offsets: np.ndarray) -> np.ndarray:
        """(..., V, 3) un-posed offsets -> (..., E) coefficients."""
        rhs = np.einsum("evc,...vc->...e", self.Bw, offsets)
        return np.linalg.solve(self.M, rhs[..., None])[..., 0] if rhs.ndim > 1 else np.linalg.solve(self.M, rhs)

    def joints_for(self, name: str) -> list[str]:
        roles = self.target.joint_roles
        if name in JAW_SHAPES:
            return [roles["jaw"]]
        if name.startswith(EYE_PREFIX):
            return [roles["eye_left"], roles["eye_right"]]
        return []

    def fit_rotation(self, joint: str, shape: np.ndarray) -> np.ndarray:
        """Axis-angle (3,) of the best rigid rotation about ``joint`` of the vertices skinned to it."""
        k = self.target.joint_names.index(joint)
        j = self.target.joints[k].astype(np.float64)
        w = self.target.lbs_weights[:, k]
        use = (w > 0.9) & (self.W > 0)
        if use.sum() < 3:
            return np.zeros(3)
        P, Q = self.rest[use] - j, self.rest[use] + shape[use] - j
        U, _, Vt = np.linalg.svd((Q * self.W[use, None]).T @ P)
        R = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt
        return matrix_to_axis_angle(R)

    def unpose(self, rotations: np.ndarray, shape: np.ndarray) -> np.ndarray:
        """Offsets (V, 3) that, skinned with ``rotations`` (J, 3), give rest + ``shape``."""
        t = self.target
        R = axis_angle_to_matrix(rotations)[None]  # (1, J, 3, 3)
        transforms = skinning_transforms(R, t.joints.astype(np.float64), t.joint_parents)[0]
        blended = np.einsum("vj,jab->vab", t.lbs_weights, transforms)
        goal = self.rest + shape - blended[:, :, 3]
        offsets = np.einsum("vab,vb->va", np.linalg.inv(blended[:, :, :3]), goal) - self.rest
        if t.pose_basis is not None:
            offsets -= np.einsum("p,pvc->vc", pose_features(R)[0], t.pose_basis)
        return offsets

    def fit_all(self, names: list[str], shapes: np.ndarray):
        """psi (S, E), rates (S, J, 3) and the residual report per channel."""
        t = self.target
        J = len(t.motion_joints)
        rates = np.zeros((len(names), J, 3))
        offsets = shapes.copy()
        for s, name in enumerate(names):
            joints = self.joints_for(name)
            if not joints:
                continue
            rotations = np.zeros((len(t.joint_names), 3))
            for joint in joints:
                rotations[t.joint_names.index(joint)] = self.fit_rotation(joint, shapes[s])
                rates[s, t.motion_joints.index(joint)] = rotations[t.joint_names.index(joint)]
            offsets[s] = self.unpose(rotations, shapes[s])
        psi = self.project(offsets)
        made = np.einsum("se,evc->svc", psi, self.B)
        report = {}
        W = self.W
        lips = t.regions["lips"]
        for s, name in enumerate(names):
            error = np.sum((made[s] - offsets[s]) ** 2, axis=1)
            size = np.sum(shapes[s] ** 2, axis=1)
            report[name] = {
                "rms_mm": round(1000 * float(np.sqrt(W @ error / W.sum())), 3),
                "lips_max_mm": round(1000 * float(np.sqrt(error[lips].max())), 3) if len(lips) else 0.0,
                "relative": round(float(np.sqrt(W @ error / max(W @ size, 1e-18))), 4),
                "rotation_deg": round(float(np.degrees(np.linalg.norm(rates[s], axis=1).max())), 2),
            }
        return psi, rates, report

    def gap_arrays(self, names: list[str], shapes: np.ndarray, source: HeadModel, reg: Registration) -> dict:
        """What `map_to_rig`'s lip-gap solve needs (see `model.core.flame_adapter`)."""
        t = self.target
        pairs = t.regions["lip_pairs"]
        # Pairs derived from the rig may take a tongue vertex for a lower lip: keep surface pairs only.
        pairs = pairs[reg.target_surface[pairs].all(axis=1)]
        if len(pairs) < 3:
            raise RegistrationError(f"'{t.name}' has fewer than 3 inner-lip pairs on its face surface")
        up, lo = pairs[:, 0], pairs[:, 1]
        K = len(pairs)
        src_rest = reg.scale * source.template.astype(np.float64) @ reg.rotation.T + reg.translation
        src_at = reg.interpolate(src_rest)
        rest_source = src_at[up] - src_at[lo]
        rest_target = self.rest[up] - self.rest[lo]
        normal = rest_source / np.maximum(np.linalg.norm(rest_source, axis=1, keepdims=True), 1e-9)
        # A pair whose open-head gap is (almost) closed has no direction of its own: use 'up'.
        flat = np.linalg.norm(rest_source, axis=1) < 1e-5
        normal[flat] = [0.0, 0.0, 1.0]
        jac = (self.B[:, up] - self.B[:, lo]).transpose(1, 2, 0).reshape(3 * K, -1)  # (3K, E)
        mu = GAP_WEIGHT * np.trace(self.M) / max(np.trace(jac.T @ jac), 1e-18)
        N = self.M + mu * jac.T @ jac
        vertices = np.concatenate([up, lo])
        pose = t.pose_basis[:, vertices] if t.pose_basis is not None else np.zeros((0, 2 * K, 3))
        return {
            "solve_data": np.linalg.solve(N, self.M), "solve_gap": mu * np.linalg.solve(N, jac.T),
            "gap_jacobian": jac, "gap_rest_target": rest_target, "gap_rest_source": rest_source,
            "gap_delta": shapes[:, up] - shapes[:, lo], "gap_normal": normal,
            "lip_rest": self.rest[vertices], "lip_basis": self.B[:, vertices],
            "lip_weights": t.lbs_weights[vertices].astype(np.float64), "lip_pose": pose.astype(np.float64),
            "joints": t.joints.astype(np.float64), "joint_parents": t.joint_parents.astype(np.int64),
            "head_joint": np.int64(t.joint_names.index(t.joint_roles["head"])),
        }
