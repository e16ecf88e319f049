"""CapTalk's phone set and timed phones.

Every engine's labels (Festival, Flite, Piper/eSpeak IPA, pocketsphinx) are mapped to
one set: the 39 CMU/ARPAbet phones in lower case without stress, plus ``pau`` for
silence and breaths.
"""
from __future__ import annotations

from dataclasses import dataclass

VOWELS = ("aa", "ae", "ah", "ao", "aw", "ay", "eh", "er", "ey", "ih", "iy", "ow", "oy", "uh", "uw")
CONSONANTS = (
    "b", "ch", "d", "dh", "f", "g", "hh", "jh", "k", "l", "m", "n", "ng", "p", "r", "s", "sh",
    "t", "th", "v", "w", "y", "z", "zh",
)
SILENCE = "pau"
PHONES = VOWELS + CONSONANTS + (SILENCE,)


@dataclass(frozen=True)
class Phone:
    """One phone: canonical ``label`` (in `PHONES`) from ``start`` to ``end`` seconds."""

    label: str
    start: float
    end: float

    @property
    def centre(self) -> float:
        return 0.5 * (self.start + self.end)
