"""The sentences the voices speak (`sentences.txt`: original English, one per line, 5-25
words, numbers spelled out, every word in the CMU dictionary so that forced alignment
works on them), and their fixed train/val/test split.
"""
from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

SENTENCES_FILE = Path(__file__).with_name("sentences.txt")
SPLITS = ("train", "val", "test")
_SPLIT_PERCENT = (80, 10, 10)


@functools.lru_cache(maxsize=1)
def _load() -> tuple[str, ...]:
    lines = SENTENCES_FILE.read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip())


def load_sentences() -> list[str]:
    """Every sentence of `sentences.txt`, in file order."""
    return list(_load())


def sentences_in(split: str) -> list[str]:
    """The sentences of one split ("train", "val" or "test"), in file order."""
    if split not in SPLITS:
        raise ValueError(f"split '{split}' is not one of {', '.join(SPLITS)}")
    return [sentence for sentence in _load() if sentence_split(sentence) == split]


def sentence_split(text: str) -> str:
    """"train", "val" or "test" for ``text``, about 80/10/10.

    Decided by a hash of the normalised sentence (lower case, letters and digits only),
    so it never changes between runs or machines, and versions of a sentence that differ
    only in case, spacing or punctuation land in the same split.
    """
    digest = hashlib.sha256(normalise(text).encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") % 100
    if bucket < _SPLIT_PERCENT[0]:
        return "train"
    return "val" if bucket < _SPLIT_PERCENT[0] + _SPLIT_PERCENT[1] else "test"


def normalise(text: str) -> str:
    """``text`` in lower case with only letters, digits and single spaces."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())
