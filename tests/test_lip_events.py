"""Lip events of real speech (`model.evaluate.lip_events`) on constructed gap curves with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from model.evaluate.lip_events import LipEvents, lip_events, lip_events_markdown
from model.speech.phones import Phone

REST = 2.0  # mm: the face's rest gap
FPS = 25.0


def _gap(frames: int, value: float) -> np.ndarray:
    return np.full(frames, value)


def test_a_bilabial_closes_when_one_frame_within_a_frame_of_it_touches():
    gap = _gap(50, REST + 5.0)
    m = Phone("m", 0.40, 0.44)  # frames 10 and 11 lie inside; 9 and 12 within a frame of it
    gap[12] = REST + 0.9  # a frame after the phone's end: still counts (±1 frame)
    events = lip_events(gap, REST, [m], FPS)
    assert (events.closures, events.closed, events.closure_share) == (1, 1, 1.0)
    gap[12] = REST + 1.1  # just over 1 mm: missed, and the miss says by how much
    events = lip_events(gap, REST, [m], FPS, recording="clip")
    assert (events.closures, events.closed) == (1, 0)
    (miss,) = events.missed_closures
    assert (miss.label, miss.time, miss.recording) == ("m", 0.40, "clip") and miss.gap_mm == pytest.approx(1.1)
    gap[12], gap[13] = REST + 5.0, REST  # two frames after the end: too late
    assert lip_events(gap, REST, [m], FPS).closed == 0


def test_short_bilabials_and_short_vowels_are_not_counted():
    gap = _gap(50, REST + 5.0)
    events = lip_events(gap, REST, [Phone("p", 0.40, 0.42), Phone("aa", 0.5, 0.57), Phone("n", 0.6, 0.9)], FPS)
    assert (events.closures, events.vowels, events.pause_frames) == (0, 0, 0)


def test_an_open_vowel_needs_three_millimetres_on_a_frame_inside_it():
    gap = _gap(50, REST)
    vowel = Phone("aa", 0.40, 0.52)  # frames 10, 11, 12
    gap[13] = REST + 4.0  # the frame at the vowel's end does not belong to it
    assert lip_events(gap, REST, [vowel], FPS).opened == 0
    gap[11] = REST + 3.0
    events = lip_events(gap, REST, [vowel, Phone("iy", 0.6, 0.8)], FPS)  # iy is not an open vowel
    assert (events.vowels, events.opened, events.open_share) == (1, 1, 1.0)


def test_pause_frames_are_counted_inside_the_margins():
    gap = _gap(100, REST)
    pause = Phone("pau", 1.0, 1.6)  # inner frames: t in [1.1, 1.5] -> 28..37 (10 frames)
    gap[28:33] = REST + 2.0  # half of them open
    gap[20:28] = REST + 9.0  # inside the margin: not counted
    events = lip_events(gap, REST, [pause, Phone("pau", 2.0, 2.28)], FPS)  # the second is too short
    assert (events.pause_frames, events.rested, events.pause_share) == (10, 5, 0.5)


def test_events_add_up_and_the_aims_need_every_share():
    gap = _gap(60, REST)
    gap[20:24] = REST + 6.0
    phones = [Phone("pau", 0.0, 0.6), Phone("b", 0.6, 0.68), Phone("ae", 0.8, 0.96), Phone("pau", 1.0, 2.4)]
    one = lip_events(gap, REST, phones, FPS)
    assert one.meets_aims and one.closure_share == one.open_share == one.pause_share == 1.0
    two = one + lip_events(np.full(60, REST + 2.0), REST, phones, FPS)
    assert (two.closures, two.closed, two.vowels, two.opened) == (2, 1, 2, 1)
    assert two.pause_share == pytest.approx(0.5) and not two.meets_aims
    assert np.isnan(LipEvents().closure_share)
    table = lip_events_markdown([("model", two)])
    assert "50% (1/2)" in table and "missed closures: b at 0.60 s (+2.0 mm)" in table


def test_a_gap_curve_must_be_one_dimensional():
    with pytest.raises(ValueError, match=r"\(T,\)"):
        lip_events(np.zeros((3, 2)), REST, [], FPS)
