"""The torch twin computes what the numpy head model computes, with usable gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import flame_fixtures
from model.core.flame_import import import_flame
from model.core.head_model import HeadModel
from model.head_model_torch import TorchHeadModel, axis_angle_to_matrix
from model.core.rotations import axis_angle_to_matrix as np_axis_angle_to_matrix


def random_motion(head: HeadModel, frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    motion = np.zeros((frames, head.num_channels))
    motion[:, : head.num_expressions] = rng.uniform(0, 0.8, (frames, head.num_expressions))
    motion[:, head.num_expressions :] = rng.normal(0, 0.2, (frames, head.num_channels - head.num_expressions))
    return motion


@pytest.fixture(scope="module")
def flame_head(tmp_path_factory):
    return import_flame(flame_fixtures.write_flame_npz(tmp_path_factory.mktemp("f") / "flame.npz"))


def test_rotations_match_numpy_and_are_smooth_at_zero():
    rotvec = torch.tensor(np.random.default_rng(0).normal(0, 1, (50, 3)), dtype=torch.float64)
    np.testing.assert_allclose(axis_angle_to_matrix(rotvec).numpy(), np_axis_angle_to_matrix(rotvec.numpy()), atol=1e-12)
    zero = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    axis_angle_to_matrix(zero)[0, 1].backward()
    assert torch.isfinite(zero.grad).all() and zero.grad[2].item() == pytest.approx(-1.0)


@pytest.mark.parametrize("which", ["open", "flame"])
def test_torch_vertices_equal_numpy_vertices(which, open_head_file, flame_head):
    head = HeadModel.load(open_head_file) if which == "open" else flame_head
    motion = random_motion(head, 6)
    expected = head.vertices(motion)
    twin = TorchHeadModel(head, dtype=torch.float64)
    got = twin(torch.as_tensor(motion)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-9)
    batched = twin(torch.as_tensor(np.stack([motion, motion[::-1]])))  # (B, T, C) -> (B, T, V, 3)
    np.testing.assert_allclose(batched[1].numpy(), expected[::-1], atol=1e-9)


def test_gradients_reach_every_channel(open_head_file):
    head = HeadModel.load(open_head_file)
    twin = TorchHeadModel(head)
    motion = torch.zeros(2, head.num_channels, requires_grad=True)
    lips = twin(motion)[:, twin.region_lips]
    (lips - twin.template[twin.region_lips]).square().sum().backward()  # at rest: finite, not NaN
    assert torch.isfinite(motion.grad).all()
    target = torch.as_tensor(head.vertices(random_motion(head, 2, seed=3)), dtype=torch.float32)
    motion.grad = None
    (twin(motion) - target).square().mean().backward()
    moved = motion.grad.abs().sum(0)
    assert (moved[head.expression_names.index("jawOpen")] > 0) and (moved[head.rotation_slice("head")] > 0).all()
