"""What the progress bar shows for one generation job.

The worker reports a fraction only once the model is loaded and, within a job, nothing
while it encodes the speech (one step): for a short clip the bar would sit at 0 through
"starting the back end" and "encoding speech" and then jump to the end. So the bar is
split into three stages, and a stage that reports nothing creeps towards its end with the
time it has been running (never reaching it, so the bar never goes back):

| stage                          | bar       | moves with                                   |
|--------------------------------|-----------|----------------------------------------------|
| starting the back end          | 0 - 0.10  | time (a worker start takes seconds)          |
| encoding speech (worker at 0)  | 0.10-0.30 | time, expected in proportion to the audio    |
| captions, windows (worker > 0) | 0.30-1.0  | the worker's own fraction                    |

No bpy: the clock is passed in, so it is testable anywhere.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

STARTING_END = 0.10  # where the bar is when the worker first answers
ENCODING_END = 0.30  # where it is when the worker's own fraction starts to move
STARTING_SECONDS = 5.0  # a typical worker start (interpreter, imports, model load) on a CPU
ENCODING_SECONDS = (0.5, 0.03)  # speech encoding: fixed part, and per second of audio
CREEP = 0.9  # a creeping stage covers at most this share of its span


@dataclass
class ProgressEstimate:
    """Progress of one job over ``audio_seconds`` of audio; feed it `report` calls, read
    `fraction`."""

    audio_seconds: float
    clock: Callable[[], float] = time.monotonic
    _stage: int = 0  # 0 starting the back end, 1 encoding speech, 2 the worker's own fraction
    _since: float = field(default=0.0)
    _worker: float = 0.0
    _shown: float = 0.0

    def __post_init__(self) -> None:
        self._since = self.clock()

    def report(self, fraction: float, from_worker: bool) -> None:
        """A progress event: ``from_worker`` once the worker runs the job (else the add-on
        is still starting or reaching it)."""
        stage = 0 if not from_worker else (1 if fraction <= 0 else 2)
        if stage > self._stage:
            self._stage, self._since = stage, self.clock()
        self._worker = max(self._worker, fraction)

    def fraction(self) -> float:
        """The bar's value now, in [0, 1], never lower than before."""
        elapsed = self.clock() - self._since
        if self._stage == 0:
            value = _creep(0.0, STARTING_END, elapsed, STARTING_SECONDS)
        elif self._stage == 1:
            expected = ENCODING_SECONDS[0] + ENCODING_SECONDS[1] * self.audio_seconds
            value = _creep(STARTING_END, ENCODING_END, elapsed, expected)
        else:
            value = ENCODING_END + (1.0 - ENCODING_END) * min(1.0, self._worker)
        self._shown = max(self._shown, value)
        return self._shown


def _creep(start: float, end: float, elapsed: float, expected: float) -> float:
    """From ``start`` towards ``end``: 63 % of the way (times CREEP) after ``expected`` seconds."""
    return start + (end - start) * CREEP * (1.0 - math.exp(-max(0.0, elapsed) / max(expected, 1e-3)))
