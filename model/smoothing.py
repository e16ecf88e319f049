"""Savitzky-Golay smoothing of generated motion, streamed window by window (numpy only).

Order 2 over 5 frames for expression channels and jaw / eye rotations, 9 frames for the
other joint rotations (head pose), as ARTalk. `StreamingSmoother` gives bit-identical
frames however the motion arrives in pieces, so `model.generate`'s streamed and one-shot
results agree; it smooths one caption section at a time (`end_section`).

A section's first frames are smoothed with the previous section's last raw frames as
left-hand neighbours, not by the edge rule: the caption cross-fade makes the raw motion
continuous through a change, while a polynomial fitted to the new section's first 9
frames alone overshoots at its start (a 1 degree head-pitch step, 2.5 mm at the head's
surface, at the 1.3 s switch of the evaluation report).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .core.head_model import ROTATION_AXES


def smoothing_windows(channels: Sequence[str]) -> np.ndarray:
    """(C,) Savitzky-Golay window per channel: 9 for head-pose rotations (joints other than
    the jaw and eyes), 5 for everything else (expressions, jaw, eyes)."""
    windows = []
    for name in channels:
        joint, _, axis = name.rpartition(".")
        joint = joint.lower()
        head_pose = axis in ROTATION_AXES and joint and "jaw" not in joint and not joint.startswith("eye")
        windows.append(9 if head_pose else 5)
    return np.asarray(windows)


def _savgol_rows(length: int, order: int = 2) -> np.ndarray:
    """(length, length): row i gives the order-``order`` least-squares polynomial through
    ``length`` samples evaluated at sample i (Savitzky-Golay; the middle row is the filter,
    the others the 'interp' edge rule)."""
    x = np.arange(length, dtype=np.float64) - (length - 1) / 2
    vander = np.vander(x, order + 1, increasing=True)
    return (vander @ np.linalg.pinv(vander)).astype(np.float32)


class StreamingSmoother:
    """Savitzky-Golay smoothing of frames arriving in pieces, one caption section at a time.

    ``push`` returns the frames whose neighbourhood is complete (all but the last 4 of
    the section so far), ``end_section`` the rest (the end of a section uses the edge
    rule, or the look-ahead it is given; the start of a later section looks back at the
    previous section's raw frames). Each output frame is computed from the same inputs in the same order however
    the section was split, so streamed and one-shot results are bit-identical. A section
    shorter than a channel's window leaves that channel unsmoothed.
    """

    def __init__(self, windows: np.ndarray):
        self.groups = [(int(w), np.flatnonzero(windows == w)) for w in np.unique(windows)]
        self.delay = max(int(w) // 2 for w in np.unique(windows))
        self.rows = {int(w): _savgol_rows(int(w)) for w in np.unique(windows)}
        self._reset(None)

    def _reset(self, history: np.ndarray | None) -> None:
        """A new section; history: (takes, h, C) raw frames just before it, or None."""
        self.buffer = history  # (takes, n, C) raw frames from section index ``base`` (history: negative)
        self.history = 0 if history is None else history.shape[1]
        self.base = -self.history
        self.emitted = 0  # section frames already returned
        self.length = 0  # section frames received

    def push(self, frames: np.ndarray) -> np.ndarray:
        """(takes, n, C) raw frames -> (takes, m, C) final smoothed frames (m may be 0)."""
        self.buffer = frames if self.buffer is None else np.concatenate([self.buffer, frames], axis=1)
        self.length += frames.shape[1]
        if self.length < 2 * self.delay + 1:
            return frames[:, :0]
        return self._emit(self.length - self.delay, finished=False)

    def end_section(self, lookahead: np.ndarray | None = None) -> np.ndarray:
        """The section's remaining frames; the next push starts a new section.

        lookahead: (takes, m, C) frames that would have followed had the section gone on
        (at a caption change: the cut window's continuation under the old captions). The
        last frames are smoothed with them as right-hand neighbours, as in a run without
        the change; frames they do not reach take the edge rule.
        """
        stop = self.length
        history = None if self.buffer is None else self.buffer[:, max(0, stop - self.base - self.delay):stop - self.base]
        if lookahead is not None and lookahead.shape[1]:
            self.buffer = np.concatenate([self.buffer, lookahead], axis=1)
            self.length += lookahead.shape[1]
        out = self._emit(stop, finished=True)
        self._reset(history if history is not None and history.shape[1] else None)
        return out

    def _emit(self, stop: int, finished: bool) -> np.ndarray:
        """Frames [emitted, stop) of the section; ``finished``: the buffer ends at ``length``."""
        start, x = self.emitted, self.buffer
        out = np.array(x[:, start - self.base:stop - self.base], copy=True)
        for window, channels in self.groups:
            half = window // 2
            reach = min(half, self.history)  # frames before the section this channel may use
            if self.length + reach < window:  # only possible when finished: too short to smooth
                continue
            rows = self.rows[window]
            for i in range(start, stop):
                if i < half - reach:
                    weights, first = rows[i + reach], -reach
                elif finished and i >= self.length - half:
                    weights, first = rows[window - (self.length - i)], self.length - window
                else:
                    continue
                out[:, i - start, channels] = self._apply(weights, x, first - self.base, channels, 1)[:, 0]
            middle = range(max(start, half - reach), min(stop, self.length - half if finished else stop))
            if len(middle):
                out[:, middle.start - start:middle.stop - start, channels] = self._apply(
                    rows[half], x, middle.start - half - self.base, channels, len(middle))
        self.emitted = stop
        keep = max(-self.history, stop - 2 * self.delay)  # frames that later outputs may still need
        if keep > self.base:
            self.buffer, self.base = self.buffer[:, keep - self.base:], keep
        return out

    @staticmethod
    def _apply(weights: np.ndarray, x: np.ndarray, first: int, channels: np.ndarray, count: int) -> np.ndarray:
        """(takes, count, len(channels)): output n = sum_j weights[j] * x[first + n + j],
        accumulated elementwise in a fixed order, so a frame's value does not depend on
        how many frames are computed with it."""
        total = None
        for j, weight in enumerate(weights):
            term = weight * x[:, first + j:first + j + count][:, :, channels]
            total = term if total is None else total + term
        return total
