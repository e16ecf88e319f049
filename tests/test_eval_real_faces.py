"""Real faces (`model.evaluate.real_faces`): the clip listing, the agreement figures on
constructed curves, head rotation axes, and the whole path on one real GRID clip (decode,
MediaPipe tracking cached on disk, the teacher on the transcript against the face)."""
from __future__ import annotations

import numpy as np
import pytest

from model.core.head_model import HeadModel
from model.core.rotations import axis_angle_to_matrix
from model.evaluate import real_faces
from model.evaluate.real_faces import FaceTrack, RealFacesError, agreement, aggregate, grid_clips

README = """# clips

| clip | sentence |
|---|---|
| bbaf2n | bin blue at f two now |
| id2_vcd_swwp2s | set white with p two soon (word timings in `swwp2s.align`) |
"""


def _folder(tmp_path, names=("bbaf2n", "id2_vcd_swwp2s")):
    (tmp_path / "grid").mkdir(parents=True)
    for name in names:
        (tmp_path / "grid" / f"{name}.mpg").write_bytes(b"not a video")
    (tmp_path / "README.md").write_text(README)
    return tmp_path


def test_grid_clips_take_their_sentences_from_the_readme_table(tmp_path):
    clips = grid_clips(_folder(tmp_path))
    assert [(c.name, c.transcript) for c in clips] == [("bbaf2n", "bin blue at f two now"),
                                                      ("id2_vcd_swwp2s", "set white with p two soon")]


def test_a_clip_without_a_sentence_or_a_folder_without_clips_is_refused(tmp_path):
    with pytest.raises(RealFacesError, match="no sentence for lbax4n"):
        grid_clips(_folder(tmp_path / "a", ("bbaf2n", "lbax4n")))
    with pytest.raises(RealFacesError, match="no clips in"):
        grid_clips(tmp_path / "nowhere")


def test_agreement_finds_a_late_system_and_a_flat_one_gets_nan():
    human = np.random.default_rng(0).uniform(0, 1, 75).cumsum() % 1.3
    late = np.r_[np.repeat(human[:1], 2), human[:-2]]  # the same curve two frames late
    found = agreement(late, human)
    assert found.lag == 2 and found.r_best == pytest.approx(1.0) and found.r0 < 1.0
    flat = agreement(np.zeros(75), human)
    assert np.isnan(flat.r0) and np.isnan(flat.r_best)


def test_aggregate_leaves_flat_clips_out_and_counts_them():
    def result(name, r0, lag):
        return real_faces.ClipResult(name, "", False, np.zeros(3), {}, {"s": real_faces.Agreement(r0, lag, r0)})

    summary = aggregate([result("a", 0.2, 1), result("b", 0.6, -3), result("c", float("nan"), 0)], "s")
    assert summary["clips"] == 2 and summary["flat"] == 1
    assert summary["mean_r0"] == pytest.approx(0.4) and summary["median_lag"] == pytest.approx(-1.0)
    assert summary["mean_abs_lag"] == pytest.approx(2.0)


def test_head_rotation_maps_camera_axes_to_the_head_models():
    frames = 5
    yaw = np.linspace(0, 0.3, frames)  # turning about the camera's vertical (y) axis
    rotation = axis_angle_to_matrix(np.stack([np.zeros(frames), yaw, np.zeros(frames)], axis=1))
    track = FaceTrack(("_neutral", "jawOpen"), np.zeros((frames, 2), np.float32), rotation, np.ones(frames, bool), 25.0)
    head = track.head_axis_angle()  # relative to the median pose (yaw 0.15)
    np.testing.assert_allclose(head[:, 2], yaw - 0.15, atol=1e-9)  # the head model's up axis is z
    np.testing.assert_allclose(head[:, :2], 0.0, atol=1e-9)
    motion = track.to_motion(("jawOpen", "mouthClose", "head.rx", "head.ry", "head.rz"))
    assert motion.shape == (frames, 5) and np.allclose(motion[:, 4], yaw - 0.15, atol=1e-6)


def test_one_real_grid_clip_is_tracked_cached_and_scored(tmp_path, open_head_file):
    clip = next(c for c in grid_clips() if c.name == "bbaf2n")
    tracker = real_faces.default_tracker()
    track = real_faces.track_clip(clip.video, tracker, cache=tmp_path)
    jaw = track.curve("jawOpen")
    assert track.scores.shape == (75, 52) and track.names[0] == "_neutral" and track.found.all()
    assert jaw.max() - jaw.min() > 0.15  # the mouth opens and closes as the sentence is said
    assert track.rotation.shape == (75, 3, 3)
    (cached,) = tmp_path.glob("bbaf2n-*.npz")
    again = real_faces.track_clip(clip.video, tracker, cache=tmp_path)  # read back, not re-tracked
    np.testing.assert_array_equal(again.scores, track.scores)
    assert again.names == track.names

    head = HeadModel.load(open_head_file)
    (result,) = real_faces.evaluate_real_faces([clip], head, tracker, cache=tmp_path)
    assert set(result.agreement) == {"loudness envelope", "teacher jawOpen", "teacher mouth opening"}
    teacher = result.agreement["teacher jawOpen"]
    assert np.isfinite(teacher.r0) and abs(teacher.lag) <= 5 and teacher.r_best >= teacher.r0
    assert teacher.r0 > 0.3  # the teacher's jaw follows this real face's, if loosely
    assert len(result.curves["teacher jawOpen"]) == 74  # 2.98 s of audio: frame_count rounds to 74 frames
    table = real_faces.real_faces_markdown([result])
    assert "bbaf2n (calibration)" in table and "estimates" in table
    png = real_faces.plot_real_faces(result, tmp_path / "real_faces.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
