"""Real faces: lip sync against tracked video of real talking people (issue 17, part 1).

The clips are GRID sentences (``<folder>/grid/*.mpg``, frontal, 25 fps, 3 s; transcripts in
the table of ``<folder>/README.md``; default folder `default_folder`: $CAPTALK_REAL_FACES,
else ``../shared/real-faces`` beside the repo). Each clip is decoded with ffmpeg (the binary of the PyPI package imageio-ffmpeg):
video frames as RGB, audio at its own rate (44.1 kHz) resampled to 16 kHz by
`model.core.audio.load_audio`. MediaPipe's FaceLandmarker (PyPI ``mediapipe``, CPU; model
``face_landmarker.task``) tracks every frame into 52 ARKit-named blendshape scores (the
first is ``_neutral``) and a facial transformation matrix (head rotation): a `FaceTrack`.
Tracking is deterministic, so it is cached on disk, keyed by the hashes of the clip and of
the tracker model (`track_clip`).

MediaPipe's values are estimates from video, not capture: its jawOpen reads low (peaks
of 0.3-0.6 in speech, where a capture rig reads more). Only correlation and timing are
compared, never absolute size.

Systems compared with the human's jawOpen h (T,), each a (T,) curve s:
  model jawOpen / model mouth opening   the checkpoint on the clip's audio, neutral captions
  loudness envelope                     `model.data.prosody.analyse(audio).loudness` (no model)
  teacher jawOpen / teacher mouth opening  `model.data.teacher.animate_recording` on the
                                        transcript (pocketsphinx forced alignment)
(mouth opening = mean inner-lip gap in mm on the open head, `real_speech.mouth_opening`.)

Per clip and system: r0 = Pearson(s, h) at lag 0, and the lag k in [-5, 5] frames that
maximises c(k) = Pearson(s[t + k], h[t]) with r_best = c(k) (`real_speech.lag_and_correlation`;
positive k: the system is late). Over clips: mean and median of r0 and r_best, the median
lag and the mean |lag|. `CALIBRATION_CLIPS` may be used to calibrate anything (the
teacher's timing, a post-filter); the other clips (`held_out`) are the ones to report.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..core.atomic import atomic_write
from ..core.audio import MOTION_FPS, load_audio
from ..core.errors import MissingPart
from ..core.head_model import HeadModel
from ..core.paths import REPO_ROOT, shared_data_dir
from ..core.rotations import matrix_to_axis_angle
from .real_speech import DEFAULT_MAX_LAG, lag_and_correlation, mouth_opening
from . import save_figure

CLIPS_SUBDIR = "grid"
TRACKER_FILE = "face_landmarker.task"
# fixed before any figure was seen: every third clip in name order (4 of 11), so that
# calibrated settings are reported on the 7 others
CALIBRATION_CLIPS = ("bbaf2n", "lbbc2a", "pwij3p", "sbwe5n")
TRACK_FORMAT = 1  # bump when the cached arrays change meaning
# MediaPipe's camera axes (x to the image's right, y up, z towards the camera) -> the head
# model's (x to the character's left, which is the image's right for a frontal face; y away
# from the viewer, the face looking along -y; z up)
CAMERA_TO_HEAD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def default_folder() -> Path:
    """$CAPTALK_REAL_FACES, else ``<repo>/../shared/real-faces`` (where CI keeps the clips)."""
    return Path(os.environ.get("CAPTALK_REAL_FACES") or REPO_ROOT.parent / "shared" / "real-faces")


def default_tracker(folder: str | os.PathLike | None = None) -> Path:
    """The FaceLandmarker model beside the clips' folder: ``<folder>/../models/face_landmarker.task``."""
    return Path(folder or default_folder()).parent / "models" / TRACKER_FILE


class RealFacesError(MissingPart):
    """The real-face clips, their transcripts or the tracker cannot be used; the message says why."""


@dataclass(frozen=True)
class GridClip:
    name: str  # file stem
    video: Path
    transcript: str


@dataclass(frozen=True)
class FaceTrack:
    """A tracked clip: ``scores`` (F, 52) blendshape scores named ``names`` (ARKit names, the
    first ``_neutral``), ``rotation`` (F, 3, 3) head rotation in MediaPipe's camera axes,
    ``found`` (F,) whether a face was found (frames without one hold the nearest found
    frame's values), at ``fps``."""

    names: tuple[str, ...]
    scores: np.ndarray
    rotation: np.ndarray
    found: np.ndarray
    fps: float

    def curve(self, name: str) -> np.ndarray:
        """(F,) scores of one blendshape, e.g. ``jawOpen``."""
        if name not in self.names:
            raise KeyError(f"the tracker gives no {name!r}; it gives {', '.join(self.names)}")
        return self.scores[:, self.names.index(name)]

    def head_axis_angle(self) -> np.ndarray:
        """(F, 3) radians: the head's rotation relative to its median pose in the clip,
        as axis-angle in the head model's axes (``head.rx/.ry/.rz`` of the open head)."""
        in_head = CAMERA_TO_HEAD @ self.rotation @ CAMERA_TO_HEAD.T
        rest = _nearest_rotation(np.median(in_head, axis=0))
        return matrix_to_axis_angle(in_head @ rest.T)

    def to_motion(self, channels: Sequence[str]) -> np.ndarray:
        """(F, C) motion in the layout ``channels`` (ARKit names + ``head.rx/ry/rz``):
        same-named blendshapes copied, head rotation from `head_axis_angle`, the rest 0."""
        motion = np.zeros((len(self.scores), len(channels)), np.float32)
        head = self.head_axis_angle()
        for index, name in enumerate(channels):
            if name in self.names:
                motion[:, index] = self.scores[:, self.names.index(name)]
            elif name in ("head.rx", "head.ry", "head.rz"):
                motion[:, index] = head[:, "xyz".index(name[-1])]
        return motion


def _nearest_rotation(matrix: np.ndarray) -> np.ndarray:
    """The rotation closest to a (3, 3) matrix (SVD; removes scale and shear)."""
    u, _, vt = np.linalg.svd(matrix)
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        rotation = u @ np.diag([1.0, 1.0, -1.0]) @ vt
    return rotation


# ----------------------------------------------------------------------------- clips


def grid_clips(folder: str | os.PathLike | None = None) -> list[GridClip]:
    """``folder``/grid/*.mpg with their sentences from the ``| clip | sentence |`` table of
    ``folder``/README.md, in name order. A clip without a sentence is an error."""
    folder = Path(folder or default_folder())
    videos = sorted((folder / CLIPS_SUBDIR).glob("*.mpg"))
    if not videos:
        raise RealFacesError(f"no clips in {folder / CLIPS_SUBDIR} (expected GRID .mpg files)")
    readme = folder / "README.md"
    if not readme.is_file():
        raise RealFacesError(f"{readme} not found: it holds the clips' transcripts")
    sentences = {}
    for line in readme.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] and not cells[0].startswith("-") and cells[0] != "clip":
            sentences[cells[0]] = re.sub(r"\s*\(.*\)\s*$", "", cells[1])  # drop "(word timings ...)"
    missing = [v.stem for v in videos if v.stem not in sentences]
    if missing:
        raise RealFacesError(f"{readme} gives no sentence for {', '.join(missing)}")
    return [GridClip(v.stem, v, sentences[v.stem]) for v in videos]


def _ffmpeg() -> str:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise RealFacesError("decoding the real-face videos needs the PyPI package imageio-ffmpeg "
                             "(pip install -r requirements/backend.txt)") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


def decode_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """A video file -> ((F, H, W, 3) uint8 RGB frames, frames per second)."""
    import imageio_ffmpeg

    _ffmpeg()
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    width, height = meta["size"]
    frames = np.stack([np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in reader])
    return frames, float(meta["fps"])


def decode_audio(path: str | os.PathLike) -> np.ndarray:
    """A video file's first audio track -> (N,) float32 at 16 kHz (PCM at its own rate
    from ffmpeg, then CapTalk's own resampler)."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "audio.wav"
        done = subprocess.run([_ffmpeg(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-c:a", "pcm_s16le",
                               str(wav)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RealFacesError(f"{path}: ffmpeg could not decode its audio: {done.stderr.strip()[-300:]}")
        return load_audio(wav)


# ----------------------------------------------------------------------------- tracking


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def track_frames(frames: np.ndarray, fps: float, tracker_model: str | os.PathLike) -> FaceTrack:
    """(F, H, W, 3) uint8 RGB frames -> `FaceTrack`, MediaPipe FaceLandmarker in video mode."""
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError:
        raise RealFacesError("tracking real faces needs the PyPI package mediapipe "
                             "(pip install -r requirements/backend.txt)") from None
    if not Path(tracker_model).is_file():
        raise RealFacesError(f"the FaceLandmarker model {tracker_model} is missing (face_landmarker.task)")
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(tracker_model)), running_mode=vision.RunningMode.VIDEO,
        num_faces=1, output_face_blendshapes=True, output_facial_transformation_matrixes=True)
    landmarker = vision.FaceLandmarker.create_from_options(options)
    names, scores, rotations, found = None, [], [], []
    try:
        for index, frame in enumerate(frames):
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
            result = landmarker.detect_for_video(image, int(round(index * 1000.0 / fps)))
            if result.face_blendshapes:
                shapes = result.face_blendshapes[0]
                names = names or tuple(s.category_name for s in shapes)
                scores.append([s.score for s in shapes])
                rotations.append(_nearest_rotation(np.asarray(result.facial_transformation_matrixes[0])[:3, :3]))
                found.append(True)
            else:
                scores.append(None)
                rotations.append(None)
                found.append(False)
    finally:
        landmarker.close()  # MediaPipe's graph threads must stop before the interpreter exits
    if names is None:
        raise RealFacesError("no face was found in any frame")
    hits = np.flatnonzero(found)
    nearest = hits[np.abs(np.arange(len(found))[:, None] - hits[None, :]).argmin(axis=1)]
    return FaceTrack(names, np.array([scores[i] for i in nearest], np.float32),
                     np.array([rotations[i] for i in nearest], np.float64), np.array(found), float(fps))


def track_clip(video: str | os.PathLike, tracker_model: str | os.PathLike,
               cache: str | os.PathLike | None = None) -> FaceTrack:
    """The `FaceTrack` of a video file, from ``cache`` (default ``<data dir>/real-faces-cache``)
    when it was tracked before: the cache file is named by the sha256 of the video, of the
    tracker model and `TRACK_FORMAT`, so a changed clip or model is tracked afresh."""
    video, tracker_model = Path(video), Path(tracker_model)
    if not tracker_model.is_file():
        raise RealFacesError(f"the FaceLandmarker model {tracker_model} is missing (face_landmarker.task)")
    cache = Path(cache) if cache is not None else shared_data_dir() / "real-faces-cache"
    key = hashlib.sha256(f"{_sha256(video)} {_sha256(tracker_model)} {TRACK_FORMAT}".encode()).hexdigest()[:24]
    path = cache / f"{video.stem}-{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as saved:
            return FaceTrack(tuple(json.loads(str(saved["names"]))), saved["scores"], saved["rotation"],
                             saved["found"], float(saved["fps"]))
    frames, fps = decode_video(video)
    track = track_frames(frames, fps, tracker_model)
    atomic_write(path, lambda name: np.savez(name, names=json.dumps(track.names), scores=track.scores,
                                             rotation=track.rotation, found=track.found, fps=track.fps),
                 suffix=".npz")
    return track


# ----------------------------------------------------------------------------- comparison

SYSTEMS = ("model jawOpen", "model mouth opening", "loudness envelope", "teacher jawOpen",
           "teacher mouth opening")


@dataclass(frozen=True)
class Agreement:
    """One system on one clip: r at lag 0, the best lag (frames, + = late) and r there."""

    r0: float
    lag: int
    r_best: float


@dataclass(frozen=True)
class ClipResult:
    name: str
    transcript: str
    calibration: bool  # in `CALIBRATION_CLIPS`
    human_jaw: np.ndarray = field(repr=False, compare=False)  # (T,) MediaPipe jawOpen
    curves: Mapping[str, np.ndarray] = field(repr=False, compare=False)  # system -> (T,)
    agreement: Mapping[str, Agreement] = field(default_factory=dict)


def agreement(system: np.ndarray, human: np.ndarray, max_lag: int = DEFAULT_MAX_LAG) -> Agreement:
    """`Agreement` of a (T,) system curve with the (T,) human curve (cut to the shorter);
    a curve that never moves gets nan (no correlation), not an error, so one flat system
    does not hide the others' figures."""
    frames = min(len(system), len(human))
    try:
        lag, r0, best = lag_and_correlation(np.asarray(system[:frames]), np.asarray(human[:frames]), max_lag)
    except ValueError:
        return Agreement(float("nan"), 0, float("nan"))
    return Agreement(r0, lag, best)


def loudness_envelope(audio: np.ndarray, frames: int) -> np.ndarray:
    """(N,) 16 kHz audio -> (frames,) loudness at 25 fps, the teacher's own measure (`prosody.analyse`)."""
    from ..data.prosody import analyse

    return analyse(audio, frames).loudness


def system_curves(head: HeadModel, audio: np.ndarray, transcript: str, frames: int,
                  model_motion: np.ndarray | None, teacher_motion: np.ndarray | None) -> dict[str, np.ndarray]:
    """The (T,) curve of every system available: jawOpen and mouth opening (mm) of the
    model's and the teacher's (T', C) motion on ``head``, and the loudness envelope."""
    jaw = head.channel_names.index("jawOpen")
    curves = {"loudness envelope": loudness_envelope(audio, frames)}
    for label, motion in (("model", model_motion), ("teacher", teacher_motion)):
        if motion is not None:
            curves[f"{label} jawOpen"] = np.asarray(motion[:, jaw], np.float64)
            curves[f"{label} mouth opening"] = mouth_opening(head, motion)
    return curves


def evaluate_real_faces(clips: Sequence[GridClip], head: HeadModel, tracker_model: str | os.PathLike,
                        generate: Callable[[np.ndarray], np.ndarray] | None = None, teacher: bool = True,
                        cache: str | os.PathLike | None = None, max_lag: int = DEFAULT_MAX_LAG,
                        progress=lambda message: None) -> list[ClipResult]:
    """Track each clip and compare every system's curves with the human's jawOpen.

    ``generate(audio (N,) 16 kHz) -> (T, C)`` motion on ``head`` (None: no model rows);
    ``teacher``: animate the transcript by forced alignment, neutral controls, seed 0.
    """
    from ..data.teacher import animate_recording

    results = []
    for clip in clips:
        progress(f"real faces: {clip.name}")
        track = track_clip(clip.video, tracker_model, cache)
        human = track.curve("jawOpen").astype(np.float64)
        audio = decode_audio(clip.video)
        model_motion = np.asarray(generate(audio)) if generate is not None else None
        teacher_motion = animate_recording(audio, clip.transcript, head.channel_names)[0] if teacher else None
        curves = system_curves(head, audio, clip.transcript, len(human), model_motion, teacher_motion)
        results.append(ClipResult(clip.name, clip.transcript, clip.name in CALIBRATION_CLIPS, human, curves,
                                  {name: agreement(curve, human, max_lag) for name, curve in curves.items()}))
    return results


def aggregate(results: Sequence[ClipResult], system: str) -> dict:
    """Over ``results``: mean and median r0 and r_best, median lag, mean |lag| of ``system``
    (clips where its curve is flat are left out and counted)."""
    rows = [r.agreement[system] for r in results if system in r.agreement]
    valid = [a for a in rows if np.isfinite(a.r0)]
    if not valid:
        return {"clips": 0, "flat": len(rows)}
    r0, best, lags = (np.array([getattr(a, k) for a in valid], np.float64) for k in ("r0", "r_best", "lag"))
    return {"clips": len(valid), "flat": len(rows) - len(valid), "mean_r0": float(r0.mean()),
            "median_r0": float(np.median(r0)), "mean_r_best": float(best.mean()),
            "median_r_best": float(np.median(best)), "median_lag": float(np.median(lags)),
            "mean_abs_lag": float(np.abs(lags).mean())}


def real_faces_summary(results: Sequence[ClipResult]) -> dict:
    """JSON-ready: per clip and system the agreement; per system the aggregates over all
    clips and over the held-out ones (not in `CALIBRATION_CLIPS`)."""
    systems = [s for s in SYSTEMS if any(s in r.agreement for r in results)]
    held_out = [r for r in results if not r.calibration]
    return {
        "clips": [{"name": r.name, "transcript": r.transcript, "calibration": r.calibration,
                   "systems": {s: vars(a) for s, a in r.agreement.items()}} for r in results],
        "calibration_clips": [r.name for r in results if r.calibration],
        "all": {s: aggregate(results, s) for s in systems},
        "held_out": {s: aggregate(held_out, s) for s in systems},
    }


def real_faces_markdown(results: Sequence[ClipResult]) -> str:
    """The aggregate table (held-out clips, then all clips) and the per-clip r0 table."""
    summary = real_faces_summary(results)
    systems = list(summary["all"])
    held = [r.name for r in results if not r.calibration]
    lines = ["| system | clips | mean r (lag 0) | median r (lag 0) | mean r (best lag) | median lag (frames) | "
             "mean \\|lag\\| |", "|---|---:|---:|---:|---:|---:|---:|"]
    for part, label in (("held_out", "held-out"), ("all", "all")):
        for system in systems:
            a = summary[part][system]
            if not a["clips"]:
                lines.append(f"| {system} ({label}) | 0 | flat | | | | |")
                continue
            lines.append(f"| {system} ({label}) | {a['clips']} | {a['mean_r0']:.3f} | {a['median_r0']:.3f} | "
                         f"{a['mean_r_best']:.3f} | {a['median_lag']:+.1f} | {a['mean_abs_lag']:.1f} |")
    lines += ["", "| clip | sentence | " + " | ".join(systems) + " |", "|---|---|" + "---:|" * len(systems)]
    for r in results:
        cells = [f"{r.agreement[s].r0:.2f} ({r.agreement[s].lag:+d})" for s in systems]
        lines.append(f"| {r.name}{' (calibration)' if r.calibration else ''} | {r.transcript} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"Pearson r of each system's curve against the human's MediaPipe jawOpen, at lag 0 and at the "
              f"lag in ±{DEFAULT_MAX_LAG} frames (40 ms each) that maximises it (per clip: r at lag 0, best lag in "
              "brackets; + = the system is late). Held-out clips: " + ", ".join(held) + "; calibration clips: "
              + ", ".join(summary["calibration_clips"]) + ". MediaPipe's blendshapes are estimates from video "
              "(its jawOpen reads low, peaks of 0.3-0.6): these figures are about correlation and timing, not "
              "absolute size."]
    return "\n".join(lines)


def plot_real_faces(result: ClipResult, path: str | os.PathLike) -> Path:
    """PNG at ``path``: the human's jawOpen against every system's curves on one clip, each
    curve standardised (z-score) because their units differ; r at lag 0 in the legend."""
    import matplotlib

    matplotlib.use("Agg")  # the report runs headless
    import matplotlib.pyplot as plt

    def z(curve):
        curve = np.asarray(curve, np.float64)
        return (curve - curve.mean()) / (curve.std() or 1.0)

    shown = [("model jawOpen", "tab:red"), ("teacher jawOpen", "tab:blue"), ("loudness envelope", "tab:green")]
    figure, axis = plt.subplots(figsize=(9, 3.2))
    seconds = np.arange(len(result.human_jaw)) / MOTION_FPS
    axis.plot(seconds, z(result.human_jaw), color="black", lw=2.2, label="human (MediaPipe jawOpen)")
    for system, colour in shown:
        if system in result.curves:
            curve = z(result.curves[system])[:len(seconds)]
            axis.plot(seconds[:len(curve)], curve, color=colour, lw=1.3,
                      label=f"{system}: r = {result.agreement[system].r0:.2f}")
    axis.set_xlabel("time (s)")
    axis.set_ylabel("standardised value")
    axis.set_title(f"GRID {result.name}: \"{result.transcript}\"", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(loc="upper right", fontsize=7)
    return save_figure(figure, path)


def write_real_faces(results: Sequence[ClipResult], out: Path) -> Path:
    """real_faces.json, real_faces.md and real_faces.png (a held-out clip) of ``results`` in
    ``out``; the report and this module's command both write them, so neither leaves the
    other's stale. Returns the plot's path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "real_faces.json").write_text(json.dumps(real_faces_summary(results), indent=1) + "\n")
    (out / "real_faces.md").write_text(real_faces_markdown(results) + "\n")
    return plot_real_faces(next((r for r in results if not r.calibration), results[0]), out / "real_faces.png")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m model.evaluate.real_faces --out docs/eval``: this part of the report alone
    (real_faces.md, real_faces.json, real_faces.png), with the bundled model or --checkpoint."""
    import argparse

    from ..core.paths import default_checkpoint_dir, default_open_head_file
    from ..core.schedule import parse_schedule
    from ..core.contract import GenerationOptions
    from ..generate import Generator
    from .controllability import NEUTRAL

    parser = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=str(default_checkpoint_dir()))
    parser.add_argument("--real-faces", help="GRID folder (default: $CAPTALK_REAL_FACES, else ../shared/real-faces)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    generator = Generator.load(args.checkpoint, device=args.device)
    head = HeadModel.load(default_open_head_file())
    schedule, options = parse_schedule(None, *NEUTRAL), GenerationOptions(seed=args.seed)
    results = evaluate_real_faces(grid_clips(args.real_faces), head, default_tracker(args.real_faces),
                                  generate=lambda audio: generator.generate(audio, schedule, options)[0].motion,
                                  progress=print)
    write_real_faces(results, Path(args.out))
    print(real_faces_markdown(results))


if __name__ == "__main__":
    main()
