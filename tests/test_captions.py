"""Captions: every non-default control is said, nothing contradicts, phrasing varies, the
reserve stays unused, and a seed fixes the output. Meaning is read back through
VOCABULARY, the same table the docs print."""
from __future__ import annotations

import itertools
import re
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from model.data.captions import (
    DEFAULT_INTENSITY,
    HELD_OUT_SYNTAX,
    HELD_OUT_WORDS,
    IMPLIED_INTENSITY,
    STYLE_ATTRIBUTES,
    STYLE_DEFAULTS,
    VOCABULARY,
    emotion_caption,
    markdown,
    random_segment,
    render_captions,
    style_caption,
)
from model.data.controls import (
    EMOTIONS,
    HEAD_GAIN,
    INTENSITY_WEIGHT,
    MOUTH_GAIN,
    SPEAKERS,
    TEMPO_RATE,
    TONES,
    ControlSegment,
    EmotionControls,
    StyleControls,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
LEVELS = {"mouth": MOUTH_GAIN, "head": HEAD_GAIN, "tempo": TEMPO_RATE, "tone": TONES}


@lru_cache(maxsize=None)
def _pattern(term: str) -> re.Pattern:
    # A hyphen joins words: "wide-open" is its own term, not "wide".
    return re.compile(rf"(?<![\w-]){re.escape(term)}(?![\w-])")


def has_term(text: str, term: str) -> bool:
    return _pattern(term).search(text.lower()) is not None


def levels_mentioned(text: str, attribute: str) -> set[str]:
    """The levels of `attribute` whose words occur in `text`."""
    return {level for level, words in VOCABULARY[attribute].items() if any(has_term(text, w) for w in words)}


def intensities_mentioned(text: str) -> set[str]:
    """Intensity levels said by an intensity word or by a word that implies one."""
    found = levels_mentioned(text, "intensity")
    return found | {level for word, level in IMPLIED_INTENSITY.items() if has_term(text, word)}


def random_segments(seed: int, count: int) -> list[ControlSegment]:
    rng = np.random.default_rng(seed)
    return [random_segment(rng) for _ in range(count)]


@pytest.fixture(scope="module")
def corpus() -> list[tuple[ControlSegment, str, str]]:
    """20,000 random segments with both captions (none dropped)."""
    rng = np.random.default_rng(2024)
    segments = random_segments(7, 20_000)
    return [(s, *render_captions(s, rng, p_empty_style=0.0, p_empty_emotion=0.0)) for s in segments]


# --- the vocabulary itself ------------------------------------------------------------


def test_vocabulary_covers_every_control_level():
    assert set(VOCABULARY["speaker"]) == set(SPEAKERS)
    for attribute in STYLE_ATTRIBUTES:
        assert set(VOCABULARY[attribute]) == set(LEVELS[attribute])
        assert STYLE_DEFAULTS[attribute] in LEVELS[attribute]
    assert set(VOCABULARY["emotion"]) == set(EMOTIONS)
    assert set(VOCABULARY["intensity"]) == set(INTENSITY_WEIGHT)
    assert DEFAULT_INTENSITY in INTENSITY_WEIGHT
    for levels in VOCABULARY.values():
        for words in levels.values():
            assert words and all(w == w.lower() and w.isascii() for w in words)


def _terms_by_owner(attributes) -> list[tuple[tuple[str, str], str]]:
    return [((a, level), w) for a in attributes for level, words in VOCABULARY[a].items() for w in words]


@pytest.mark.parametrize(
    "attributes",
    [("speaker",) + STYLE_ATTRIBUTES, ("emotion", "intensity")],
    ids=["style", "emotion"],
)
def test_each_word_has_one_meaning(attributes):
    """No word of one level occurs inside a word of another level or attribute.

    Speaker nouns may nest ("man" in "young man"): the speaker changes nothing visible.
    """
    terms = _terms_by_owner(attributes)
    clashes = [
        (owner_a, a, owner_b, b)
        for (owner_a, a), (owner_b, b) in itertools.permutations(terms, 2)
        if owner_a != owner_b and not (owner_a[0] == owner_b[0] == "speaker") and has_term(b, a)
    ]
    assert not clashes


def test_implied_intensities_belong_to_the_emotion_vocabulary():
    emotion_words = {w for words in VOCABULARY["emotion"].values() for w in words}
    assert set(IMPLIED_INTENSITY) <= emotion_words
    assert set(IMPLIED_INTENSITY.values()) <= set(INTENSITY_WEIGHT) - {DEFAULT_INTENSITY}


def test_held_out_words_are_not_in_the_vocabulary():
    used = [w for levels in VOCABULARY.values() for words in levels.values() for w in words]
    held = [w for levels in HELD_OUT_WORDS.values() for words in levels.values() for w in words]
    assert not [(h, u) for h in held for u in used if has_term(u, h) or has_term(h, u)]
    for attribute, levels in HELD_OUT_WORDS.items():
        assert set(levels) <= set(VOCABULARY[attribute]) | {"any"}


# --- style captions -------------------------------------------------------------------


def test_non_default_levels_are_always_mentioned_and_never_contradicted(corpus):
    for segment, style, _ in corpus:
        for attribute in STYLE_ATTRIBUTES:
            level = getattr(segment.style, attribute)
            said = levels_mentioned(style, attribute)
            if level == STYLE_DEFAULTS[attribute]:
                assert said <= {level}, (style, attribute, level)
            else:
                assert said == {level}, (style, attribute, level)


def test_defaults_are_sometimes_said_and_sometimes_left_out():
    rng = np.random.default_rng(3)
    captions = [style_caption(StyleControls(), rng) for _ in range(2000)]
    for attribute in STYLE_ATTRIBUTES:
        share = np.mean([bool(levels_mentioned(c, attribute)) for c in captions])
        assert 0.25 < share < 0.6, (attribute, share)


def test_speaker_is_named_often_but_not_always():
    rng = np.random.default_rng(4)
    style = StyleControls(speaker="woman", mouth="wide")
    captions = [style_caption(style, rng) for _ in range(3000)]
    named = [any(has_term(c, w) for w in VOCABULARY["speaker"]["woman"]) for c in captions]
    assert 0.6 < np.mean(named) < 0.8


def test_style_captions_range_from_terse_lists_to_several_sentences(corpus):
    styles = [style for _, style, _ in corpus]
    terse = [s for s in styles if "." not in s and "," in s]
    long = [s for s in styles if s.count(". ") >= 3]
    assert len(terse) > 2000 and len(long) > 2000


@pytest.mark.parametrize(
    "style",
    [StyleControls(), StyleControls(speaker="older man", mouth="narrow", head="lively", tempo="fast", tone="serious")],
    ids=["defaults", "all-set"],
)
def test_style_captions_vary_for_fixed_controls(style):
    rng = np.random.default_rng(5)
    assert len({style_caption(style, rng) for _ in range(2000)}) >= 200


# --- emotion captions -----------------------------------------------------------------


@pytest.mark.parametrize("label", EMOTIONS)
@pytest.mark.parametrize("intensity", tuple(INTENSITY_WEIGHT))
def test_emotion_captions_vary_for_fixed_controls(label, intensity):
    rng = np.random.default_rng(6)
    emotion = EmotionControls(label, intensity)
    assert len({emotion_caption(emotion, rng) for _ in range(2000)}) >= 30


def test_emotion_captions_name_their_label_and_no_other(corpus):
    for segment, _, emotion in corpus:
        assert levels_mentioned(emotion, "emotion") == {segment.emotion.label}, (emotion, segment.emotion)


def test_intensity_words_match_the_level(corpus):
    for segment, _, emotion in corpus:
        said = intensities_mentioned(emotion)
        if segment.emotion.label == "neutral":
            assert not said, emotion
        elif segment.emotion.intensity == DEFAULT_INTENSITY:
            assert said <= {DEFAULT_INTENSITY}, emotion  # no word at all means medium
        else:
            assert said == {segment.emotion.intensity}, emotion


def test_emotion_forms_include_bare_labels_phrases_and_sentences(corpus):
    emotions = {emotion for _, _, emotion in corpus}
    for example in ("Happy", "happy", "HAPPY", "Neutral", "neutral"):
        assert example in emotions
    assert any(e.endswith(".") and e.count(" ") >= 3 for e in emotions)
    assert any(re.fullmatch(r"(very|extremely|strongly) \w+", e) for e in emotions)


# --- both captions --------------------------------------------------------------------


def test_many_distinct_captions_overall(corpus):
    assert len({style for _, style, _ in corpus}) > 15_000
    assert len({emotion for _, _, emotion in corpus}) > 3_000


def test_held_out_words_and_tag_syntax_are_never_generated(corpus):
    held = [w for levels in HELD_OUT_WORDS.values() for words in levels.values() for w in words]
    text = "\n".join(f"{style}\n{emotion}" for _, style, emotion in corpus)
    assert not [w for w in held if has_term(text, w)]
    assert not [mark for mark in HELD_OUT_SYNTAX if mark in text]


def test_captions_are_short_clean_ascii(corpus):
    for _, style, emotion in corpus:
        for caption in (style, emotion):
            assert 0 < len(caption) <= 1000
            assert caption.isascii() and caption.isprintable()
            assert caption == caption.strip() and "  " not in caption and ".." not in caption


def test_empty_shares_follow_the_probabilities():
    rng = np.random.default_rng(8)
    segments = random_segments(9, 5000)
    for p_style, p_emotion in ((0.1, 0.1), (0.3, 0.0), (1.0, 0.5)):
        pairs = [render_captions(s, rng, p_style, p_emotion) for s in segments]
        assert np.mean([style == "" for style, _ in pairs]) == pytest.approx(p_style, abs=0.025)
        assert np.mean([emotion == "" for _, emotion in pairs]) == pytest.approx(p_emotion, abs=0.025)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_probability_outside_zero_one_is_refused(p):
    segment = random_segments(0, 1)[0]
    with pytest.raises(ValueError, match="between 0 and 1"):
        render_captions(segment, np.random.default_rng(0), p_empty_style=p)


def test_same_seed_gives_same_captions():
    segments = random_segments(10, 500)

    def captions(seed):
        rng = np.random.default_rng(seed)
        return [render_captions(s, rng) for s in segments]

    assert captions(1) == captions(1)
    assert captions(1) != captions(2)


def test_rendering_is_fast():
    segments = random_segments(11, 20_000)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for segment in segments:
        render_captions(segment, rng)
    assert time.perf_counter() - start < 5.0  # about 0.5 s on a laptop core


# --- docs -----------------------------------------------------------------------------


def test_docs_show_the_current_generated_tables():
    printed = subprocess.run(
        [sys.executable, "-m", "model.data.captions", "--markdown"],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True,
    ).stdout
    assert printed == markdown()
    doc = (REPO_ROOT / "docs" / "captions.md").read_text(encoding="utf-8")
    assert printed in doc, "regenerate: python -m model.data.captions --markdown, paste into docs/captions.md"
