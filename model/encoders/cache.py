"""On-disk feature cache for training: frozen-encoder outputs computed once per input.

Layout under the cache root (default ``<shared data dir>/cache/features``)::

    speech/<encoder>/<aa>/<sha256 of the audio file's bytes>.npy   (T, dim) float16
    text/<encoder>/<aa>/<sha256 of the caption>.npy               (L, dim) float16, unpadded

``<encoder>`` is the encoder id made filesystem-safe plus the alignment version, so a
changed frame convention never serves stale features. Writes go to a temporary file in
the same folder and are renamed into place (atomic on POSIX and Windows): readers in other
processes (DataLoader workers, torchrun ranks) see a whole file or none. Two processes
missing the same entry at once both compute it and the second rename wins; the contents
are identical, so that only costs time.

Values are stored as float16 (half the disk and page cache) and returned as float32; the
first call returns the float16-rounded values too, so every call gives identical arrays.
Values beyond float16's range are stored as float32 instead.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .speech import ALIGNMENT_VERSION, SpeechEncoder
from .text import TextEncoder
from ..core.atomic import atomic_write
from ..core.paths import shared_data_dir


TEXT_CACHE_VERSION = "t1"  # bump when caption tokenisation or truncation changes


def default_cache_dir() -> Path:
    return shared_data_dir() / "cache" / "features"


@dataclass
class CacheStats:
    computed: int = 0  # entries computed by an encoder in this process
    disk_hits: int = 0
    memory_hits: int = 0


def _safe_name(encoder_id: str, version: str) -> str:
    # readable, and a hash so ids differing only in unsafe characters never share a folder
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_id)[:60]
    digest = hashlib.sha256(encoder_id.encode("utf-8")).hexdigest()[:8]
    return f"{readable}-{digest}-{version}"


def _save_atomic(path: Path, array: np.ndarray) -> None:
    def write(name: str) -> None:
        with open(name, "wb") as stream:  # a handle, so numpy keeps the name (no ".npy" added)
            np.save(stream, array, allow_pickle=False)

    atomic_write(path, write)


def _to_stored(array: np.ndarray) -> np.ndarray:
    half = array.astype(np.float16)
    return half if np.isfinite(half).all() else array.astype(np.float32)


def _load(path: Path, dim: int) -> np.ndarray | None:
    """The stored (rows, dim) array, or None if missing or unusable (then it is recomputed)."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError):  # truncated by a crash outside our atomic write
        return None
    if array.ndim != 2 or array.shape[1] != dim:
        return None
    return array.astype(np.float32)


class FeatureCache:
    """Speech features keyed by (encoder id, audio file content); caption token states keyed
    by (encoder id, caption text), with a small in-memory LRU for captions (a training set
    repeats a few thousand captions, each tiny)."""

    def __init__(self, root: str | os.PathLike | None = None, memory_items: int = 4096) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.memory_items = memory_items
        self.stats = CacheStats()
        self._captions: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    # -- speech

    def speech_path(self, encoder: SpeechEncoder, audio_path: str | os.PathLike) -> Path:
        digest = self._file_hash(Path(audio_path))
        return self.root / "speech" / _safe_name(encoder.encoder_id, ALIGNMENT_VERSION) / digest[:2] / f"{digest}.npy"

    def speech(self, encoder: SpeechEncoder, audio_path: str | os.PathLike) -> np.ndarray:
        """Audio file -> (T, dim) float32 features (float16 precision), computed at most once."""
        from ..core.audio import load_audio

        path = self.speech_path(encoder, audio_path)
        cached = _load(path, encoder.dim)
        if cached is not None:
            self.stats.disk_hits += 1
            return cached
        stored = _to_stored(encoder.features(load_audio(audio_path)))
        _save_atomic(path, stored)
        self.stats.computed += 1
        return stored.astype(np.float32)

    def _file_hash(self, path: Path) -> str:
        info = path.stat()  # raises FileNotFoundError with the path: clear enough
        key = (str(path.resolve()), info.st_size, info.st_mtime_ns)
        with self._lock:
            if key in self._hashes:
                return self._hashes[key]
        digest = hashlib.sha256()
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        with self._lock:
            self._hashes[key] = digest.hexdigest()
        return digest.hexdigest()

    # -- captions

    def caption_path(self, encoder: TextEncoder, text: str) -> Path:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self.root / "text" / _safe_name(encoder.encoder_id, TEXT_CACHE_VERSION) / digest[:2] / f"{digest}.npy"

    def text(self, encoder: TextEncoder, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Captions -> (B, L, dim) float32 token states, (B, L) bool mask, as `encoder.encode`
        (float16 precision); captions not in memory or on disk are encoded in one batch."""
        if isinstance(texts, str):
            raise TypeError("text() takes a list of strings (wrap a single caption in a list)")
        found: dict[str, np.ndarray] = {}
        missing = []
        for text in dict.fromkeys(texts):
            states = self._memory_get((encoder.encoder_id, text))
            if states is None:
                states = _load(self.caption_path(encoder, text), encoder.dim)
                if states is not None:
                    self.stats.disk_hits += 1
                    self._memory_put((encoder.encoder_id, text), states)
            if states is None:
                missing.append(text)
            else:
                found[text] = states
        if missing:
            batch, mask = encoder.encode(missing)
            for text, states, real in zip(missing, batch, mask):
                stored = _to_stored(states[real])
                _save_atomic(self.caption_path(encoder, text), stored)
                found[text] = stored.astype(np.float32)
                self._memory_put((encoder.encoder_id, text), found[text])
                self.stats.computed += 1
        length = max(1, max(found[text].shape[0] for text in texts)) if texts else 1
        out = np.zeros((len(texts), length, encoder.dim), np.float32)
        mask = np.zeros((len(texts), length), bool)
        for row, text in enumerate(texts):
            states = found[text]
            out[row, : states.shape[0]] = states
            mask[row, : states.shape[0]] = True
        return out, mask

    def _memory_get(self, key: tuple[str, str]) -> np.ndarray | None:
        with self._lock:
            states = self._captions.get(key)
            if states is not None:
                self._captions.move_to_end(key)
                self.stats.memory_hits += 1
            return states

    def _memory_put(self, key: tuple[str, str], states: np.ndarray) -> None:
        with self._lock:
            self._captions[key] = states
            self._captions.move_to_end(key)
            while len(self._captions) > self.memory_items:
                self._captions.popitem(last=False)


_CACHES: dict[Path, FeatureCache] = {}
_CACHES_LOCK = threading.Lock()


def feature_cache(cache_dir: str | os.PathLike | None = None) -> FeatureCache:
    """The process-wide cache for a folder (default `default_cache_dir()`)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    with _CACHES_LOCK:
        return _CACHES.setdefault(root.resolve(), FeatureCache(root))


def cached_speech_features(
    encoder: SpeechEncoder, audio_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None
) -> np.ndarray:
    """Audio file -> (T, dim) float32 speech features, from the cache when present."""
    return feature_cache(cache_dir).speech(encoder, audio_path)


def cached_text_features(
    encoder: TextEncoder, texts: list[str], cache_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Captions -> (B, L, dim) float32 token states and (B, L) bool mask, cached per caption."""
    return feature_cache(cache_dir).text(encoder, texts)
