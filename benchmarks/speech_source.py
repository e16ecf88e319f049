"""Real speech of any length for the speed benchmarks (generation.py, worker.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def speech(seconds: float) -> tuple[np.ndarray, str]:
    """(N,) float32 16 kHz speech of ``seconds``: the LibriVox test recordings of the
    evaluation (when installed) and samples/speech_sample.wav, concatenated, repeated and
    cut to length; and a sentence saying so."""
    from model.core.audio import SAMPLE_RATE, load_audio

    parts, sources = [], []
    try:
        from model.evaluate.real_speech import librivox_items

        items = librivox_items()
        parts += [load_audio(path) for path, _ in items]
        sources.append(f"the {len(items)} LibriVox test recordings of the evaluation")
    except (FileNotFoundError, ValueError):
        pass
    parts.append(load_audio(ROOT / "samples" / "speech_sample.wav"))
    sources.append("samples/speech_sample.wav")
    once = np.concatenate(parts)
    audio = np.tile(once, int(np.ceil(seconds * SAMPLE_RATE / once.size)))[: int(seconds * SAMPLE_RATE)]
    source = f"{' and '.join(sources)} ({once.size / SAMPLE_RATE:.1f} s) concatenated, repeated and cut to length"
    return audio.astype(np.float32), source
