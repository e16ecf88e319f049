"""Audio in and out for the back end: one loader for every caller (data engine, encoders,
worker), so every path accepts the same inputs and refuses the same bad ones.

Everything inside CapTalk is 16 kHz mono float32 in [-1, 1] (`SAMPLE_RATE`); files of any
rate, channel count and sample format that libsndfile reads are converted on load.
"""
from __future__ import annotations

import io
import os
from math import gcd
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .errors import BadInput

SAMPLE_RATE = 16000
MOTION_FPS = 25.0
DEFAULT_MAX_SECONDS = 30 * 60.0


class AudioError(BadInput):
    """Audio that cannot be used; the message says why and what to do."""


def resample(samples: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """(N,) float -> (M,) float32, M = ceil(N * rate_out / rate_in); polyphase, anti-aliased."""
    samples = np.asarray(samples, dtype=np.float32)
    if rate_in == rate_out or samples.size == 0:
        return samples
    from scipy.signal import resample_poly

    divisor = gcd(int(rate_in), int(rate_out))
    return resample_poly(samples, rate_out // divisor, rate_in // divisor).astype(np.float32)


def to_mono_16k(samples: np.ndarray, rate: int, source: str = "audio") -> np.ndarray:
    """(N,) or (N, channels) at ``rate`` -> (M,) float32 at 16 kHz, checked for NaN/Inf."""
    samples = np.asarray(samples)
    if samples.dtype.kind in "iu":
        # integer PCM: scale to [-1, 1] by the format's full range
        info = np.iinfo(samples.dtype)
        samples = (samples.astype(np.float32) - (info.max + info.min + 1) / 2) / (info.max + 1)
    samples = samples.astype(np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if samples.ndim != 1:
        raise AudioError(f"{source}: expected (samples,) or (samples, channels), got shape {samples.shape}")
    if samples.size == 0:
        raise AudioError(f"{source}: contains no samples")
    if not np.isfinite(samples).all():
        raise AudioError(f"{source}: contains NaN or infinite samples; re-export it from your editor")
    return resample(samples, int(rate), SAMPLE_RATE)


def load_audio(source: str | os.PathLike | bytes, max_seconds: float = DEFAULT_MAX_SECONDS) -> np.ndarray:
    """A file path or the file's bytes -> (N,) float32 mono at 16 kHz.

    Raises `AudioError` with a clear message for unreadable, empty, non-finite or too
    long audio (``max_seconds``; the check happens before decoding the whole file).
    """
    import soundfile

    name = "audio bytes" if isinstance(source, (bytes, bytearray)) else f"'{source}'"
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        with soundfile.SoundFile(handle) as stream:
            rate, frames = stream.samplerate, stream.frames
            if frames / rate > max_seconds:
                raise AudioError(
                    f"{name}: {frames / rate / 60:.1f} min is longer than the limit of "
                    f"{max_seconds / 60:.1f} min; split it or raise the limit"
                )
            samples = stream.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (RuntimeError, OSError, soundfile.LibsndfileError) as exc:
        raise AudioError(f"{name}: not a readable audio file ({exc})") from None
    return to_mono_16k(samples, rate, name)


def crop_audio(samples: np.ndarray, start: float = 0.0, end: float | None = None) -> np.ndarray:
    """(N,) 16 kHz samples -> those from ``start`` to ``end`` seconds (None: the end);
    `AudioError` when less than one motion frame is left."""
    first = int(round(start * SAMPLE_RATE))
    last = samples.size if end is None else min(samples.size, int(round(end * SAMPLE_RATE)))
    if last - first < SAMPLE_RATE / MOTION_FPS:
        raise AudioError(f"the audio from {start:g} s to {'its end' if end is None else f'{end:g} s'} holds less "
                         f"than one motion frame (the audio is {samples.size / SAMPLE_RATE:.2f} s long)")
    return samples[first:last]


def save_audio(path: str | os.PathLike, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """Write (N,) float samples as 16-bit PCM WAV, atomically (a reader never sees half a file)."""
    import soundfile

    clipped = np.clip(samples, -1.0, 1.0)
    return atomic_write(path, lambda name: soundfile.write(name, clipped, rate, subtype="PCM_16", format="WAV"),
                        suffix=".wav")


def frame_count(num_samples: int, rate: int = SAMPLE_RATE, fps: float = MOTION_FPS) -> int:
    """Motion frames for audio of ``num_samples``: frame i shows time i / fps."""
    return max(1, int(round(num_samples / rate * fps)))
