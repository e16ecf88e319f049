"""Metrics against hand-computed cases, on the tiny head and on the open head."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.core.head_model import HeadModel
from model.core.motion_file import MotionClip, save_motion
from model.metrics import (
    head_pose_dynamics_deviation,
    lip_opening_dynamics_deviation,
    lip_vertex_error,
    mean_head_distance,
    sequence_metrics,
    upper_face_dynamics_deviation,
)
from test_head_model import tiny_head


def test_identical_motion_scores_zero(open_head_file):
    head = HeadModel.load(open_head_file)
    motion = np.random.default_rng(0).uniform(0, 0.5, (30, head.num_channels)).astype(np.float32)
    result = sequence_metrics(head, motion, motion)
    assert all(value == pytest.approx(0, abs=1e-9) for value in result.as_dict().values())


def test_known_lip_offset_gives_known_lve_and_mhd():
    truth = np.zeros((4, 5, 3))
    pred = truth.copy()
    pred[:, 2] += (3.0, 4.0, 0.0)  # one lip vertex 5 mm off in every frame
    pred[1, 3] += (0.0, 0.0, 2.0)  # another 2 mm off in frame 1 (smaller: the max is 5)
    assert lip_vertex_error(pred, truth, np.array([2, 3])) == pytest.approx(5.0)
    assert mean_head_distance(pred, truth) == pytest.approx((4 * 5 + 2) / 20)


def test_known_opening_std_gives_known_lodd():
    pairs = np.array([[0, 1]])
    frames = np.zeros((4, 2, 3))
    truth, pred = frames.copy(), frames.copy()
    truth[:, 1, 2] = (-2, -4, -2, -4)  # opening 2,4,2,4 mm: std 1
    pred[:, 1, 2] = (-3, -3, -3, -3)  # constant opening: std 0
    assert lip_opening_dynamics_deviation(pred, truth, pairs) == pytest.approx(1.0)


def test_known_upper_face_activity_gives_known_fdd():
    template = np.zeros((2, 3))
    truth = np.zeros((4, 2, 3))
    truth[:, 0, 2] = (0, 2, 0, 2)  # vertex 0 moves 0,2,0,2 mm: std 1; vertex 1 still
    pred = np.zeros((4, 2, 3))
    assert upper_face_dynamics_deviation(pred, truth, template, np.array([0, 1])) == pytest.approx(0.5)


def test_known_head_angle_std_gives_known_hpdd():
    degrees = np.radians
    truth = np.zeros((4, 3))
    truth[:, 0] = degrees([-3, 3, -3, 3])  # pitch std 3 deg, others still: mean over axes 1 deg
    pred = np.zeros((4, 3))
    assert head_pose_dynamics_deviation(pred, truth) == pytest.approx(1.0)


def test_hpdd_reads_the_composed_head_rotation(open_head_file):
    head = HeadModel.load(open_head_file)
    truth = head.neutral_motion(4)
    truth[:, head.rotation_slice("head")] = np.radians([[0, 0, -6], [0, 0, 6], [0, 0, -6], [0, 0, 6]])
    result = sequence_metrics(head, head.neutral_motion(4), truth)
    assert result.hpdd_deg == pytest.approx(2.0)  # yaw std 6 deg, mean over 3 axes
    assert result.lodd_mm == pytest.approx(0, abs=1e-9)  # turning the head leaves the lips alone


def test_tiny_head_rotation_composes_parent_and_child():
    head = tiny_head(joint_roles={"jaw": "jaw", "head": "jaw"})
    motion = head.neutral_motion(1)
    motion[0, head.rotation_slice("root")] = (0, 0, 0.2)
    motion[0, head.rotation_slice("jaw")] = (0, 0, 0.3)
    np.testing.assert_allclose(head.head_rotation(motion)[0], (0, 0, 0.5), atol=1e-12)


def test_metrics_command_prints_all_five(tmp_path, open_head_file):
    head = HeadModel.load(open_head_file)
    truth = head.neutral_motion(10)
    pred = truth.copy()
    pred[:, head.expression_names.index("jawOpen")] = np.linspace(0, 1, 10)
    save_motion(tmp_path / "pred.npz", MotionClip(pred, tuple(head.channel_names)))
    save_motion(tmp_path / "truth.npz", MotionClip(truth, tuple(head.channel_names)))
    out = subprocess.run(
        [sys.executable, "-m", "model", "metrics", str(tmp_path / "pred.npz"), str(tmp_path / "truth.npz"),
         "--head", str(open_head_file)],
        capture_output=True, text=True, check=True, cwd=head_root(),
    ).stdout
    values = dict(line.split() for line in out.strip().splitlines())
    assert set(values) == {"lve_mm", "mhd_mm", "fdd_mm", "lodd_mm", "hpdd_deg"}
    assert float(values["lve_mm"]) > 5 and float(values["hpdd_deg"]) == 0
    wrong = tmp_path / "wrong.npz"
    save_motion(wrong, MotionClip(np.zeros((10, 7), np.float32), tuple("abcdefg")))
    failed = subprocess.run([sys.executable, "-m", "model", "metrics", str(wrong), str(tmp_path / "truth.npz"),
                             "--head", str(open_head_file)], capture_output=True, text=True, cwd=head_root())
    assert failed.returncode == 2 and "not those of head model" in failed.stderr


def head_root() -> Path:
    return Path(__file__).resolve().parents[1]
