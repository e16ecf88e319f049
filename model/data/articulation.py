"""Lip and jaw articulation from timed phones, with coarticulation.

Each phone sets targets for a few articulatory parameters (`PARAMETERS`), each with a
dominance: how strongly the phone holds that parameter against its neighbours. Tracks
are the dominance-weighted mean of the targets (Cohen & Massaro's model), with
dominance decaying exponentially before a phone's centre (anticipation, slower) and
after it (carry-over, faster). Consonants hold lip rounding weakly, so the rounding of
"oo" in "soon" already shows on the "s" - the coarticulation animators look for.

Bilabial closure is not averaged: it is a plateau that holds the lips shut for the
whole /p b m/ (at least one motion frame) and releases over 45 ms, because averaged
closure never quite closes and a lip-sync that does not close on "b" looks wrong.

Calibrated on real faces (the GRID calibration clips of `model.evaluate.real_faces`, never
the held-out ones): speakers open the jaw 0.3-0.6 s before they start to speak, preparing
the first syllable (and breathing in), so the phones of an utterance's first syllable
(starting within `ONSET_REACH_S` of a pause's end) are anticipated over
`ONSET_ANTICIPATION_S`, fading out `PREPARATION_S` before them; consonants hold the jaw
twice as firmly as first written (`CONSONANT_JAW_DOMINANCE_GAIN`: the jaw closes between
vowels), and vowel jaw heights are compressed (`VOWEL_JAW_EXPONENT`: close vowels open the
jaw more than the textbook order suggests). Mean r of jawOpen against the human's on the
calibration clips went from 0.56 to 0.71 (`benchmarks/teacher_calibration.py`).
"""
from __future__ import annotations

import numpy as np

from ..core.audio import MOTION_FPS
from ..speech.phones import PHONES, SILENCE, VOWELS, Phone

PARAMETERS = ("jaw", "round", "funnel", "spread", "tuck", "tongue", "lower")
BILABIALS = ("p", "b", "m")
OPEN_VOWELS = ("aa", "ae", "ah", "ao", "aw", "ay")

ANTICIPATION_S = 0.07
CARRY_OVER_S = 0.05
CLOSURE_MIN_HALF_S = 0.025  # a closure lasts at least ~one 25 fps frame
CLOSURE_RELEASE_S = 0.045
CONTEXT_S = 0.6  # phones further than this from a frame do not affect it
ONSET_ANTICIPATION_S = 0.5
ONSET_REACH_S = 0.15
PREPARATION_S = 0.8  # the onset's anticipation ends this long before the phone's start
CONSONANT_JAW_DOMINANCE_GAIN = 2.0
VOWEL_JAW_EXPONENT = 0.5

# phone -> {parameter: (target, dominance)}; parameters not listed use the class default
_VOWEL_TARGETS = {
    "aa": {"jaw": 0.95, "lower": 0.3},
    "ae": {"jaw": 0.8, "spread": 0.35, "lower": 0.3},
    "ah": {"jaw": 0.65, "lower": 0.2},
    "ao": {"jaw": 0.75, "funnel": 0.35, "lower": 0.2},
    "aw": {"jaw": 0.8, "funnel": 0.25, "round": 0.2, "lower": 0.25},
    "ay": {"jaw": 0.8, "spread": 0.15, "lower": 0.25},
    "eh": {"jaw": 0.55, "spread": 0.35, "lower": 0.15},
    "er": {"jaw": 0.3, "funnel": 0.45},
    "ey": {"jaw": 0.45, "spread": 0.45},
    "ih": {"jaw": 0.3, "spread": 0.4},
    "iy": {"jaw": 0.2, "spread": 0.6},
    "ow": {"jaw": 0.5, "round": 0.55, "funnel": 0.4},
    "oy": {"jaw": 0.55, "round": 0.4, "funnel": 0.3},
    "uh": {"jaw": 0.3, "round": 0.45, "funnel": 0.25},
    "uw": {"jaw": 0.2, "round": 0.85},
}
_CONSONANT_TARGETS = {
    "p": {"jaw": (0.1, 0.9)}, "b": {"jaw": (0.1, 0.9)}, "m": {"jaw": (0.1, 0.9)},
    "f": {"jaw": (0.1, 0.9), "tuck": (1.0, 1.0)}, "v": {"jaw": (0.1, 0.9), "tuck": (1.0, 1.0)},
    "th": {"jaw": (0.2, 0.7), "tongue": (1.0, 1.0)}, "dh": {"jaw": (0.2, 0.7), "tongue": (1.0, 1.0)},
    "s": {"jaw": (0.08, 0.9), "spread": (0.3, 0.5)}, "z": {"jaw": (0.08, 0.9), "spread": (0.3, 0.5)},
    "sh": {"jaw": (0.15, 0.8), "funnel": (0.7, 0.8), "round": (0.3, 0.5)},
    "zh": {"jaw": (0.15, 0.8), "funnel": (0.7, 0.8), "round": (0.3, 0.5)},
    "ch": {"jaw": (0.15, 0.8), "funnel": (0.6, 0.8), "round": (0.3, 0.5)},
    "jh": {"jaw": (0.15, 0.8), "funnel": (0.6, 0.8), "round": (0.3, 0.5)},
    "w": {"jaw": (0.15, 0.6), "round": (0.9, 0.9)},
    "r": {"jaw": (0.2, 0.4), "funnel": (0.35, 0.6), "round": (0.2, 0.4)},
    "y": {"jaw": (0.15, 0.5), "spread": (0.4, 0.5)},
    "t": {"jaw": (0.15, 0.6)}, "d": {"jaw": (0.15, 0.6)}, "n": {"jaw": (0.15, 0.5)},
    "l": {"jaw": (0.25, 0.4)}, "k": {"jaw": (0.25, 0.3)}, "g": {"jaw": (0.25, 0.3)},
    "ng": {"jaw": (0.2, 0.3)}, "hh": {"jaw": (0.35, 0.1)},
}
VOWEL_DOMINANCE = 1.0
CONSONANT_DEFAULT_DOMINANCE = 0.08  # weak: neighbours' rounding and opening show through
SILENCE_DOMINANCE = 0.5


def phone_targets(label: str) -> tuple[np.ndarray, np.ndarray]:
    """Canonical phone -> (targets (A,), dominances (A,)) over `PARAMETERS`."""
    if label not in PHONES:
        raise ValueError(f"unknown phone '{label}'")
    targets = np.zeros(len(PARAMETERS))
    if label == SILENCE:
        return targets, np.full(len(PARAMETERS), SILENCE_DOMINANCE)
    if label in VOWELS:
        for name, value in _VOWEL_TARGETS[label].items():
            targets[PARAMETERS.index(name)] = value ** VOWEL_JAW_EXPONENT if name == "jaw" else value
        return targets, np.full(len(PARAMETERS), VOWEL_DOMINANCE)
    dominance = np.full(len(PARAMETERS), CONSONANT_DEFAULT_DOMINANCE)
    for name, (value, strength) in _CONSONANT_TARGETS[label].items():
        targets[PARAMETERS.index(name)] = value
        dominance[PARAMETERS.index(name)] = strength * (CONSONANT_JAW_DOMINANCE_GAIN if name == "jaw" else 1.0)
    return targets, dominance


_TABLE = {label: phone_targets(label) for label in PHONES}


def utterance_onsets(phones: tuple[Phone, ...]) -> np.ndarray:
    """(P,) bool: the phones of an utterance's first syllable, those starting within
    `ONSET_REACH_S` after a pause ends (or after the recording starts)."""
    onset, pause_end = np.zeros(len(phones), bool), 0.0
    for index, phone in enumerate(phones):
        if phone.label == SILENCE:
            pause_end = phone.end
        else:
            onset[index] = phone.start - pause_end < ONSET_REACH_S
    return onset


def articulate(phones: tuple[Phone, ...], num_frames: int, fps: float = MOTION_FPS,
               rate: float = 1.0, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Timed phones -> (tracks (T, A) over `PARAMETERS`, closure (T,) in [0, 1]).

    ``rate`` (speaking-rate factor, > 1 faster) shortens coarticulation spans: fast
    speakers undershoot targets more, as real ones do.
    """
    times = np.arange(num_frames) / fps
    centres = np.array([p.centre for p in phones])
    starts = np.array([p.start for p in phones])
    ends = np.array([p.end for p in phones])
    targets = np.stack([_TABLE[p.label][0] for p in phones])
    dominance = np.stack([_TABLE[p.label][1] for p in phones])
    half = np.maximum(0.5 * (ends - starts), 1e-3)
    onset = utterance_onsets(phones)
    before = np.maximum(np.where(onset, ONSET_ANTICIPATION_S, ANTICIPATION_S) / rate, half)
    after = np.maximum(CARRY_OVER_S / rate, half)
    bilabial = np.array([p.label in BILABIALS for p in phones])

    tracks = np.zeros((num_frames, len(PARAMETERS)))
    closure = np.zeros(num_frames)
    for first in range(0, num_frames, chunk):
        t = times[first:first + chunk]
        near = np.nonzero((ends >= t[0] - CONTEXT_S) & (starts <= t[-1] + CONTEXT_S))[0]
        if near.size == 0:
            continue
        delta = t[:, None] - centres[near][None, :]  # (t, p): > 0 after the centre
        # inside a phone its dominance is full; outside it decays from the phone's edge
        outside = np.maximum(np.abs(delta) - half[near][None, :], 0.0)
        span = np.where(delta < 0, before[near][None, :], after[near][None, :])
        lead = starts[near][None, :] - t[:, None]  # > 0 before the phone starts
        preparing = np.clip((PREPARATION_S - lead) / (0.5 * PREPARATION_S), 0.0, 1.0)
        reach = np.where(onset[near][None, :], 0.5 * (1 - np.cos(np.pi * preparing)), 1.0)
        weight = (np.exp(-outside / span) * reach)[:, :, None] * dominance[near][None, :, :]  # (t, p, A)
        tracks[first:first + chunk] = (weight * targets[near][None]).sum(1) / np.maximum(weight.sum(1), 1e-9)
        lips = near[bilabial[near]]
        if lips.size:
            plateau = np.maximum(half[lips], CLOSURE_MIN_HALF_S)[None, :]
            beyond = np.abs(t[:, None] - centres[lips][None, :]) - plateau
            release = 0.5 * (1 + np.cos(np.pi * np.clip(beyond / CLOSURE_RELEASE_S, 0.0, 1.0)))
            closure[first:first + chunk] = np.where(beyond <= 0, 1.0, release).max(axis=1)
    return tracks.astype(np.float32), closure.astype(np.float32)
