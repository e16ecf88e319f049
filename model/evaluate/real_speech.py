"""Real speech: the model's mouth opening on real recordings against the teacher on
forced alignment of their transcripts (issue 5, "Real speech").

The recordings are the LibriVox excerpts in Debian's pocketsphinx test data (package
``pocketsphinx-testdata``): five read sentences with their transcripts. For each, the
reference is the teacher animator driven by forced alignment with neutral controls
(`model.data.teacher.animate_recording`, as ``python -m model data teach``); the model's
motion comes from a ``generate(audio_path) -> (T, C)`` callable, so the report can pass a
loaded `Generator` with neutral captions and a fixed seed.

Both motions become one number per frame, the mouth opening o_t in mm (`mouth_opening`),
and are compared by Pearson correlation and by the lag that maximises it
(`lag_and_correlation`). Aims: correlation 0.6 or more, lag within one frame (40 ms).

Both are also scored phonetically, on the aligned phones (`model.evaluate.lip_events`):
lips closed on /p b m/, open on open vowels, at rest in pauses (issue 17).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..core.audio import MOTION_FPS, load_audio
from ..core.head_model import HeadModel
from ..metrics import METRES_TO_MM, lip_opening
from ..speech.phones import Phone
from .lip_events import LipEvents, lip_events, lip_events_markdown
from . import save_figure

LIBRIVOX_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")
CORRELATION_AIM = 0.6
LAG_AIM_FRAMES = 1
DEFAULT_MAX_LAG = 5  # frames (200 ms): far beyond any plausible audio-visual offset


def mouth_opening(head: HeadModel, motion: np.ndarray) -> np.ndarray:
    """(T, C) motion on ``head`` -> (T,) mm: mean distance of the head's inner-lip pairs
    (region ``lip_pairs``), as `model.metrics.lip_opening` measures it for LODD."""
    return lip_opening(head.vertices(motion) * METRES_TO_MM, head.regions["lip_pairs"])


def rest_gap(head: HeadModel) -> float:
    """The inner-lip gap (mm, as `mouth_opening`) of ``head``'s neutral face."""
    return float(mouth_opening(head, head.neutral_motion(1))[0])


def _overlap(predicted: np.ndarray, reference: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """The frame pairs (p[t + lag], r[t]) for every t where both exist (equal lengths in)."""
    n = len(predicted)
    if lag >= 0:
        return predicted[lag:], reference[:n - lag]
    return predicted[:n + lag], reference[-lag:]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; nan where either side is constant."""
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def _lag_scan(pairs: Sequence[tuple[np.ndarray, np.ndarray]], max_lag: int) -> tuple[int, float, float]:
    """(lag, correlation at 0, best correlation) of the frames of all ``pairs`` pooled at each lag."""
    if max_lag < 0:
        raise ValueError(f"max_lag must be 0 or more, got {max_lag}")
    cut = []
    for predicted, reference in pairs:
        predicted, reference = np.asarray(predicted, np.float64), np.asarray(reference, np.float64)
        if predicted.ndim != 1 or reference.ndim != 1:
            raise ValueError(f"expected two (T,) signals, got shapes {predicted.shape} and {reference.shape}")
        frames = min(len(predicted), len(reference))  # generators may differ by a frame of rounding
        if frames < max_lag + 2:
            raise ValueError(f"{frames} frames are too few for lags up to {max_lag} (need {max_lag + 2})")
        predicted, reference = predicted[:frames], reference[:frames]
        if np.ptp(predicted) == 0 or np.ptp(reference) == 0:
            raise ValueError("a constant signal has no correlation (the mouth never moves)")
        cut.append((predicted, reference))
    if not cut:
        raise ValueError("no signals to correlate")
    lags = sorted(range(-max_lag, max_lag + 1), key=lambda k: (abs(k), k))  # ties go to the smallest shift
    scores = []
    for lag in lags:
        shifted = [_overlap(p, r, lag) for p, r in cut]
        scores.append(_pearson(np.concatenate([p for p, _ in shifted]), np.concatenate([r for _, r in shifted])))
    scores = np.array(scores)
    if np.isnan(scores[0]):
        raise ValueError("a constant signal has no correlation (the mouth never moves)")
    best = int(np.nanargmax(scores))  # first maximum in |lag| order
    return lags[best], float(scores[0]), float(scores[best])


def lag_and_correlation(predicted: np.ndarray, reference: np.ndarray,
                        max_lag: int = DEFAULT_MAX_LAG) -> tuple[int, float, float]:
    """(T,) model signal p and (T,) reference r -> (lag in frames, correlation at lag 0,
    correlation at that lag).

    c(k) = Pearson(p[t + k], r[t]) over the frames t where both exist, k in
    [-max_lag, max_lag]; lag = argmax_k c(k), the smallest |k| on a tie. Positive lag:
    the model is late (p[t] = r[t - k] gives lag k). Signals of different lengths are
    cut to the shorter. A constant signal (either side) raises ValueError: it has no
    correlation, and a mouth that never moves is a failure to report, not a number.
    """
    return _lag_scan([(predicted, reference)], max_lag)


def librivox_items(folder: str | os.PathLike = LIBRIVOX_DIR) -> list[tuple[Path, str]]:
    """Debian's LibriVox test recordings -> [(wav path, transcript)], in the file's order.

    ``transcription`` lines read ``<s> words </s> (file-id)``; the WAV is ``file-id.wav``.
    """
    folder = Path(folder)
    listing = folder / "transcription"
    if not listing.is_file():
        raise FileNotFoundError(f"{listing} not found: the LibriVox test recordings come with the Debian "
                                "package pocketsphinx-testdata (apt-get install pocketsphinx-testdata)")
    items = []
    for number, line in enumerate(listing.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        words, _, file_id = line.strip().rpartition(" (")
        if not file_id.endswith(")") or not words:
            raise ValueError(f"{listing}:{number}: expected '<s> words </s> (file-id)', got {line!r}")
        transcript = " ".join(w for w in words.split() if w not in ("<s>", "</s>"))
        wav = folder / f"{file_id[:-1]}.wav"
        if not wav.is_file():
            raise FileNotFoundError(f"{listing}:{number}: {wav} is missing")
        items.append((wav, transcript))
    if not items:
        raise ValueError(f"{listing} lists no recordings")
    return items


@dataclass(frozen=True)
class RecordingResult:
    """One recording: its mouth-opening curves (T,) mm at ``MOTION_FPS`` and how they agree."""

    name: str
    transcript: str
    seconds: float
    correlation: float  # at lag 0
    lag_frames: int  # positive: the model is late
    best_correlation: float  # at ``lag_frames``
    model_mm: np.ndarray = field(repr=False, compare=False)
    teacher_mm: np.ndarray = field(repr=False, compare=False)
    phones: tuple[Phone, ...] = field(default=(), repr=False, compare=False)  # forced alignment


@dataclass(frozen=True)
class RealSpeechResult:
    """Per-recording figures and two pooled ones: the mean over recordings, and the
    correlation (and lag) of all recordings' frames taken together."""

    recordings: tuple[RecordingResult, ...]
    max_lag: int
    mean_correlation: float
    mean_abs_lag_frames: float
    pooled_correlation: float  # all frames concatenated, lag 0
    pooled_lag_frames: int  # lag maximising the pooled correlation
    pooled_best_correlation: float
    model_events: LipEvents = LipEvents()  # all recordings together
    teacher_events: LipEvents = LipEvents()

    @property
    def meets_aims(self) -> bool:
        """Pooled correlation at least `CORRELATION_AIM` and pooled lag within `LAG_AIM_FRAMES`."""
        return self.pooled_correlation >= CORRELATION_AIM and abs(self.pooled_lag_frames) <= LAG_AIM_FRAMES

    def summary(self) -> dict:
        """The scalar figures, JSON-ready."""
        return {
            "recordings": [{"name": r.name, "seconds": r.seconds, "correlation": r.correlation,
                            "lag_frames": r.lag_frames, "best_correlation": r.best_correlation}
                           for r in self.recordings],
            "max_lag": self.max_lag, "mean_correlation": self.mean_correlation,
            "mean_abs_lag_frames": self.mean_abs_lag_frames, "pooled_correlation": self.pooled_correlation,
            "pooled_lag_frames": self.pooled_lag_frames, "pooled_best_correlation": self.pooled_best_correlation,
            "meets_aims": self.meets_aims,
            "lip_events": {"model": self.model_events.summary(), "teacher": self.teacher_events.summary()},
        }


def evaluate_real_speech(generate: Callable[[Path], np.ndarray], head: HeadModel,
                         items: Sequence[tuple[str | os.PathLike, str]], max_lag: int = DEFAULT_MAX_LAG,
                         seed: int = 0) -> RealSpeechResult:
    """Model against teacher on each (wav path, transcript) of ``items``.

    ``generate(path) -> (T, C)`` motion on ``head`` at 25 fps; the teacher animates the
    same audio from forced alignment with neutral controls and ``seed``. Lengths are cut
    to the shorter of the two.
    """
    from ..data.teacher import animate_recording

    if not items:
        raise ValueError("no recordings to evaluate")
    recordings, pairs = [], []
    rest = rest_gap(head)
    model_events = teacher_events = LipEvents()
    for path, transcript in items:
        path = Path(path)
        audio = load_audio(path)
        teacher_motion, phones = animate_recording(audio, transcript, head.channel_names, seed=seed)
        model_motion = np.asarray(generate(path))
        frames = min(len(model_motion), len(teacher_motion))
        model_mm = mouth_opening(head, model_motion[:frames])
        teacher_mm = mouth_opening(head, teacher_motion[:frames])
        lag, correlation, best = lag_and_correlation(model_mm, teacher_mm, max_lag)
        recordings.append(RecordingResult(path.stem, transcript, frames / MOTION_FPS, correlation, lag, best,
                                          model_mm, teacher_mm, phones))
        pairs.append((model_mm, teacher_mm))
        model_events += lip_events(model_mm, rest, phones, recording=path.stem)
        teacher_events += lip_events(teacher_mm, rest, phones, recording=path.stem)
    pooled_lag, pooled, pooled_best = _lag_scan(pairs, max_lag)
    return RealSpeechResult(
        recordings=tuple(recordings),
        max_lag=max_lag,
        mean_correlation=float(np.mean([r.correlation for r in recordings])),
        mean_abs_lag_frames=float(np.mean([abs(r.lag_frames) for r in recordings])),
        pooled_correlation=pooled,
        pooled_lag_frames=pooled_lag,
        pooled_best_correlation=pooled_best,
        model_events=model_events,
        teacher_events=teacher_events,
    )


def plot_real_speech(result: RealSpeechResult, path: str | os.PathLike, recordings: int = 2) -> Path:
    """PNG at ``path``: model and teacher mouth opening (mm) over time (s) for the first
    ``recordings`` recordings, one panel each, correlation and lag in the titles."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the report runs headless
    import matplotlib.pyplot as plt

    shown = result.recordings[:max(1, recordings)]
    figure, axes = plt.subplots(len(shown), 1, figsize=(9, 2.6 * len(shown)), squeeze=False)
    for axis, recording in zip(axes[:, 0], shown):
        seconds = np.arange(len(recording.model_mm)) / MOTION_FPS
        axis.plot(seconds, recording.teacher_mm, label="teacher (forced alignment)", color="0.35", lw=1.4)
        axis.plot(seconds, recording.model_mm, label="model", color="tab:red", lw=1.4)
        axis.set_title(f"{recording.name}: r = {recording.correlation:.2f}, best lag {recording.lag_frames:+d} "
                       f"frames (r = {recording.best_correlation:.2f})", fontsize=9)
        axis.set_ylabel("mouth opening (mm)")
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time (s)")
    axes[0, 0].legend(loc="upper right", fontsize=8)
    figure.suptitle(f"Real speech (LibriVox): pooled r = {result.pooled_correlation:.2f}, "
                    f"lag {result.pooled_lag_frames:+d} frames", fontsize=10)
    return save_figure(figure, path)


def real_speech_markdown(result: RealSpeechResult) -> str:
    """A markdown table per recording plus the pooled and mean lines, and whether the aims are met."""
    ms = 1000.0 / MOTION_FPS
    lines = [
        "| recording | duration (s) | correlation (lag 0) | best lag (frames) | correlation at best lag |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in result.recordings:
        lines.append(f"| {r.name} | {r.seconds:.2f} | {r.correlation:.3f} | {r.lag_frames:+d} | "
                     f"{r.best_correlation:.3f} |")
    total = sum(r.seconds for r in result.recordings)
    lines.append(f"| **pooled** (all frames) | {total:.2f} | **{result.pooled_correlation:.3f}** | "
                 f"**{result.pooled_lag_frames:+d}** | {result.pooled_best_correlation:.3f} |")
    lines.append(f"| mean over recordings | | {result.mean_correlation:.3f} | "
                 f"{result.mean_abs_lag_frames:.1f} (mean \\|lag\\|) | |")
    verdict = "met" if result.meets_aims else "not met"
    lines += [
        "",
        f"Lags searched in ±{result.max_lag} frames ({ms:.0f} ms each); a positive lag means the model is late. "
        f"Aims: correlation ≥ {CORRELATION_AIM} and |lag| ≤ {LAG_AIM_FRAMES} frame on the pooled figures: {verdict}.",
        "",
        "Phonetically, on the forced alignment of the same recordings:",
        "",
        lip_events_markdown([("model", result.model_events), ("teacher", result.teacher_events)]),
    ]
    return "\n".join(lines)
