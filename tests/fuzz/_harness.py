"""What every CapTalk fuzz harness shares: the repository on the path, atheris set up,
and coverage for the modules under test (and the stdlib parts they drive)."""
from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

import atheris  # noqa: E402


def run(test_one_input, instrument: tuple = ()) -> None:
    """Fuzz ``test_one_input(bytes)`` with libFuzzer's command line (sys.argv).

    instrument: already-imported modules whose functions should report coverage too
    (the pure-Python pickle, json...), besides everything imported under `model`.
    """
    for module in instrument:
        for value in vars(module).values():
            if callable(value) and getattr(value, "__module__", None) == module.__name__:
                _instrument(value)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def _instrument(value) -> None:
    if isinstance(value, type):
        for attribute in vars(value).values():
            if hasattr(attribute, "__code__"):
                atheris.instrument_func(attribute)
    elif hasattr(value, "__code__"):
        atheris.instrument_func(value)
