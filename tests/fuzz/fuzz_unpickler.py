"""Fuzz the restricted unpickler (model.core.safe_pickle) and the FLAME reader on top of it.

Anything but a clean result or a `HeadModelError` (UnsafePickleError included) is a crash:
an exception escaping, a segfault, a hang (-timeout) or memory past -rss_limit_mb.

    .venv/bin/python tests/fuzz/fuzz_unpickler.py NEW_DIR tests/fuzz/corpus/unpickler -max_total_time=60
"""
import pickle

from _harness import atheris, run

with atheris.instrument_imports(include=["model"]):
    from model.core.flame_import import read_flame_arrays
    from model.core.head_model import HeadModelError
    from model.core.safe_pickle import as_array, load_restricted_pickle


def test_one_input(data: bytes) -> None:
    try:
        result = load_restricted_pickle(data)
    except HeadModelError:
        return
    values = result.values() if isinstance(result, dict) else [result]
    for value in values:
        try:
            as_array(value)
        except HeadModelError:
            pass
    try:
        read_flame_arrays(data, "fuzz.pkl")
    except HeadModelError:
        pass


if __name__ == "__main__":
    run(test_one_input, instrument=(pickle,))
