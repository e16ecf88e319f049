"""The progress bar's estimate (captalk_addon.progress): moves through the stages that
report nothing, never goes back, follows the worker's fraction once it has one."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

# captalk_addon/__init__ imports bpy; the progress module itself does not: load it alone.
_PATH = Path(__file__).resolve().parents[1] / "captalk_addon" / "progress.py"
_spec = importlib.util.spec_from_file_location("captalk_progress", _PATH)
progress = sys.modules["captalk_progress"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(progress)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_bar_moves_while_the_back_end_starts_and_encodes_the_speech():
    clock = Clock()
    estimate = progress.ProgressEstimate(audio_seconds=7.5, clock=clock)
    shown = [estimate.fraction()]
    estimate.report(0.0, from_worker=False)  # "starting the back end"
    for _ in range(3):
        clock.now += 1.0
        shown.append(estimate.fraction())
    assert shown[0] == 0.0 and shown[1] < shown[2] < shown[3] < progress.STARTING_END
    estimate.report(0.0, from_worker=True)  # "encoding speech": the worker says 0 throughout
    at_encoding = estimate.fraction()
    assert at_encoding >= shown[-1]
    clock.now += 0.5
    assert at_encoding < estimate.fraction() < progress.ENCODING_END
    clock.now += 1000.0  # a stage that takes far longer than expected still never fills its span
    assert estimate.fraction() < progress.ENCODING_END


def test_the_worker_fraction_takes_over_and_the_bar_never_goes_back():
    clock = Clock()
    estimate = progress.ProgressEstimate(audio_seconds=60.0, clock=clock)
    estimate.report(0.0, from_worker=True)
    clock.now += 30.0
    crept = estimate.fraction()
    estimate.report(0.05, from_worker=True)  # "generating motion": below where the bar crept to
    assert estimate.fraction() == pytest.approx(max(crept, progress.ENCODING_END + 0.7 * 0.05))
    estimate.report(0.5, from_worker=True)
    assert estimate.fraction() == pytest.approx(progress.ENCODING_END + (1 - progress.ENCODING_END) * 0.5)
    estimate.report(0.2, from_worker=True)  # a late, lower report changes nothing
    assert estimate.fraction() == pytest.approx(progress.ENCODING_END + (1 - progress.ENCODING_END) * 0.5)
    estimate.report(1.0, from_worker=True)
    assert estimate.fraction() == pytest.approx(1.0)
