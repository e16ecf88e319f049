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


# --- engine label tables ---------------------------------------------------------------
# One explicit table per phone set an engine prints, engine label -> canonical label.
# A label missing from its table is an error (see `canonical`), never a guess: a silently
# mislabelled phone teaches the animator the wrong mouth shape.

_ARPABET = {phone: phone for phone in VOWELS + CONSONANTS}

# Festival's "radio" set (festival/lib/radio_phones.scm): ARPAbet plus reduced and
# syllabic variants. kal_diphone, ked_diphone and cmu_us_slt_arctic_hts all select it
# (the HTS voice's cmu_us_slt_arctic_phoneset.scm does `(PhoneSet.select 'radio)`).
FESTIVAL_RADIO = {
    **_ARPABET,
    "ax": "ah",  # schwa
    "axr": "er",  # r-coloured schwa
    "dx": "d",  # alveolar flap ("butter"): tongue tip like d, lips neutral
    "el": "l",  # syllabic l ("bottle")
    "em": "m",  # syllabic m: lips still close
    "en": "n",  # syllabic n ("button")
    "hv": "hh",  # voiced h
    "nx": "n",  # nasal flap ("winner")
    "pau": SILENCE,
    "h#": SILENCE,  # utterance-edge silence
    "brth": SILENCE,  # breath
}

# Flite's US English phone set (lang/usenglish/us_phoneset.c, used with cmulex by kal16,
# awb, rms and slt) has exactly the radio labels.
FLITE_US = dict(FESTIVAL_RADIO)

# pocketsphinx's en-us acoustic model: the 39 phones in upper case, SIL, and filler
# phones (its noisedict has +NSN+ and +SPN+; other CMU Sphinx models add the rest).
SPHINX_EN_US = {
    **{phone.upper(): phone for phone in VOWELS + CONSONANTS},
    "SIL": SILENCE,
    "+NSN+": SILENCE,  # noise
    "+SPN+": SILENCE,  # unintelligible speech
    "+BREATH+": SILENCE,
    "+COUGH+": SILENCE,
    "+LAUGH+": SILENCE,
    "+NOISE+": SILENCE,
    "+SMACK+": SILENCE,
    "+UH+": SILENCE,
    "+UM+": SILENCE,
}

# eSpeak NG "en-us" IPA as Piper voices consume it: one symbol per codepoint, so a
# phone may span two symbols (diphthongs, affricates). Longest match first.
ESPEAK_EN_US_IPA = {
    # affricates and diphthongs (two symbols)
    "tʃ": "ch",
    "dʒ": "jh",
    "eɪ": "ey",
    "aɪ": "ay",
    "aʊ": "aw",
    "oʊ": "ow",
    "ɔɪ": "oy",
    "əʊ": "ow",  # British-style spelling eSpeak sometimes keeps
    # vowels
    "i": "iy",  # also the short final vowel of "happy"
    "ɪ": "ih",
    "ᵻ": "ih",  # reduced "roses" vowel
    "ɛ": "eh",
    "e": "ey",
    "æ": "ae",
    "a": "ae",  # only outside the diphthongs above, rare in en-us
    "ɑ": "aa",
    "ɒ": "aa",
    "ɔ": "ao",
    "o": "ow",
    "ʊ": "uh",
    "u": "uw",
    "ʌ": "ah",
    "ə": "ah",
    "ɐ": "ah",
    "ɜ": "er",
    "ɚ": "er",
    # consonants
    "p": "p",
    "b": "b",
    "t": "t",
    "d": "d",
    "k": "k",
    "ɡ": "g",
    "g": "g",
    "f": "f",
    "v": "v",
    "θ": "th",
    "ð": "dh",
    "s": "s",
    "z": "z",
    "ʃ": "sh",
    "ʒ": "zh",
    "h": "hh",
    "m": "m",
    "n": "n",
    "ŋ": "ng",
    "l": "l",
    "ɫ": "l",
    "ɹ": "r",
    "r": "r",
    "w": "w",
    "ʍ": "w",  # "wh" as in "which" in some dialects
    "j": "y",
    "ɾ": "d",  # flap ("water")
    "ʔ": "t",  # glottal stop standing for t ("button")
    "x": "k",  # "loch": velar like k
    "ç": "hh",
    # silence: Piper's begin/end markers and punctuation eSpeak passes through
    "^": SILENCE,
    "$": SILENCE,
    ".": SILENCE,
    ",": SILENCE,
    ";": SILENCE,
    ":": SILENCE,
    "!": SILENCE,
    "?": SILENCE,
    "(": SILENCE,
    ")": SILENCE,
    "-": SILENCE,
    "'": SILENCE,
    '"': SILENCE,
}
# Symbols that are not phones: stress marks belong to the phone after them, length and
# diacritics to the phone before them, a word break (" ") to the phone after it.
ESPEAK_STRESS = frozenset("ˈˌ")
ESPEAK_MODIFIERS = frozenset("ːˑ˞ʰʲˤ\u0303\u0329\u032a\u032f\u0327")
ESPEAK_WORD_BREAK = " "

