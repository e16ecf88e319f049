"""Phone timings for real recordings: forced alignment of a transcript with pocketsphinx 5
(PyPI ``pocketsphinx``; its bundled en-us acoustic model and CMU dictionary).

Two passes, as pocketsphinx documents it: `Decoder.set_align_text` finds the words (and
which dictionary pronunciation of each, plus optional silences), then
`Decoder.set_alignment` re-decodes to phone level; times are 10 ms frames.

Words must be in the dictionary (cmudict-en-us, 134k entries); pocketsphinx has no
letter-to-sound rules, so other words raise `SpeechError` naming them, unless
``pronunciations`` supplies them in ARPAbet. Transcripts are read case-insensitively;
punctuation other than apostrophes inside words is ignored; numbers must be spelled out.

The decoder (0.4 s to load) is made once per process and is not thread-safe; its front
end is reset before every pass, so an alignment does not depend on earlier ones.
"""
from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..core.audio import SAMPLE_RATE

from .phones import PHONES, SILENCE, SPHINX_EN_US, Phone
from .voices import SpeechError, timed_phones

_FRAMES_PER_SECOND = 100  # pocketsphinx frames are 10 ms
_FILLER = re.compile(r"^[<[]")  # <s>, </s>, <sil>, [NOISE]: not transcript words


@dataclass(frozen=True)
class AlignedWord:
    """A transcript word (as in the dictionary, lower case) from ``start`` to ``end``
    seconds, with its phones (canonical labels)."""

    word: str
    start: float
    end: float
    phones: tuple[Phone, ...]


def align(audio: np.ndarray, transcript: str, pronunciations: Mapping[str, str] | None = None) -> tuple[Phone, ...]:
    """(N,) float32 audio at 16 kHz and what it says -> canonical phones covering exactly
    0 .. N / 16000 seconds, silences (and noises) labelled "pau".

    ``pronunciations``: words missing from the dictionary in ARPAbet, e.g.
    ``{"zorblax": "Z AO R B L AE K S"}`` (stress digits allowed); they stay in this
    process's dictionary. Words already in it keep the dictionary's pronunciations.
    """
    return _align(audio, transcript_words(transcript), pronunciations)[0]


def align_words(
    audio: np.ndarray, transcript: str, pronunciations: Mapping[str, str] | None = None
) -> tuple[AlignedWord, ...]:
    """Like `align`, grouped into the transcript's words (silences left out)."""
    return _align(audio, transcript_words(transcript), pronunciations)[1]


def align_phone_sequence(audio: np.ndarray, labels: Sequence[str]) -> tuple[Phone, ...]:
    """Forced alignment of a known canonical phone sequence (e.g. what a voice said):
    the same phones, in order, with pocketsphinx's timings. A "pau" in ``labels`` allows
    a pause there; pauses may also appear between any two of them."""
    words, pronunciations = [], {}
    for chunk in " ".join(labels).split(SILENCE):
        phones = chunk.upper().split()
        if phones:
            # a made-up word per stretch between pauses, named after its phones
            word = "captalk" + hashlib.sha1(" ".join(phones).encode()).hexdigest()[:16]
            words.append(word)
            pronunciations[word] = " ".join(phones)
    if not words:
        raise ValueError("no phones to align")
    return _align(audio, words, pronunciations)[0]


def onset_differences(phones: Sequence[Phone], reference: Sequence[Phone]) -> np.ndarray:
    """(K,) seconds: start of each non-pause phone in ``phones`` minus its start in
    ``reference``; both must have the same non-pause labels in the same order."""
    spoken = [phone for phone in phones if phone.label != SILENCE]
    expected = [phone for phone in reference if phone.label != SILENCE]
    if [p.label for p in spoken] != [p.label for p in expected]:
        raise ValueError("the two phone sequences differ")
    return np.array([a.start - b.start for a, b in zip(spoken, expected)])


def transcript_words(transcript: str) -> list[str]:
    """The words of ``transcript`` as the dictionary spells them (lower case, no punctuation)."""
    text = transcript.lower().replace("\u2019", "'")
    return [word.strip("'") for word in re.findall(r"[a-z0-9']+", text) if word.strip("'")]


def pronunciation(word: str) -> tuple[str, ...] | None:
    """The dictionary's first pronunciation of ``word`` as canonical phones, or None."""
    phones = _decoder().lookup_word(word.lower())
    return tuple(SPHINX_EN_US[label] for label in phones.split()) if phones else None


def _align(audio, words: list[str], pronunciations):
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size < SAMPLE_RATE // 10:
        raise ValueError(f"audio must be (N,) samples at 16 kHz, at least 0.1 s; got shape {audio.shape}")
    if not words:
        raise ValueError("the transcript has no words")
    decoder = _decoder()
    for word, phones in (pronunciations or {}).items():
        _add_word(decoder, word.lower(), phones)
    unknown = [word for word in dict.fromkeys(words) if decoder.lookup_word(word) is None]
    if unknown:
        raise SpeechError(
            f"not in pocketsphinx's dictionary: {', '.join(unknown)}; spell numbers out, "
            "or pass pronunciations={'word': 'ARPABET PHONES'}"
        )
    raw = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
    try:
        decoder.set_align_text(" ".join(words))
        _decode(decoder, raw)
        decoder.set_alignment()
        _decode(decoder, raw)
        alignment = decoder.get_alignment()
    except RuntimeError as exc:
        raise SpeechError(f"pocketsphinx could not align the transcript ({exc}); does it match the audio?") from None
    if alignment is None:
        raise SpeechError("pocketsphinx found no alignment; does the transcript match the audio?")
    return _phones_and_words(alignment, audio.size / SAMPLE_RATE, words)


def _phones_and_words(alignment, duration: float, words: list[str]):
    ends: list[tuple[str, float]] = []  # pocketsphinx labels, gaps filled with silence
    spans: list[tuple[str, float, float]] = []
    cursor = 0.0
    for entry in alignment.words():
        for phone in entry:
            start = phone.start / _FRAMES_PER_SECOND
            if start > cursor + 1e-9:
                ends.append(("SIL", start))
            cursor = (phone.start + phone.duration) / _FRAMES_PER_SECOND
            ends.append((phone.name, cursor))
        if not _FILLER.match(entry.name):
            word = re.sub(r"\(\d+\)$", "", entry.name)  # "was(2)": the second pronunciation
            spans.append((word, entry.start / _FRAMES_PER_SECOND, (entry.start + entry.duration) / _FRAMES_PER_SECOND))
    if [word for word, _, _ in spans] != words:
        raise SpeechError(f"pocketsphinx aligned other words than the transcript's: {[w for w, _, _ in spans]}")
    phones = timed_phones(ends, duration, SPHINX_EN_US, "pocketsphinx")
    aligned = tuple(
        AlignedWord(word, start, end, tuple(p for p in phones if start <= p.centre < end and p.label != SILENCE))
        for word, start, end in spans
    )
    return phones, aligned


def _decode(decoder, raw: bytes) -> None:
    # the front end and cepstral mean carry state from one utterance to the next, which
    # would make an alignment depend on what was aligned before it
    decoder.reinit_feat()
    decoder.start_utt()
    decoder.process_raw(raw, full_utt=True)
    decoder.end_utt()


def _add_word(decoder, word: str, phones: str) -> None:
    labels = re.sub(r"[0-2]\b", "", phones.upper()).split()  # stress digits are not phones here
    bad = [label for label in labels if SPHINX_EN_US.get(label) in (None, SILENCE)]
    if not labels or bad:
        raise ValueError(
            f"pronunciation of '{word}' must be ARPAbet phones "
            f"({' '.join(p.upper() for p in PHONES if p != SILENCE)}); got {phones!r}"
        )
    known = decoder.lookup_word(word)
    if known is None:
        decoder.add_word(word, " ".join(labels), True)
    elif known != " ".join(labels):
        raise ValueError(f"'{word}' is already in the dictionary as '{known}'; pronunciations can only add words")


@functools.lru_cache(maxsize=1)
def _decoder():
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise SpeechError("pocketsphinx is not installed (pip install pocketsphinx==5.1.1)") from None
    return Decoder(loglevel="ERROR")
