"""Torch twin of `head_model.HeadModel.vertices`, differentiable, for training losses.

Same formula, same channel layout; `tests/test_head_model_torch.py` holds the two to
each other. Batched: motion (..., T, C) -> vertices (..., T, V, 3).
"""
from __future__ import annotations

import torch

from .core.head_model import HeadModel


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """(..., 3) radians -> (..., 3, 3). Smooth at zero (Taylor terms), so gradients stay finite."""
    angle2 = (rotvec * rotvec).sum(-1, keepdim=True)
    small = angle2 < 1e-8
    safe2 = torch.where(small, torch.ones_like(angle2), angle2)
    angle = safe2.sqrt()
    # sin(a)/a and (1 - cos a)/a^2 with their series near zero
    a = torch.where(small, 1 - angle2 / 6, torch.sin(angle) / angle)
    b = torch.where(small, 0.5 - angle2 / 24, (1 - torch.cos(angle)) / safe2)
    x, y, z = rotvec.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*rotvec.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    return eye + a[..., None] * skew + b[..., None] * (skew @ skew)


class TorchHeadModel(torch.nn.Module):
    """Evaluates a HeadModel in torch; the arrays are buffers, so `.to(device)` moves them."""

    def __init__(self, head: HeadModel, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.num_expressions = head.num_expressions
        self.parents = [int(p) for p in head.joint_parents]
        self.motion_joint_index = [head.joint_names.index(j) for j in head.motion_joints]
        as_tensor = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
        self.register_buffer("template", as_tensor(head.template))
        self.register_buffer("expression_basis", as_tensor(head.expression_basis))
        self.register_buffer("joints", as_tensor(head.joints))
        self.register_buffer("lbs_weights", as_tensor(head.lbs_weights))
        self.register_buffer("pose_basis", as_tensor(head.pose_basis) if head.pose_basis is not None else None)
        for name, index in head.regions.items():
            self.register_buffer(f"region_{name}", torch.as_tensor(index, dtype=torch.long))

    def joint_rotations(self, motion: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., J, 3, 3) local rotations, identity for unanimated joints."""
        batch = motion.shape[:-1]
        rotations = [torch.eye(3, dtype=motion.dtype, device=motion.device).expand(*batch, 3, 3)] * len(self.parents)
        for k, j in enumerate(self.motion_joint_index):
            start = self.num_expressions + 3 * k
            rotations[j] = axis_angle_to_matrix(motion[..., start : start + 3])
        return torch.stack(rotations, dim=-3)

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        """(..., C) motion -> (..., V, 3) vertices in metres (any leading dims, e.g. B, T)."""
        expr = motion[..., : self.num_expressions]
        verts = self.template + torch.einsum("...e,evc->...vc", expr, self.expression_basis)
        rotations = self.joint_rotations(motion)
        if self.pose_basis is not None:
            features = (rotations[..., 1:, :, :] - torch.eye(3, dtype=motion.dtype, device=motion.device))
            verts = verts + torch.einsum("...p,pvc->...vc", features.flatten(-3), self.pose_basis)
        transforms = self.skinning_transforms(rotations)
        blended = torch.einsum("vj,...jab->...vab", self.lbs_weights, transforms)
        return torch.einsum("...vab,...vb->...va", blended[..., :3], verts) + blended[..., 3]

    def skinning_transforms(self, rotations: torch.Tensor) -> torch.Tensor:
        """(..., J, 3, 3) local rotations -> (..., J, 3, 4), as head_model.skinning_transforms."""
        world_rot, world_pos = [], []
        for j, p in enumerate(self.parents):
            if p < 0:
                world_rot.append(rotations[..., j, :, :])
                world_pos.append(self.joints[j].expand(*rotations.shape[:-3], 3))
            else:
                world_rot.append(world_rot[p] @ rotations[..., j, :, :])
                offset = self.joints[j] - self.joints[p]
                world_pos.append(world_pos[p] + (world_rot[p] @ offset[:, None])[..., 0])
        rot = torch.stack(world_rot, dim=-3)
        pos = torch.stack(world_pos, dim=-2)
        translation = pos - (rot @ self.joints[:, :, None])[..., 0]
        return torch.cat([rot, translation[..., None]], dim=-1)
