"""Prosody tracks from audio at the motion frame rate: loudness, pitch and accents.

The teacher animator uses them the way a speaker's face does: the jaw opens wider on
loud syllables, the head nods and the brows rise on pitch-and-energy accents.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.audio import MOTION_FPS, SAMPLE_RATE
from ..speech.phones import SILENCE, VOWELS, Phone

WINDOW_S = 0.04  # one motion frame
PITCH_RANGE_HZ = (70.0, 400.0)
VOICING_THRESHOLD = 0.45  # normalised autocorrelation peak


@dataclass(frozen=True)
class Prosody:
    """Per motion frame (T,): ``loudness`` in [0, 1.5] (0 = quiet, 1 = the clip's loud
    speech), ``pitch`` in semitones relative to the clip's median voiced pitch (0 where
    unvoiced), ``voiced`` flag."""

    loudness: np.ndarray
    pitch: np.ndarray
    voiced: np.ndarray


@dataclass(frozen=True)
class Accent:
    """A prominent syllable: its vowel's centre ``time`` (s) and ``strength`` in (0, 1]."""

    time: float
    strength: float


def _frames(audio: np.ndarray, num_frames: int, fps: float) -> np.ndarray:
    """(N,) -> (T, W): one window of `WINDOW_S` centred on each frame time i / fps."""
    width = int(WINDOW_S * SAMPLE_RATE)
    centres = (np.arange(num_frames) / fps * SAMPLE_RATE).astype(int)
    padded = np.pad(audio, (width, width))
    index = centres[:, None] + width // 2 + np.arange(width)[None, :]
    return padded[index]


def analyse(audio: np.ndarray, num_frames: int, fps: float = MOTION_FPS) -> Prosody:
    """(N,) float32 16 kHz -> `Prosody` with T = ``num_frames`` values per track."""
    frames = _frames(np.asarray(audio, dtype=np.float32), num_frames, fps)
    rms_db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-10)
    speech = rms_db > rms_db.max() - 40
    floor, loud = (np.percentile(rms_db[speech], [10, 95]) if speech.any() else (rms_db.min(), rms_db.max()))
    loudness = np.clip((rms_db - floor) / max(loud - floor, 1e-3), 0.0, 1.5)

    windowed = (frames - frames.mean(axis=1, keepdims=True)) * np.hanning(frames.shape[1])
    spectrum = np.fft.rfft(windowed, n=2 * frames.shape[1], axis=1)
    autocorrelation = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, : frames.shape[1]]
    lo, hi = int(SAMPLE_RATE / PITCH_RANGE_HZ[1]), int(SAMPLE_RATE / PITCH_RANGE_HZ[0])
    lags = np.argmax(autocorrelation[:, lo:hi], axis=1) + lo
    peak = autocorrelation[np.arange(num_frames), lags] / np.maximum(autocorrelation[:, 0], 1e-12)
    voiced = (peak > VOICING_THRESHOLD) & speech
    semitones = 12 * np.log2(SAMPLE_RATE / lags)
    pitch = np.where(voiced, semitones - (np.median(semitones[voiced]) if voiced.any() else 0.0), 0.0)
    return Prosody(loudness=loudness.astype(np.float32), pitch=pitch.astype(np.float32), voiced=voiced)


def find_accents(phones: tuple[Phone, ...], prosody: Prosody, fps: float = MOTION_FPS,
                 share: float = 0.35, min_gap: float = 0.45) -> list[Accent]:
    """The most prominent vowels: score = z(loudness) + z(pitch) + z(duration) per vowel;
    the top ``share`` of vowels, at least ``min_gap`` seconds apart, strongest first kept."""
    vowels = [p for p in phones if p.label in VOWELS]
    if not vowels:
        return []
    index = np.clip((np.array([p.centre for p in vowels]) * fps).round().astype(int), 0, len(prosody.pitch) - 1)
    features = np.stack([prosody.loudness[index], prosody.pitch[index], [p.end - p.start for p in vowels]])
    z = (features - features.mean(axis=1, keepdims=True)) / (features.std(axis=1, keepdims=True) + 1e-6)
    score = z.sum(axis=0)
    chosen: list[Accent] = []
    limit = max(1, int(round(share * len(vowels))))
    top = score.max() if score.max() > score.min() else score.min() + 1
    for k in np.argsort(-score):
        if len(chosen) >= limit:
            break
        if all(abs(vowels[k].centre - a.time) >= min_gap for a in chosen):
            strength = float(np.clip(0.4 + 0.6 * (score[k] - score.min()) / (top - score.min()), 0.2, 1.0))
            chosen.append(Accent(time=vowels[k].centre, strength=strength))
    return sorted(chosen, key=lambda a: a.time)


def speech_activity(phones: tuple[Phone, ...], num_frames: int, fps: float = MOTION_FPS) -> np.ndarray:
    """(T,) float in [0, 1]: 1 while a non-silence phone is spoken, eased over 0.2 s."""
    times = np.arange(num_frames) / fps
    active = np.zeros(num_frames)
    for phone in phones:
        if phone.label != SILENCE:
            active[(times >= phone.start) & (times < phone.end)] = 1.0
    kernel = np.hanning(int(0.2 * fps) * 2 + 1)
    return np.clip(np.convolve(active, kernel / kernel.sum(), mode="same") * 1.5, 0.0, 1.0)
