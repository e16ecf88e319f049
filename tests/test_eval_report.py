"""`python -m model evaluate` end to end: a small synthetic dataset, a tiny codec and AR
model trained on it by the training commands, and the whole report (metrics table,
controllability, LibriVox, dynamic captions, speed, Blender stills) written from them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.core.schedule import CaptionSegment
from model.evaluate.conditions import CONDITIONS, condition_segments
from model.evaluate.dynamic import border_steps, frame_to_frame_mm, take_effect_frame
from model.evaluate import EvaluationError
from model.evaluate.report import concatenated_audio
from model.core.head_model import HeadModel

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_model(*args: str) -> subprocess.CompletedProcess:
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "-m", "model", *args], cwd=REPO_ROOT, env=dict(os.environ, **env),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def head(open_head_file) -> HeadModel:
    return HeadModel.load(open_head_file)


def test_condition_segments_blank_what_the_condition_leaves_out():
    segments = [CaptionSegment(0.0, "calm", "sad"), CaptionSegment(2.0, "calm", "happy")]
    assert condition_segments(segments, "both") == segments
    assert [(s.style, s.emotion) for s in condition_segments(segments, "none")] == [("", "")] * 2
    assert [(s.style, s.emotion) for s in condition_segments(segments, "style")] == [("calm", "")] * 2
    assert [(s.start, s.emotion) for s in condition_segments(segments, "emotion")] == [(0.0, "sad"), (2.0, "happy")]


def test_take_effect_is_the_first_frame_half_way_to_the_new_level():
    trace = np.r_[np.zeros(50), np.linspace(0, 1, 11)[1:], np.ones(40)]  # ramps 0 -> 1 over frames 50..59
    # the 5-frame mean from frame f reaches 0.5 at f = 52 (mean of 0.3 .. 0.7)
    assert take_effect_frame(trace, 50, 0.0, 1.0) == 52
    assert take_effect_frame(1 - trace, 50, 1.0, 0.0) == 52
    assert take_effect_frame(np.zeros(100), 50, 0.0, 1.0) is None


def test_frame_to_frame_change_is_the_mean_vertex_step(head):
    motion = head.neutral_motion(3)
    motion[2, head.rotation_slice("head")] = (0.0, 0.0, 0.1)
    steps = frame_to_frame_mm(head, motion)
    moved = np.linalg.norm(head.vertices(motion[2:3]) - head.vertices(motion[1:2]), axis=-1).mean() * 1000
    assert steps[0] == 0 and steps[1] == 0 and steps[2] == pytest.approx(moved) and moved > 1


def test_border_steps_find_a_seam_at_a_window_border(head):
    motion = head.neutral_motion(30)
    jaw = head.channel_names.index("jawOpen")
    motion[:, jaw] = np.linspace(0.0, 0.29, 30)  # a steady opening: the same step everywhere
    smooth = border_steps(head, motion, window=10)
    assert smooth[0] == pytest.approx(smooth[1], rel=1e-3)
    motion[20:, jaw] += 0.1  # a seam where the third window starts
    seam, other_max, _ = border_steps(head, motion, window=10)
    assert seam > 3 * other_max


def test_concatenated_audio_is_cut_to_length_and_refuses_too_little(tmp_path):
    from model.core.audio import save_audio

    for index in range(2):
        save_audio(tmp_path / f"{index}.wav", np.full(16000, index + 1, np.float32) * 0.1)
    audio = concatenated_audio([tmp_path / "0.wav", tmp_path / "1.wav"], 1.5)
    assert audio.size == 24000 and audio[0] == pytest.approx(0.1, abs=1e-3) and audio[-1] == pytest.approx(0.2, abs=1e-3)
    with pytest.raises(EvaluationError, match="only 2 s"):
        concatenated_audio([tmp_path / "0.wav", tmp_path / "1.wav"], 3.0)


def test_the_report_is_written_with_every_section(tiny_checkpoint, tmp_path):
    data, checkpoint = tiny_checkpoint
    out = tmp_path / "report"
    run_model("evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out), "--clips", "1",
              "--control-audios", "1", "--speed-seconds", "5", "--device", "cpu")
    report = (out / "report.md").read_text()
    for heading in ("## Metrics under caption conditions", "## Controllability", "## Real speech",
                    "## Captions that change mid-sentence", "## Speed", "## Three captions, same audio",
                    "## Real faces"):
        assert heading in report
    for label in CONDITIONS.values():
        assert label in report
    for png in ("real_speech.png", "dynamic_captions.png", "stills.png"):
        assert (out / png).stat().st_size > 10_000 and f"]({png})" in report
    summary = json.loads((out / "summary.json").read_text())
    static = summary["conditions"]["metrics"]["static"]
    assert summary["conditions"]["clips"] == 1 and static["hpdd_deg"] > 0 and static["lve_mm"] > 0
    assert len(summary["controllability"]["rows"]) >= 40
    assert len(summary["real_speech"]["recordings"]) == 5
    assert summary["real_speech"]["lip_events"]["teacher"]["closures"] > 20
    faces = summary["real_faces"]  # the GRID clips when they are there, else the reason they are not
    assert ("skipped" in faces and "real_faces.png" not in report) or (
        len(faces["clips"]) == 11 and faces["all"]["teacher jawOpen"]["clips"] == 11 and "](real_faces.png)" in report
        and json.loads((out / "real_faces.json").read_text()) == faces
        and (out / "real_faces.md").read_text().strip() in report)
    assert all(case["untouched_before"] < 0.05 for case in summary["dynamic"])
    borders = summary["window_borders"]
    assert borders["max_step_at_borders_mm"] >= 0 and len(borders["border_offsets_std"]) >= 1
    speeds = summary["speed"]
    assert speeds[-1]["threads"] == 1 and all(s["audio_s"] == 5 and s["wall_s"] > 0 for s in speeds)


def test_a_checkpoint_for_another_head_is_refused_clearly(tmp_path, tiny_checkpoint):
    data, checkpoint = tiny_checkpoint
    other = tmp_path / "other"
    other.mkdir()
    for path in checkpoint.iterdir():
        if path.is_file():
            (other / path.name).write_bytes(path.read_bytes())
    manifest = json.loads((other / "captalk.json").read_text())
    manifest["head_model"] = "someone-elses-head"
    (other / "captalk.json").write_text(json.dumps(manifest))
    result = subprocess.run([sys.executable, "-m", "model", "evaluate", "--checkpoint", str(other), "--data",
                             str(data), "--out", str(tmp_path / "r"), "--no-render"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "open head" in result.stderr and "someone-elses-head" in result.stderr
    assert not (tmp_path / "r" / "report.md").exists()


def test_face_lve_ignores_head_pose_but_not_the_jaw(head):
    from model.evaluate.conditions import face_lve
    from model.metrics import sequence_metrics

    truth = head.neutral_motion(10)
    turned = truth.copy()
    turned[:, head.rotation_slice("head")] = (0.0, 0.1, 0.0)  # 5.7 degrees: lips move by millimetres
    assert sequence_metrics(head, turned, truth).lve_mm > 2 and face_lve(head, turned, truth) == 0
    opened = truth.copy()
    opened[:, head.channel_names.index("jawOpen")] = 0.5
    assert face_lve(head, opened, truth) == pytest.approx(sequence_metrics(head, opened, truth).lve_mm)
