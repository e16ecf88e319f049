"""Captions: the hidden controls of a segment described in words, in many phrasings.

The model only ever reads these captions, so each caption must carry the controls'
meaning while its wording, word order and form (terse phrase list, one long phrase,
several sentences in the manner of the paper's Appendix F) vary as much as possible.

Rules a trained model can rely on (docs/captions.md has the full tables):

- A style attribute at a level other than its default (`STYLE_DEFAULTS`) is always
  mentioned; at its default it is mentioned with probability `P_DEFAULT_MENTION`. So
  "not mentioned" always means "default". The speaker is named with `P_SPEAKER`.
- Every word of the style vocabulary belongs to one attribute and one level only: "big"
  is always the mouth, "minimal" always the head, "even" always the tempo.
- An emotion caption without an intensity word means medium intensity. A few synonyms
  carry their own intensity (`IMPLIED_INTENSITY`: "furious" is strong, "annoyed" slight)
  and appear only at that level. A neutral emotion never carries an intensity word.
- `HELD_OUT_WORDS` and tag syntax ("S = man | E = angry", "mouth: wide") are never
  generated; they are reserved for evaluating generalisation.
- An empty caption ("") means unconditional (`render_captions`).

Everything is drawn from the given numpy Generator, so a seed fixes the captions.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

import numpy as np

from .controls import (
    EMOTIONS,
    HEAD_GAIN,
    INTENSITY_WEIGHT,
    MOUTH_GAIN,
    SPEAKERS,
    SPEAKERS_FEMALE,
    SPEAKERS_MALE,
    TEMPO_RATE,
    TONES,
    ControlSegment,
    EmotionControls,
    StyleControls,
)

STYLE_ATTRIBUTES = ("mouth", "head", "tempo", "tone")
# The defaults are the controls' own (mouth normal, head moderate, tempo normal, tone neutral).
STYLE_DEFAULTS = {attribute: getattr(StyleControls(), attribute) for attribute in STYLE_ATTRIBUTES}
DEFAULT_INTENSITY = EmotionControls().intensity  # medium: what a caption without an intensity word means

P_SPEAKER = 0.7
P_DEFAULT_MENTION = 0.4

# ---------------------------------------------------------------------------------------
# Style vocabulary. No word may appear under two levels or two attributes (tests check).

_SPEAKER_WORDS = {
    "man": ("man", "male speaker"),
    "young man": ("young man",),
    "older man": ("older man",),
    "male teacher": ("male teacher", "male instructor"),
    "male presenter": ("male presenter", "male host"),
    "gentleman": ("gentleman",),
    "guy": ("guy",),
    "woman": ("woman", "female speaker"),
    "young woman": ("young woman",),
    "older woman": ("older woman",),
    "female teacher": ("female teacher", "female instructor"),
    "female presenter": ("female presenter", "female host"),
    "lady": ("lady",),
    "person": ("person", "individual"),
    "speaker": ("speaker",),
    "teacher": ("teacher", "instructor"),
    "news anchor": ("news anchor", "newsreader"),
    "narrator": ("narrator", "storyteller"),
    "presenter": ("presenter", "host"),
    "character": ("character",),
}

# Adjectives that combine with the attribute's nouns: "wide mouth movements", "the pace is slow".
_ADJECTIVES = {
    "mouth": {
        "narrow": ("narrow", "small", "restrained", "tight", "limited", "reduced", "muted", "contained"),
        "normal": ("natural", "normal", "ordinary", "typical", "standard"),
        "wide": ("wide", "big", "large", "exaggerated", "pronounced", "expansive", "broad", "emphatic"),
    },
    "head": {
        "still": ("minimal", "negligible"),
        "subtle": ("subtle", "slight", "gentle", "light", "faint", "minor", "understated"),
        "moderate": ("moderate", "medium", "balanced", "occasional"),
        "lively": ("lively", "animated", "dynamic", "vigorous", "frequent", "active", "sweeping"),
    },
    "tempo": {
        "slow": ("slow", "unhurried", "leisurely"),
        "normal": ("even", "conversational", "average", "regular"),
        "fast": ("fast", "quick", "rapid", "brisk", "hurried", "swift"),
    },
    "tone": {
        "calm": ("calm", "relaxed", "composed", "peaceful", "soothing", "tranquil"),
        "neutral": ("neutral", "matter-of-fact", "plain", "factual", "unemotional"),
        "serious": ("serious", "grave", "stern", "solemn", "earnest", "formal", "businesslike"),
        "cheerful": ("cheerful", "upbeat", "bright", "friendly", "warm", "positive", "sunny", "pleasant"),
        "energetic": ("energetic", "enthusiastic", "spirited", "vibrant", "passionate", "high-energy", "peppy"),
    },
}

# Nouns the adjectives describe. Head "still" is mostly said with whole phrases below
# because "motionless head movements" contradicts itself.
_NOUNS = {
    "mouth": ("mouth movements", "lip movements", "mouth motion", "lip motion", "mouth shapes", "mouth opening",
              "jaw motion"),
    "head": ("head movements", "head motion", "head movement", "head gestures"),
    "tempo": ("pace", "tempo", "speed", "speaking rate", "rhythm", "delivery"),
    "tone": ("tone", "tone of voice", "manner"),
}
_PACE_NOUNS = ("pace", "tempo", "speed")  # the ones that read well after "at a slow"
_TERSE_NOUNS = {
    "mouth": ("mouth", "mouth movements", "lip movements", "mouth motion", "mouth opening"),
    "head": ("head motion", "head movement", "head movements", "nodding"),
    "tempo": ("pace", "tempo", "speed", "speech", "delivery"),
    "tone": ("tone", "mood", "manner"),
}

# Ready-made noun phrases (usable after "with" and, without their article, in lists).
_NOUN_PHRASES = {
    "mouth": {
        "narrow": ("barely parted lips", "a mostly closed mouth", "little jaw opening", "tight lips"),
        "normal": ("a normal amount of mouth opening", "natural lip and jaw motion"),
        "wide": ("a wide-open mouth", "a mouth opened wide", "big open vowels", "large jaw openings"),
    },
    "head": {
        "still": (
            "a still head", "a motionless head", "a steady head", "a stationary head", "a static head",
            "an immobile head", "almost no head movement", "hardly any head motion", "very little head movement",
        ),
        "subtle": ("a few gentle nods", "slight nods and tilts"),
        "moderate": (
            "some head movement", "some nodding and tilting", "occasional nods and tilts",
            "a fair amount of head movement",
        ),
        "lively": (
            "a lively head", "an animated head", "lots of nodding and tilting", "plenty of head motion",
            "frequent head turns and nods",
        ),
    },
}

# Ready-made clauses, each a sentence on its own.
_CLAUSES = {
    "mouth": {
        "narrow": ("the lips barely part", "the mouth hardly opens", "the mouth stays mostly closed",
                   "the jaw opens only a little"),
        "normal": ("the mouth moves naturally", "the mouth opens a normal amount"),
        "wide": ("the mouth opens wide", "the mouth is often wide open", "the lips part widely",
                 "the jaw drops wide on open vowels"),
    },
    "head": {
        "still": ("the head stays still", "the head barely moves", "the head remains motionless",
                  "the head is held steady", "the head hardly moves", "there is almost no head movement"),
        "subtle": ("the head moves only a little", "the head nods gently", "there are a few slight nods"),
        "moderate": ("the head moves now and then", "the head nods and tilts from time to time"),
        "lively": ("the head moves a lot", "the head nods and turns often", "the head is constantly moving"),
    },
}

_ADVERBS = {
    "tempo": {
        "slow": ("slowly", "unhurriedly"),
        "normal": (),
        "fast": ("fast", "quickly", "rapidly", "briskly", "hurriedly", "swiftly"),
    },
}

# Sentence templates per attribute. Slots: {s} subject ("the woman", "she"), {n} subject
# noun only, {poss} possessive ("her", "the woman's", "the"), {adj}, {a_adj} (with
# article), {noun}, {noun_is} ("mouth movements are"), {np} noun phrase, {clause}, {adv},
# {pace} (a tempo noun that follows "at").
_SENTENCES = {
    "mouth": (
        "{poss} {noun_is} {adj}", "{poss} {noun_is} {adj} throughout", "{s} speaks with {np}",
        "{s} talks with {np}", "{clause}", "{clause}", "{np} can be seen",
    ),
    "head": (
        "{poss} {noun_is} {adj}", "{poss} {noun_is} {adj} while talking", "{s} speaks with {np}",
        "{s} makes {adj} head movements", "{clause}", "{clause}", "{np} can be seen",
    ),
    "tempo": (
        "{s} speaks {adv}", "{s} talks {adv}", "the {noun_is} {adj}", "{poss} speaking rate is {adj}",
        "speech is delivered at {a_adj} {pace}", "{s} speaks at {a_adj} {pace}",
        "the speech has {a_adj} rhythm",
    ),
    "tone": (
        "{s} sounds {adj}", "the overall tone is {adj}",
        "{n} in the video appears to be speaking with {a_adj} tone", "{s} speaks in {a_adj} tone",
        "{s} speaks with {a_adj} {noun}", "the mood is {adj}", "{s} comes across as {adj}",
        "{poss} tone of voice is {adj}",
    ),
}
_SPEAKER_OPENERS = (
    "{a_spk} is speaking", "the video shows {a_spk} talking", "the speaker is {a_spk}",
    "{a_spk} talks to the camera", "this is {a_spk} speaking", "a video of {a_spk} speaking",
    "{a_spk} speaks",
)
_SPEAKER_TONE_OPENERS = (
    "{the_spk} in the video appears to be speaking with {a_tone} tone", "{a_spk} speaks in {a_tone} tone",
    "{a_spk} with {a_tone} voice is speaking", "the video shows {a_spk} speaking in {a_tone} tone",
)
_WITH_OPENERS_NAMED = ("{a_spk} speaking with", "{a_spk} talking with", "{a_spk} with")
_WITH_OPENERS_UNNAMED = ("speaking with", "talking with", "someone speaking with", "someone talking with")

_STYLE_FORMS = ("terse", "with", "sentences")
_STYLE_FORM_WEIGHTS = (0.3, 0.25, 0.45)
P_TONE_IN_OPENER = 0.35
P_FRAGMENT = 0.15  # a sentence-form clause said as a bare noun phrase: "Wide mouth movements."

# ---------------------------------------------------------------------------------------
# Emotion vocabulary. "any" words take every intensity; the others carry their level.

_EMOTION_ADJECTIVES = {
    "happy": {"any": ("happy", "joyful", "cheerful", "glad"), "slight": ("pleased",), "strong": ("delighted",)},
    "sad": {"any": ("sad", "unhappy", "sorrowful", "downcast", "gloomy"), "strong": ("devastated",)},
    "angry": {"any": ("angry", "mad"), "slight": ("irritated", "annoyed"), "strong": ("furious",)},
    "surprised": {"any": ("surprised", "astonished", "amazed"), "strong": ("shocked",)},
    "fear": {"any": ("scared", "afraid", "frightened", "fearful"), "slight": ("anxious", "uneasy"),
             "strong": ("terrified",)},
    "disgust": {"any": ("disgusted", "repulsed", "grossed out")},
    "contempt": {"any": ("contemptuous", "scornful", "disdainful", "sneering")},
}
_EMOTION_NOUNS = {
    "happy": {"any": ("happiness", "joy", "cheerfulness"), "strong": ("delight",)},
    "sad": {"any": ("sadness", "sorrow", "gloom")},
    "angry": {"any": ("anger",), "slight": ("irritation", "annoyance"), "strong": ("fury", "rage")},
    "surprised": {"any": ("surprise", "astonishment", "amazement"), "strong": ("shock",)},
    "fear": {"any": ("fear", "fright"), "slight": ("anxiety", "unease"), "strong": ("terror",)},
    "disgust": {"any": ("disgust", "revulsion"), "slight": ("distaste",)},
    "contempt": {"any": ("contempt", "scorn", "disdain")},
}
# What a face shows: "a slight smile of happiness", "an intense look of fear".
_DISPLAYS = ("look", "expression", "sense", "feeling")
_LABEL_DISPLAYS = {
    "happy": ("smile", "grin"), "angry": ("scowl", "glare"), "sad": ("frown",), "surprised": ("gasp",),
    "disgust": ("grimace",), "contempt": ("sneer", "smirk"), "fear": (),
}
_NEUTRAL_WORDS = ("neutral", "calm", "emotionless", "calm and neutral")
_NEUTRAL_BARE = _NEUTRAL_WORDS + ("no particular emotion", "no emotion", "neutral expression", "neutral mood")
_NEUTRAL_SENTENCES = (
    "{subj} {verb} {neutral}", "{subj} {shows} no particular emotion", "the expression stays neutral",
    "the face is calm and neutral", "{subj} speaks without any particular emotion",
    "{subj} {verb} {neutral} throughout",
)

_INTENSITY_ADVERBS = {
    "slight": ("slightly", "a bit", "mildly", "a touch", "somewhat", "a little"),
    "medium": ("moderately", "fairly", "quite", "noticeably"),
    "strong": ("very", "extremely", "strongly", "intensely", "deeply", "really"),
}
_INTENSITY_ADJECTIVES = {
    "slight": ("slight", "mild"),
    "medium": ("moderate", "noticeable", "clear"),
    "strong": ("strong", "intense", "deep", "extreme", "great"),
}
_INTENSITY_QUANTITIES = {  # go straight before an uncountable noun: "a hint of anger"
    "slight": ("a touch of", "a hint of", "a bit of", "a little"),
    "medium": (),
    "strong": ("a lot of", "a great deal of"),
}
_INTENSITY_LEVEL_WORDS = {  # "angry, high intensity"
    "slight": ("low", "slight", "mild"),
    "medium": ("medium", "moderate"),
    "strong": ("high", "strong"),
}
P_MEDIUM_WORD = 0.35  # medium may be said ("fairly sad") or left unsaid ("sad")
P_IMPLIED_WORD = 0.4  # "furious" may still get "very"

_EMOTION_SUBJECTS = ("the speaker", "the person", "this person", "someone")
_EMOTION_VERBS = ("looks", "sounds", "seems", "appears", "is", "feels")
_SHOW_VERBS = ("shows", "displays", "expresses", "conveys")
_EMOTION_SENTENCES = (
    "{subj} {verb} {adj_phrase}", "{subj} {verb} {adj_phrase} while speaking", "{subj} {shows} {noun_phrase}",
    "{subj} speaks with {display_phrase}", "there is {display_phrase} on the face",
    "the expression shows {noun_phrase}", "the face conveys {noun_phrase}", "{display_phrase} throughout",
    "feeling {adj_phrase}",
)
_INTENSITY_TAGS = (
    "{word}, {level} intensity", "{word} with {level} intensity", "{word} ({level} intensity)",
    "{noun} at {level} intensity",
)
_EMOTION_FORMS = ("bare", "phrase", "tag", "sentence")
_EMOTION_FORM_WEIGHTS = (0.25, 0.3, 0.1, 0.35)
_NEUTRAL_FORM_WEIGHTS = (0.5, 0.5)  # bare, sentence

# ---------------------------------------------------------------------------------------
# Words the generator never uses, per attribute and level, for evaluation captions.
HELD_OUT_WORDS = {
    "speaker": {"any": ("boy", "girl", "grandmother", "professor", "lecturer", "reporter", "anchorwoman")},
    "mouth": {
        "narrow": ("tiny", "pursed", "tight-lipped"),
        "normal": ("everyday", "run-of-the-mill"),
        "wide": ("gigantic", "huge", "enormous", "gaping", "cavernous"),
    },
    "head": {
        "still": ("frozen", "rigid", "statue-like", "unmoving"),
        "subtle": ("delicate", "soft"),
        "moderate": ("intermittent", "middling"),
        "lively": ("wild", "hyperactive", "restless", "bobbing"),
    },
    "tempo": {
        "slow": ("sluggish", "languid", "plodding", "drawling"),
        "fast": ("rushed", "breakneck", "racing", "hasty"),
    },
    "tone": {
        "calm": ("serene", "placid", "mellow"),
        "neutral": ("deadpan", "monotone"),
        "serious": ("somber", "grim", "austere"),
        "cheerful": ("chirpy", "bubbly", "jolly"),
        "energetic": ("zealous", "fiery", "exuberant"),
    },
    "emotion": {
        "neutral": ("impassive", "indifferent", "blank"),
        "happy": ("ecstatic", "elated", "overjoyed"),
        "sad": ("heartbroken", "melancholic", "miserable"),
        "angry": ("livid", "enraged", "irate"),
        "surprised": ("stunned", "flabbergasted", "startled"),
        "fear": ("petrified", "panicked", "horrified"),
        "disgust": ("revolted", "nauseated", "sickened"),
        "contempt": ("condescending", "derisive", "smug"),
    },
    "intensity": {
        "slight": ("faintly", "marginally", "a tad"),
        "medium": ("reasonably",),
        "strong": ("utterly", "incredibly", "tremendously", "overwhelmingly"),
    },
}
HELD_OUT_SYNTAX = ("=", "|", ":")  # tag forms ("E = angry | I = strong", "mouth: wide") stay unseen


# ---------------------------------------------------------------------------------------
# Vocabulary as data


def _strip_article(phrase: str) -> str:
    return re.sub(r"^(a|an) ", "", phrase)


def _contains_word(text: str, term: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(term)}(?![\w-])", text) is not None


def _minimal_terms(terms) -> tuple[str, ...]:
    """Unique terms, dropping any that merely contains another (the shorter one suffices)."""
    unique = tuple(dict.fromkeys(terms))
    return tuple(t for t in unique if not any(o != t and _contains_word(t, o) for o in unique))


def _levels(attribute: str) -> tuple[str, ...]:
    return tuple({"mouth": MOUTH_GAIN, "head": HEAD_GAIN, "tempo": TEMPO_RATE, "tone": TONES}[attribute])


def _style_terms(attribute: str, level: str) -> tuple[str, ...]:
    # Noun phrases without their article: lists use them that way ("still head").
    phrases = tuple(_strip_article(p) for p in _NOUN_PHRASES.get(attribute, {}).get(level, ()))
    return _minimal_terms(
        _ADJECTIVES[attribute][level]
        + _ADVERBS.get(attribute, {}).get(level, ())
        + phrases
        + _CLAUSES.get(attribute, {}).get(level, ())
    )


def _emotion_terms(label: str) -> tuple[str, ...]:
    if label == "neutral":
        return _minimal_terms(_NEUTRAL_BARE + ("without any particular emotion",))
    words = [w for table in (_EMOTION_ADJECTIVES, _EMOTION_NOUNS) for group in table[label].values() for w in group]
    return _minimal_terms(words)


def _intensity_terms(level: str) -> tuple[str, ...]:
    return _minimal_terms(
        _INTENSITY_ADVERBS[level] + _INTENSITY_ADJECTIVES[level] + _INTENSITY_QUANTITIES[level]
        + _INTENSITY_LEVEL_WORDS[level]
    )


def _build_vocabulary() -> dict[str, dict[str, tuple[str, ...]]]:
    vocabulary = {"speaker": {speaker: _SPEAKER_WORDS[speaker] for speaker in SPEAKERS}}
    for attribute in STYLE_ATTRIBUTES:
        vocabulary[attribute] = {level: _style_terms(attribute, level) for level in _levels(attribute)}
    vocabulary["emotion"] = {label: _emotion_terms(label) for label in EMOTIONS}
    vocabulary["intensity"] = {level: _intensity_terms(level) for level in INTENSITY_WEIGHT}
    return vocabulary


VOCABULARY = _build_vocabulary()
"""attribute -> level -> the words and phrases the generator uses for it (lower case).

Shortest forms only: "wide" stands for "a mouth opened wide" too. Match them as whole
words, case-insensitively, with a hyphen joining words ("wide-open" is not "wide").
"""

IMPLIED_INTENSITY = {
    word: level
    for table in (_EMOTION_ADJECTIVES, _EMOTION_NOUNS)
    for groups in table.values()
    for level, words in groups.items()
    if level != "any"
    for word in words
}
"""Emotion words that carry an intensity by themselves ("furious" -> strong)."""


# ---------------------------------------------------------------------------------------
# Random helpers (scalar draws: far faster than Generator.choice for one item)


def _pick(options, rng: np.random.Generator):
    return options[int(rng.random() * len(options))]


def _pick_weighted(options, weights, rng: np.random.Generator):
    r = rng.random() * sum(weights)
    for option, weight in zip(options, weights):
        r -= weight
        if r < 0:
            return option
    return options[-1]


def _chance(p: float, rng: np.random.Generator) -> bool:
    return rng.random() < p


def _shuffled(items, rng: np.random.Generator) -> list:
    items = list(items)
    for i in range(len(items) - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        items[i], items[j] = items[j], items[i]
    return items


def _a(phrase: str) -> str:
    """The phrase with its indefinite article."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _vary_case(text: str, rng: np.random.Generator) -> str:
    """lower case, Sentence case or UPPER CASE, as people type short labels."""
    return _pick_weighted((text, _capitalize(text), text.upper()), (0.4, 0.45, 0.15), rng)


def _join_list(parts: list[str], rng: np.random.Generator) -> str:
    """'a, b and c', 'a, b, c' or 'a; b; c'."""
    if len(parts) == 1:
        return parts[0]
    style = _pick(("and", "comma", "semicolon"), rng)
    if style == "and":
        return ", ".join(parts[:-1]) + " and " + parts[-1]
    return (", " if style == "comma" else "; ").join(parts)


# ---------------------------------------------------------------------------------------
# Style captions


@dataclass(frozen=True)
class _Subject:
    """How sentences refer to the speaker: named ("the woman", "she") or generic."""

    word: str | None  # the speaker's word in this caption; None when the caption names no one
    pronoun: str | None = None
    possessive: str | None = None


def _subject_for(style: StyleControls, named: bool, rng: np.random.Generator) -> _Subject:
    if not named:
        return _Subject(None)
    word = _pick(_SPEAKER_WORDS[style.speaker], rng)
    if style.speaker in SPEAKERS_MALE:
        return _Subject(word, "he", "his")
    if style.speaker in SPEAKERS_FEMALE:
        return _Subject(word, "she", "her")
    return _Subject(word)


def _subject_slots(subject: _Subject, rng: np.random.Generator) -> dict[str, str]:
    if subject.word is None:
        noun = _pick(("the person", "the speaker"), rng)
        return {"s": noun, "n": noun, "poss": _pick(("the", "their", "the person's", "the speaker's"), rng)}
    noun = "the " + subject.word
    return {
        "s": _pick((noun, subject.pronoun or noun), rng),
        "n": noun,
        "poss": _pick(("the", subject.possessive or "their", noun + "'s"), rng),
    }


def _mentioned_attributes(style: StyleControls, rng: np.random.Generator) -> list[str]:
    """Which attributes this caption mentions, in the order it mentions them.

    Non-default levels always; defaults and the speaker by chance; never none at all,
    because an empty style caption means "unconditional".
    """
    mentioned = ["speaker"] if _chance(P_SPEAKER, rng) else []
    for attribute in STYLE_ATTRIBUTES:
        if getattr(style, attribute) != STYLE_DEFAULTS[attribute] or _chance(P_DEFAULT_MENTION, rng):
            mentioned.append(attribute)
    if not mentioned:
        mentioned.append(_pick(("speaker",) + STYLE_ATTRIBUTES, rng))
    return _shuffled(mentioned, rng)


def _noun_is(noun: str) -> str:
    return noun + (" are" if noun.endswith("s") else " is")


def _tempo_adverb(level: str, rng: np.random.Generator) -> str:
    """"slowly", or "at a slow pace"."""
    adverbs = _ADVERBS["tempo"][level]
    if adverbs and _chance(0.5, rng):
        return _pick(adverbs, rng)
    return "at " + _a(_pick(_ADJECTIVES["tempo"][level], rng)) + " " + _pick(_PACE_NOUNS, rng)


def _noun_phrase(attribute: str, level: str, rng: np.random.Generator) -> str:
    """A noun phrase for one attribute: "wide mouth movements", "a slow pace", "a still head"."""
    phrases = _NOUN_PHRASES.get(attribute, {}).get(level, ())
    if phrases and (attribute == "head" and level == "still" or _chance(0.3, rng)):
        return _pick(phrases, rng)
    adjective_noun = _pick(_ADJECTIVES[attribute][level], rng) + " " + _pick(_NOUNS[attribute], rng)
    return _a(adjective_noun) if attribute in ("tempo", "tone") else adjective_noun


def _terse_phrase(attribute: str, level: str, rng: np.random.Generator) -> str:
    """A list item: "woman", "wide mouth", "still head", "speaks slowly", "cheerful"."""
    if attribute == "speaker":
        word = _pick(_SPEAKER_WORDS[level], rng)
        return _a(word) if _chance(0.25, rng) else word
    phrases = _NOUN_PHRASES.get(attribute, {}).get(level, ())
    if phrases and (attribute == "head" and level == "still" or _chance(0.3, rng)):
        return _strip_article(_pick(phrases, rng))
    adjective = _pick(_ADJECTIVES[attribute][level], rng)
    if attribute == "tempo" and _chance(0.25, rng):
        return _pick(("speaks ", "talks "), rng) + _tempo_adverb(level, rng)
    if attribute == "tone" and _chance(0.4, rng):
        return _pick(("", "sounds "), rng) + adjective
    return adjective + " " + _pick(_TERSE_NOUNS[attribute], rng)


def _attribute_sentence(attribute: str, level: str, subject: _Subject, rng: np.random.Generator) -> str:
    """One lower-case sentence (no full stop) about one attribute."""
    if _chance(P_FRAGMENT, rng):
        return _noun_phrase(attribute, level, rng)
    template = _pick(_SENTENCES[attribute], rng)
    adjective = _pick(_ADJECTIVES[attribute][level], rng)
    noun = _pick(_NOUNS[attribute], rng)
    slots = _subject_slots(subject, rng)
    slots.update(adj=adjective, a_adj=_a(adjective), noun=noun, noun_is=_noun_is(noun))
    if "{np}" in template:
        slots["np"] = _noun_phrase(attribute, level, rng)
    if "{clause}" in template:
        slots["clause"] = _pick(_CLAUSES[attribute][level], rng)
    if "{adv}" in template:
        slots["adv"] = _tempo_adverb(level, rng)
    if "{pace}" in template:
        slots["pace"] = _pick(_PACE_NOUNS, rng)
    return template.format_map(slots)


def _speaker_opener(style: StyleControls, subject: _Subject, with_tone: bool, rng: np.random.Generator) -> str:
    """The sentence that introduces the speaker, optionally with the tone."""
    slots = {"a_spk": _a(subject.word), "the_spk": "the " + subject.word}
    if not with_tone:
        return _pick(_SPEAKER_OPENERS, rng).format_map(slots)
    slots["a_tone"] = _a(_pick(_ADJECTIVES["tone"][style.tone], rng))
    return _pick(_SPEAKER_TONE_OPENERS, rng).format_map(slots)


def _level(style: StyleControls, attribute: str) -> str:
    return getattr(style, attribute)


def _terse_caption(style: StyleControls, mentioned: list[str], rng: np.random.Generator) -> str:
    """"woman, wide mouth, lively head"."""
    text = _join_list([_terse_phrase(a, _level(style, a), rng) for a in mentioned], rng)
    return _capitalize(text) if _chance(0.5, rng) else text


def _with_caption(style: StyleControls, mentioned: list[str], rng: np.random.Generator) -> str:
    """"A woman speaking with wide mouth movements, a still head and a cheerful tone."."""
    named = "speaker" in mentioned
    spk = _a(_pick(_SPEAKER_WORDS[style.speaker], rng)) if named else ""
    phrases = [_noun_phrase(a, _level(style, a), rng) for a in mentioned if a != "speaker"]
    if not phrases:
        text = spk + _pick(("", " speaking", " talking"), rng)
    else:
        opener = _pick(_WITH_OPENERS_NAMED if named else _WITH_OPENERS_UNNAMED, rng).format(a_spk=spk)
        text = opener + " " + _join_list(phrases, rng)
    return _capitalize(text) + _pick((".", ""), rng)


def _sentences_caption(style: StyleControls, mentioned: list[str], rng: np.random.Generator) -> str:
    """Several sentences in the manner of the paper's Appendix F."""
    subject = _subject_for(style, "speaker" in mentioned, rng)
    rest = [a for a in mentioned if a != "speaker"]
    sentences = []
    if subject.word is not None:
        with_tone = "tone" in rest and _chance(P_TONE_IN_OPENER, rng)
        if with_tone:
            rest.remove("tone")
        sentences.append(_speaker_opener(style, subject, with_tone, rng))
    sentences += [_attribute_sentence(a, _level(style, a), subject, rng) for a in rest]
    return " ".join(_capitalize(s) + "." for s in sentences)


_STYLE_RENDERERS = {"terse": _terse_caption, "with": _with_caption, "sentences": _sentences_caption}


def style_caption(style: StyleControls, rng: np.random.Generator) -> str:
    """A non-empty caption for the style controls, drawn from `rng`."""
    mentioned = _mentioned_attributes(style, rng)
    form = _pick_weighted(_STYLE_FORMS, _STYLE_FORM_WEIGHTS, rng)
    return _STYLE_RENDERERS[form](style, mentioned, rng)


# ---------------------------------------------------------------------------------------
# Emotion captions


def _allowed(groups: dict[str, tuple[str, ...]], level: str) -> tuple[str, ...]:
    """The words usable at this intensity: the neutral-strength ones and that level's own."""
    return groups["any"] + groups.get(level, ())


def _intensity_adverb_needed(word: str, level: str, rng: np.random.Generator) -> bool:
    if word in IMPLIED_INTENSITY:
        return _chance(P_IMPLIED_WORD, rng)
    return level != DEFAULT_INTENSITY or _chance(P_MEDIUM_WORD, rng)


def _adjective_phrase(label: str, level: str, rng: np.random.Generator) -> str:
    """"very sad", "furious", "sad" (medium)."""
    adjective = _pick(_allowed(_EMOTION_ADJECTIVES[label], level), rng)
    if _intensity_adverb_needed(adjective, level, rng):
        return _pick(_INTENSITY_ADVERBS[level], rng) + " " + adjective
    return adjective


def _emotion_noun_phrase(label: str, level: str, rng: np.random.Generator) -> str:
    """"strong anger", "a hint of fear", "anger" (medium)."""
    noun = _pick(_allowed(_EMOTION_NOUNS[label], level), rng)
    if _intensity_adverb_needed(noun, level, rng):
        return _pick(_INTENSITY_ADJECTIVES[level] + _INTENSITY_QUANTITIES[level], rng) + " " + noun
    return noun


def _display_phrase(label: str, level: str, rng: np.random.Generator) -> str:
    """"a slight smile of happiness", "an intense look of fear", "a look of anger" (medium)."""
    noun = _pick(_allowed(_EMOTION_NOUNS[label], level), rng)
    display = _pick(_DISPLAYS + _LABEL_DISPLAYS[label], rng)
    if _intensity_adverb_needed(noun, level, rng):
        display = _pick(_INTENSITY_ADJECTIVES[level], rng) + " " + display
    return _a(display) + " of " + noun


def _bare_emotion(label: str, level: str, rng: np.random.Generator) -> str | None:
    """The label or a synonym alone; None when that would misstate the intensity."""
    if level == DEFAULT_INTENSITY:
        words = (label,) * 4 + _EMOTION_ADJECTIVES[label]["any"] + _EMOTION_NOUNS[label]["any"]
    else:
        words = _EMOTION_ADJECTIVES[label].get(level, ()) + _EMOTION_NOUNS[label].get(level, ())
    return _vary_case(_pick(words, rng), rng) if words else None


def _intensity_tag(label: str, level: str, rng: np.random.Generator) -> str:
    """"angry, high intensity", "Fear at low intensity"."""
    template = _pick(_INTENSITY_TAGS, rng)
    word = _pick((label,) + _allowed(_EMOTION_ADJECTIVES[label], level), rng)
    noun = _pick(_allowed(_EMOTION_NOUNS[label], level), rng)
    text = template.format(word=word, noun=noun, level=_pick(_INTENSITY_LEVEL_WORDS[level], rng))
    return _vary_case(text, rng) if _chance(0.5, rng) else _capitalize(text)


def _emotion_sentence(label: str, level: str, rng: np.random.Generator) -> str:
    """"The speaker sounds extremely frightened."."""
    template = _pick(_EMOTION_SENTENCES, rng)
    slots = {"subj": _pick(_EMOTION_SUBJECTS, rng), "verb": _pick(_EMOTION_VERBS, rng),
             "shows": _pick(_SHOW_VERBS, rng)}
    if "{adj_phrase}" in template:
        slots["adj_phrase"] = _adjective_phrase(label, level, rng)
    if "{noun_phrase}" in template:
        slots["noun_phrase"] = _emotion_noun_phrase(label, level, rng)
    if "{display_phrase}" in template:
        slots["display_phrase"] = _display_phrase(label, level, rng)
    return _capitalize(template.format_map(slots)) + "."


def _short_phrase(label: str, level: str, rng: np.random.Generator) -> str:
    """"strongly angry", "a hint of contempt", "Very sad"."""
    if _chance(0.6, rng):
        text = _adjective_phrase(label, level, rng)
    else:
        text = _emotion_noun_phrase(label, level, rng) if _chance(0.5, rng) else _display_phrase(label, level, rng)
    return _vary_case(text, rng)


def _neutral_caption(rng: np.random.Generator) -> str:
    """"Neutral", "calm", "The speaker shows no particular emotion."."""
    if _pick_weighted(("bare", "sentence"), _NEUTRAL_FORM_WEIGHTS, rng) == "bare":
        return _vary_case(_pick(("neutral",) * 4 + _NEUTRAL_BARE, rng), rng)
    template = _pick(_NEUTRAL_SENTENCES, rng)
    text = template.format(subj=_pick(_EMOTION_SUBJECTS, rng), verb=_pick(_EMOTION_VERBS, rng),
                           shows=_pick(_SHOW_VERBS, rng), neutral=_pick(_NEUTRAL_WORDS, rng))
    return _capitalize(text) + "."


def emotion_caption(emotion: EmotionControls, rng: np.random.Generator) -> str:
    """A non-empty caption for the emotion controls, drawn from `rng`."""
    if emotion.label == "neutral":
        return _neutral_caption(rng)
    label, level = emotion.label, emotion.intensity
    form = _pick_weighted(_EMOTION_FORMS, _EMOTION_FORM_WEIGHTS, rng)
    if form == "bare":
        bare = _bare_emotion(label, level, rng)
        if bare is not None:
            return bare
        form = "phrase"
    if form == "phrase":
        return _short_phrase(label, level, rng)
    if form == "tag":
        return _intensity_tag(label, level, rng)
    return _emotion_sentence(label, level, rng)


# ---------------------------------------------------------------------------------------
# Both captions of a segment


def render_captions(
    segment: ControlSegment,
    rng: np.random.Generator,
    p_empty_style: float = 0.1,
    p_empty_emotion: float = 0.1,
) -> tuple[str, str]:
    """(style caption, emotion caption) for a segment; "" means unconditional.

    Each caption is dropped independently (for classifier-free guidance), so both are
    empty with probability p_empty_style * p_empty_emotion.
    """
    for name, p in (("p_empty_style", p_empty_style), ("p_empty_emotion", p_empty_emotion)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {p}")
    style = "" if _chance(p_empty_style, rng) else style_caption(segment.style, rng)
    emotion = "" if _chance(p_empty_emotion, rng) else emotion_caption(segment.emotion, rng)
    return style, emotion


# ---------------------------------------------------------------------------------------
# Documentation: python -m model.data.captions --markdown


def random_segment(rng: np.random.Generator) -> ControlSegment:
    """Controls drawn uniformly from every vocabulary (for samples and tests)."""
    style = StyleControls(
        speaker=_pick(SPEAKERS, rng), mouth=_pick(tuple(MOUTH_GAIN), rng), head=_pick(tuple(HEAD_GAIN), rng),
        tempo=_pick(tuple(TEMPO_RATE), rng), tone=_pick(TONES, rng),
    )
    emotion = EmotionControls(label=_pick(EMOTIONS, rng), intensity=_pick(tuple(INTENSITY_WEIGHT), rng))
    return ControlSegment(start=0.0, style=style, emotion=emotion)


def _vocabulary_table() -> list[str]:
    lines = ["| attribute | level | default | words and phrases used |", "|---|---|---|---|"]
    for attribute, levels in VOCABULARY.items():
        for level, words in levels.items():
            default = level == {**STYLE_DEFAULTS, "intensity": DEFAULT_INTENSITY}.get(attribute)
            lines.append(f"| {attribute} | {level} | {'yes' if default else ''} | {', '.join(words)} |")
    return lines


def _held_out_table() -> list[str]:
    lines = ["| attribute | level | never generated |", "|---|---|---|"]
    for attribute, levels in HELD_OUT_WORDS.items():
        for level, words in levels.items():
            lines.append(f"| {attribute} | {level} | {', '.join(words)} |")
    return lines


def _samples_table(seed: int, count: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = ["| controls | style caption | emotion caption |", "|---|---|---|"]
    for _ in range(count):
        segment = random_segment(rng)
        style, emotion = render_captions(segment, rng)
        s, e = segment.style, segment.emotion
        controls = f"{s.speaker}; mouth {s.mouth}; head {s.head}; tempo {s.tempo}; tone {s.tone}; "
        controls += f"{e.label} {e.intensity}"
        # Captions never contain "|" (HELD_OUT_SYNTAX), so they need no escaping in a table.
        lines.append(f"| {controls} | {style or '*(empty)*'} | {emotion or '*(empty)*'} |")
    return lines


def markdown(seed: int = 0, samples: int = 20) -> str:
    """The generated part of docs/captions.md: vocabulary, implied intensities, held-out words, samples."""
    implied = ", ".join(f"{word} ({level})" for word, level in IMPLIED_INTENSITY.items())
    parts = (
        ["### Vocabulary (`VOCABULARY`)", ""] + _vocabulary_table()
        + ["", "### Emotion words that carry their own intensity (`IMPLIED_INTENSITY`)", "", implied]
        + ["", "### Held out (`HELD_OUT_WORDS`)", ""] + _held_out_table()
        + ["", f"### Samples (`render_captions`, seed {seed}, controls drawn uniformly)", ""]
        + _samples_table(seed, samples)
    )
    return "\n".join(parts) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m model.data.captions", description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the generated part of docs/captions.md")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(args.seed, args.samples), end="")
        return
    rng = np.random.default_rng(args.seed)
    for _ in range(args.samples):
        segment = random_segment(rng)
        print(render_captions(segment, rng))


if __name__ == "__main__":
    main()
