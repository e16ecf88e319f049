"""Audio in and out for the back end: one loader for every caller (data engine, encoders,
worker), so every path accepts the same inputs and refuses the same bad ones.

Everything inside CapTalk is 16 kHz mono float32 in [-1, 1] (`SAMPLE_RATE`); files of any
rate, channel count and sample format that libsndfile reads are converted on load.
"""
from __future__ import annotations

import io
import math
import os
import stat
from math import gcd
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .errors import BadInput

SAMPLE_RATE = 16000
MOTION_FPS = 25.0
DEFAULT_MAX_SECONDS = 30 * 60.0


MIN_RATE, MAX_RATE = 4000, 384000  # sample rates read (Hz): old voice recordings up to DXD studio masters
_BLOCK_BYTES = 4 * 2**20  # decoded at a time: memory follows the 16 kHz mono result, not the file's format
_STEP_SAMPLES = 2**18  # input samples resampled per call (rounded to the ratio's denominator)


class AudioError(BadInput):
    """Audio that cannot be used; the message says why and what to do."""


def _check_rate(rate, source: str = "audio") -> int:
    """The rate as an int, refused outside [MIN_RATE, MAX_RATE]: an odd rate such as
    9,999,991 Hz would make the resampler's filter about 20 x rate taps long."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"{source}: its sample rate is {rate} Hz; CapTalk reads {MIN_RATE} to {MAX_RATE} Hz "
                         "(re-export it at 16, 44.1 or 48 kHz)")
    return int(rate)


class Resampler:
    """Polyphase resampling (scipy's `resample_poly`, anti-aliased) of audio arriving in
    pieces: `push` (k,) float32 samples, then `finish`; the pieces returned, concatenated,
    equal ``resample_poly`` of the whole signal (same taps in the same order), while only
    one step of input plus the filter's reach is held at a time."""

    def __init__(self, rate_in: int, rate_out: int = SAMPLE_RATE):
        divisor = gcd(int(rate_in), int(rate_out))
        self.up, self.down = int(rate_out) // divisor, int(rate_in) // divisor
        self.identity = self.up == self.down
        half_len = 10 * max(self.up, self.down)  # resample_poly's own filter design
        self.taps = None
        if not self.identity:  # scipy only when resampling: Blender's Python has none
            from scipy.signal import firwin

            self.taps = firwin(2 * half_len + 1, 1.0 / max(self.up, self.down), window=("kaiser", 5.0)).astype(np.float32)
        # input samples the filter reaches either side of an output, rounded to whole ratio periods
        self.pad = -(-(half_len // self.up + 2) // self.down) * self.down
        self.step = max(1, _STEP_SAMPLES // self.down) * self.down
        self._buffer = np.zeros(0, np.float32)  # input from sample ``self._base`` on
        self._base = 0
        self._done = 0  # input samples whose outputs were returned (a multiple of ``down``)

    def push(self, samples: np.ndarray) -> list[np.ndarray]:
        """(k,) float32 input -> the output pieces that are now complete (maybe none)."""
        if self.identity:
            return [samples]
        self._buffer = np.concatenate([self._buffer, samples])
        out = []
        while self._base + self._buffer.size >= self._done + self.step + self.pad:
            out.append(self._emit(self._done + self.step + self.pad, self.step))
        return out

    def finish(self) -> list[np.ndarray]:
        """The rest of the output; ceil(N * up / down) samples in all for N input samples."""
        if self.identity:
            return []
        return [self._emit(self._base + self._buffer.size, None)]

    def _emit(self, stop: int, count: int | None) -> np.ndarray:
        """Outputs of input [done, done + count) (None: to the end), from input
        [done - pad, stop); then forget the input no later output reaches."""
        from scipy.signal import resample_poly

        first = max(0, self._done - self.pad)
        segment = self._buffer[first - self._base:stop - self._base]
        skip = (self._done - first) * self.up // self.down
        if segment.size == 0:
            return np.zeros(0, np.float32)
        out = resample_poly(segment, self.up, self.down, window=self.taps)
        out = out[skip:] if count is None else out[skip:skip + count * self.up // self.down]
        self._done += count or 0
        keep = max(self._base, self._done - self.pad)
        self._buffer, self._base = self._buffer[keep - self._base:], keep
        return out.astype(np.float32, copy=False)


def resample(samples: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """(N,) float -> (M,) float32, M = ceil(N * rate_out / rate_in); polyphase, anti-aliased."""
    samples = np.asarray(samples, dtype=np.float32)
    if rate_in == rate_out or samples.size == 0:
        return samples
    resampler = Resampler(_check_rate(rate_in), _check_rate(rate_out))
    return np.concatenate(resampler.push(samples) + resampler.finish())


def all_finite(samples: np.ndarray, block: int = 1 << 20) -> bool:
    """Whether every sample is finite, looked at in blocks (``np.isfinite`` of a whole
    30-minute clip would be a 29 MB temporary)."""
    return all(np.isfinite(samples[start:start + block]).all() for start in range(0, samples.size, block))


def to_mono_16k(samples: np.ndarray, rate: int, source: str = "audio") -> np.ndarray:
    """(N,) or (N, channels) at ``rate`` -> (M,) float32 at 16 kHz, checked for NaN/Inf."""
    samples = np.asarray(samples)
    if samples.dtype.kind in "iu":
        # integer PCM: scale to [-1, 1] by the format's full range
        info = np.iinfo(samples.dtype)
        samples = (samples.astype(np.float32) - (info.max + info.min + 1) / 2) / (info.max + 1)
    samples = samples.astype(np.float32, copy=False)  # a 30-minute clip is 115 MB: not twice
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if samples.ndim != 1:
        raise AudioError(f"{source}: expected (samples,) or (samples, channels), got shape {samples.shape}")
    if samples.size == 0:
        raise AudioError(f"{source}: contains no samples")
    if not all_finite(samples):
        raise AudioError(f"{source}: contains NaN or infinite samples; re-export it from your editor")
    return resample(samples, _check_rate(rate, source), SAMPLE_RATE)


def _duration_text(seconds: float) -> str:
    """'45.2 s' or '30 min 0.5 s': exact enough that a limit and a length never print alike."""
    minutes, rest = divmod(seconds, 60.0)
    return f"{rest:.1f} s" if minutes < 1 else f"{minutes:.0f} min {rest:.1f} s"


_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a pipe (FIFO)"), (stat.S_ISCHR, "a device"),
               (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def _open_audio_file(path: str, name: str) -> int:
    """The file's descriptor, refused unless it is a non-empty regular file. Opened
    non-blocking and checked on the open descriptor, so a FIFO never blocks the caller and
    a file swapped between a check and the open is still caught. The caller closes it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise AudioError(f"{name}: no such file") from None
    except PermissionError:
        raise AudioError(f"{name}: cannot be read (permission denied)") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL or an unencodable character in the path
        raise AudioError(f"{name}: cannot be opened ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((kind for test, kind in _FILE_KINDS if test(info.st_mode)), "not a regular file")
            raise AudioError(f"{name} is {kind}, not an audio file; give the path of a .wav, .flac or other sound file")
        if info.st_size == 0:
            raise AudioError(f"{name}: the file is empty (0 bytes)")
        return fd
    except BaseException:
        os.close(fd)
        raise


def _reason(exc: Exception) -> str:
    """libsndfile's own words, without the handle's repr that soundfile puts in front."""
    return str(getattr(exc, "error_string", "") or exc)


def load_audio(source: str | os.PathLike | bytes, max_seconds: float = DEFAULT_MAX_SECONDS) -> np.ndarray:
    """A file path or the file's bytes -> (N,) float32 mono at 16 kHz.

    Raises `AudioError` with a clear message for special files (folders, FIFOs, devices),
    unreadable, empty, non-finite or too long audio and sample rates outside
    [MIN_RATE, MAX_RATE]. The rate and length are checked from the header before any
    sample is decoded, and decoding runs in blocks (downmixed and resampled as they come,
    stopped as soon as more than ``max_seconds`` arrive), so memory follows the 16 kHz mono
    result whatever the file claims.
    """
    import soundfile

    in_memory = isinstance(source, (bytes, bytearray, memoryview))
    name = "the audio bytes" if in_memory else f"'{os.fspath(source)}'"
    # a file is read through its descriptor (libsndfile reads it directly: no Python call
    # per read as with a file object); we close it ourselves, whatever libsndfile does
    handle = io.BytesIO(source) if in_memory else _open_audio_file(os.fspath(source), name)
    try:
        try:
            stream = soundfile.SoundFile(handle, closefd=False)
        except (RuntimeError, OSError, TypeError, ValueError, soundfile.LibsndfileError) as exc:
            raise AudioError(f"{name}: not a readable audio file ({_reason(exc)})") from None
        with stream:
            return _decode(stream, name, max_seconds)
    finally:
        if in_memory:
            handle.close()
        else:
            os.close(handle)


def _decode(stream, name: str, max_seconds: float) -> np.ndarray:
    """An open `soundfile.SoundFile` -> (N,) float32 16 kHz mono (see `load_audio`)."""
    import soundfile

    rate, channels = _check_rate(stream.samplerate, name), int(stream.channels)
    limit = int(max_seconds * rate)

    def too_long(frames: float) -> AudioError:
        return AudioError(f"{name}: {_duration_text(frames / rate)} is longer than the limit of "
                          f"{max_seconds / 60:g} min; split it or raise the limit")

    if stream.frames > limit:
        raise too_long(stream.frames)
    resampler = Resampler(rate, SAMPLE_RATE)
    block = max(1, _BLOCK_BYTES // (4 * max(1, channels)))
    result = _Filling(-(-max(0, stream.frames) * resampler.up // resampler.down))  # the header's length
    decoded = 0
    try:
        while True:
            data = stream.read(block, dtype="float32", always_2d=True)  # (frames, channels)
            if data.shape[0] == 0:
                break
            decoded += data.shape[0]
            if decoded > limit:  # the header understated the length
                raise too_long(decoded)
            mono = _downmix(data)
            if not all_finite(mono):
                raise AudioError(f"{name}: contains NaN or infinite samples; re-export it from your editor")
            result.add(resampler.push(mono))
    except (RuntimeError, OSError, soundfile.LibsndfileError) as exc:
        raise AudioError(f"{name}: not a readable audio file ({_reason(exc)})") from None
    if decoded == 0:
        raise AudioError(f"{name}: contains no samples")
    result.add(resampler.finish())
    return result.array()


def _downmix(frames: np.ndarray) -> np.ndarray:
    """(n, channels) -> (n,) their mean, bit-identical to ``frames.mean(axis=1)`` (numpy
    sums fewer than 8 values in order too) but 3x faster than its reduction over a short axis."""
    channels = frames.shape[1]
    if channels == 1:
        return frames[:, 0]
    if channels >= 8:
        return frames.mean(axis=1)
    total = frames[:, 0].copy()
    for channel in range(1, channels):
        total += frames[:, channel]
    total /= channels
    return total


class _Filling:
    """Output pieces written into one array of the expected length, so the result is not
    held twice (pieces, then their concatenation); more than expected is appended."""

    def __init__(self, expected: int):
        self.out, self.filled, self.extra = np.empty(expected, np.float32), 0, []

    def add(self, pieces: list[np.ndarray]) -> None:
        for piece in pieces:
            fits = min(piece.size, self.out.size - self.filled)
            self.out[self.filled:self.filled + fits] = piece[:fits]
            self.filled += fits
            if fits < piece.size:
                self.extra.append(piece[fits:])

    def array(self) -> np.ndarray:
        return np.concatenate([self.out[:self.filled], *self.extra]) if self.extra else self.out[:self.filled]


def crop_audio(samples: np.ndarray, start: float = 0.0, end: float | None = None) -> np.ndarray:
    """(N,) 16 kHz samples -> those from ``start`` to ``end`` seconds (None: the end);
    `AudioError` when less than one motion frame is left. Times are compared in seconds
    before any is turned into a sample index, so 1e308 or infinity is refused, not overflowed."""
    duration = samples.size / SAMPLE_RATE
    if not (isinstance(start, (int, float)) and math.isfinite(start) and start >= 0):
        raise AudioError(f"the audio's start must be a number of seconds >= 0, got {start!r}")
    if end is not None and not (isinstance(end, (int, float)) and end > start):  # NaN fails too
        raise AudioError(f"the audio's end must be a number of seconds after its start ({start:g} s), got {end!r}")
    stop = duration if end is None else min(float(end), duration)
    if stop - start < 1 / MOTION_FPS:
        raise AudioError(f"the audio from {start:g} s to {'its end' if end is None else f'{end:g} s'} holds less "
                         f"than one motion frame (the audio is {duration:.2f} s long)")
    return samples[int(round(start * SAMPLE_RATE)):int(round(stop * SAMPLE_RATE))]


def save_audio(path: str | os.PathLike, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """Write (N,) float samples as 16-bit PCM WAV, atomically (a reader never sees half a file)."""
    import soundfile

    clipped = np.clip(samples, -1.0, 1.0)
    return atomic_write(path, lambda name: soundfile.write(name, clipped, rate, subtype="PCM_16", format="WAV"),
                        suffix=".wav")


def frame_count(num_samples: int, rate: int = SAMPLE_RATE, fps: float = MOTION_FPS) -> int:
    """Motion frames for audio of ``num_samples``: frame i shows time i / fps."""
    return max(1, int(round(num_samples / rate * fps)))
