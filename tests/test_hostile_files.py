"""Every file reader against hostile and broken files (issue 20 items 1, 4, 6; issue 14 "Readers").

Each case got a clear `BadInput`-derived error (never a crash, a hang, code run or a
memory blow-up) only after the readers were hardened; before, several killed the process
(segfault), so those are read in a subprocess here. Memory is checked with tracemalloc
(numpy reports its allocations to it): a refused file must be refused before its
declared sizes are allocated.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import hostile_files as hostile
from flame_fixtures import FLAME_KEYS, make_synthetic_flame, write_flame_npz
from model.core import safe_pickle
from model.core.errors import BadInput
from model.core.flame_import import import_flame, load_masks, load_shape_coefficients
from model.core.head_model import HeadModel, HeadModelError
from model.core.safe_pickle import UnsafePickleError, load_restricted_pickle

REPO_ROOT = Path(__file__).resolve().parents[1]

_READ_IN_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from model.core.errors import BadInput
from model.core.flame_import import import_flame
from model.core.safe_pickle import load_restricted_pickle
reader = {"pickle": load_restricted_pickle, "flame": import_flame}[sys.argv[2]]
try:
    reader(sys.argv[3])
    print(json.dumps({"error": None}))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc), "bad_input": isinstance(exc, BadInput)}))
"""


def read_in_child(path: Path, reader: str = "pickle") -> dict:
    """Read ``path`` in a fresh interpreter (a segfault there fails the test, not the run)."""
    result = subprocess.run([sys.executable, "-c", _READ_IN_CHILD, str(REPO_ROOT), reader, str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"the reader died with status {result.returncode}:\n{result.stderr[-2000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def peak_bytes(function, *args) -> tuple[BaseException | None, int]:
    """(the exception ``function(*args)`` raised or None, peak traced bytes while it ran)."""
    tracemalloc.start()
    try:
        function(*args)
        error = None
    except BaseException as exc:  # noqa: BLE001 - returned to the test, which checks its type
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, peak


# ------------------------------------------------------------------ pickles
@pytest.mark.parametrize("reader, build, message", [
    ("pickle", lambda: hostile.RECONSTRUCT_OBJECT_SEGFAULT, "Python-object array"),  # issue 20 item 1(a)
    ("flame", hostile.object_buffer_flame, "raw bytes"),  # issue 20 item 1(b)
    ("pickle", hostile.deep_tuple_key, "dict key"),  # hashing a 200k-deep tuple overflowed the C stack
])
def test_pickles_that_crashed_the_reader_are_refused(tmp_path, reader, build, message):
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(build())
    outcome = read_in_child(path, reader)
    assert outcome["error"] in ("UnsafePickleError", "HeadModelError") and outcome["bad_input"], outcome
    assert message in outcome["message"] and "Traceback" not in outcome["message"]


@pytest.mark.parametrize("name, error, message", [
    ("object_field_struct", UnsafePickleError, "structured numpy dtype"),  # the field read a file-given pointer
    ("field_offset_out_of_range", UnsafePickleError, "structured numpy dtype"),  # read 1 MB past the item
    ("deep_list", HeadModelError, "nested more than"),
    ("huge_bytearray", HeadModelError, "longer than the file"),
    ("huge_binbytes8", HeadModelError, "truncated"),
    ("out_of_band_buffer", UnsafePickleError, "out-of-band"),
    ("nested_global", UnsafePickleError, "numpy.ndarray.__new__"),
    ("copyreg_newobj", UnsafePickleError, "__newobj__"),
    ("reduce_ex_payload", UnsafePickleError, "getattr"),
    ("bytes_constructor_bomb", UnsafePickleError, "bytes()"),
    ("build_on_function", UnsafePickleError, "set the attributes of a function"),
    ("repeated_array_data", HeadModelError, "more array data"),
])
def test_hostile_pickles_are_refused_with_a_clear_error(name, error, message):
    data = hostile.HOSTILE_PICKLES[name]()
    caught, peak = peak_bytes(load_restricted_pickle, data)
    assert isinstance(caught, error) and isinstance(caught, BadInput), repr(caught)
    assert message in str(caught)
    assert peak < 64 * 2**20 + 2 * len(data), f"{peak / 2**20:.0f} MB traced while refusing it"


def test_a_refused_build_leaves_the_loader_as_it_was():
    """BUILD on an allowed function once set its __defaults__ for every later load."""
    defaults = safe_pickle._latin1_encode.__defaults__
    with pytest.raises(UnsafePickleError):
        load_restricted_pickle(hostile.build_on_function())
    assert safe_pickle._latin1_encode.__defaults__ == defaults == ("utf-8", "strict")


def test_sparse_indptr_bomb_is_refused_before_allocating(tmp_path):
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(hostile.indptr_bomb(2**40))  # np.repeat once asked for 8 TiB (MemoryError escaped)
    caught, peak = peak_bytes(import_flame, path)
    assert isinstance(caught, HeadModelError) and "indptr" in str(caught), repr(caught)
    assert peak < 400 * 2**20


def test_sparse_matrices_with_inconsistent_parts_are_named():
    def sparse(**state):
        base = {"_shape": (2, 3), "data": np.ones(2), "indices": np.array([0, 2], np.int32),
                "indptr": np.array([0, 1, 2], np.int32)}
        base.update(state)
        return load_restricted_pickle(hostile.py2_pickle(hostile.Py2Instance("scipy.sparse.csr", "csr_matrix", base)))

    np.testing.assert_array_equal(sparse().to_array(), [[1, 0, 0], [0, 0, 1]])
    for state, message in [({"indices": np.array([0, 7], np.int32)}, "outside its shape"),
                           ({"indptr": np.array([0, 2, 1], np.int32)}, "indptr"),
                           ({"data": np.ones(3)}, "3 values"),
                           ({"_shape": (2,)}, "shape"),
                           ({"data": "text"}, "not a 1-D array")]:
        with pytest.raises(HeadModelError, match=message):
            sparse(**state).to_array()


def test_well_formed_pickles_still_load():
    for name, data in hostile.plain_pickles().items():
        loaded = load_restricted_pickle(data)
        if name.startswith("plain"):
            np.testing.assert_array_equal(loaded["f"], np.ones((2, 2)))
            assert loaded["f"].flags.f_contiguous and loaded["e"].shape == (0,) and loaded["b"] == np.float32(1.5)
            assert loaded["a"].flags.writeable  # a copy, not a view of the file's bytes
        else:
            np.testing.assert_array_equal(loaded["csr"].to_array(), [[0, 2, 0], [1, 0, 3]])
            np.testing.assert_array_equal(loaded["ch"].to_array(), np.ones((2, 2)))


def test_big_endian_and_text_arrays_load():
    value = {"big": np.arange(4, dtype=">f8"), "text": np.array(["ab", "c"]), "raw": np.array([b"xy"])}
    for protocol in (2, 4, 5):
        loaded = load_restricted_pickle(__import__("pickle").dumps(value, protocol=protocol))
        for key, array in value.items():
            np.testing.assert_array_equal(loaded[key], array)
            assert loaded[key].dtype == array.dtype


def test_opcode_limit(monkeypatch):
    monkeypatch.setattr(safe_pickle, "MAX_OPCODES", 1000)
    with pytest.raises(HeadModelError, match="more than 1,000 pickle instructions"):
        load_restricted_pickle(b"\x80\x02]" + b"Na" * 1000 + b".")
