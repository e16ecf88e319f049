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
from model.core.head_model import HeadModel
reader = {"pickle": load_restricted_pickle, "flame": import_flame, "head": HeadModel.load}[sys.argv[2]]
try:
    reader(sys.argv[3])
    print(json.dumps({"error": None}))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc), "bad_input": isinstance(exc, BadInput)}))
"""


def read_in_child(path: Path, reader: str = "pickle") -> dict:
    """Read ``path`` in a fresh interpreter (a segfault there fails the test, not the run)."""
    try:
        result = subprocess.run([sys.executable, "-c", _READ_IN_CHILD, str(REPO_ROOT), reader, str(path)],
                                capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"reading {path.name} did not finish within 60 s (the reader hangs)")
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


# --------------------------------------------------------------------- .npz
@pytest.mark.parametrize("shape", [(10**6, 10**6), (800, 3, 200_000)])
def test_flame_npz_sizes_are_checked_before_inflating(tmp_path, shape):
    """A member's header declares a size its data does not have: numpy allocated it first
    (22.4 GiB from a 28 MB file in issue 20; a MemoryError escaped import_flame)."""
    path = tmp_path / "flame2023.npz"
    path.write_bytes(hostile.flame_npz_claiming(shape))
    caught, peak = peak_bytes(import_flame, path)
    assert isinstance(caught, HeadModelError) and "declares" in str(caught), repr(caught)
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MB traced"


def test_npz_over_the_size_limit_is_refused_before_inflating(tmp_path, monkeypatch):
    """The total of the declared sizes is checked before any member is inflated."""
    from model.core import flame_import

    path = write_flame_npz(tmp_path / "flame.npz")  # ~10 MB of arrays
    monkeypatch.setattr(flame_import, "MAX_PICKLE_BYTES", 1 << 20)
    caught, peak = peak_bytes(import_flame, path)
    assert isinstance(caught, HeadModelError) and "more than the 1 MB limit" in str(caught), repr(caught)
    assert peak < path.stat().st_size + 2 * 2**20  # the file's own bytes, no arrays


def test_head_model_arrays_are_checked_before_inflating(tmp_path):
    from test_head_model import tiny_head

    good = tiny_head().save(tmp_path / "good.npz").read_bytes()
    with __import__("zipfile").ZipFile(__import__("io").BytesIO(good)) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members["template.npy"] = hostile.npy_header((10**7, 10**5, 3), "<f4") + b"\0" * 36
    path = tmp_path / "bomb.npz"
    path.write_bytes(hostile.npz_bytes(members))
    caught, peak = peak_bytes(HeadModel.load, path)
    assert isinstance(caught, HeadModelError) and "declares" in str(caught), repr(caught)
    assert peak < 20 * 2**20


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "head.npz"
    os.mkfifo(fifo)
    outcome = read_in_child(fifo, "head")
    assert outcome["error"] == "HeadModelError" and "not a regular file" in outcome["message"]


@pytest.fixture
def good_head(tmp_path) -> bytes:
    from test_head_model import tiny_head

    return tiny_head().save(tmp_path / "good.npz").read_bytes()


def _meta(good: bytes, **changes) -> dict:
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(good)) as archive:
        meta = json.loads(str(np.load(io.BytesIO(archive.read("meta.npy")))))
    meta.update(changes)
    return meta


@pytest.mark.parametrize("meta, message", [
    ([1, 2], "not a JSON object"),  # issue 20 item 6: an AttributeError traceback before
    ("[" * 100_000 + "]" * 100_000, "not a JSON object"),  # RecursionError before
    ("not json", "not a JSON object"),
    ({"format": "captalk-head", "format_version": "1"}, "expected 'captalk-head' v1"),
    ("changes:expression_names=lift", "'expression_names' must be a list"),
    ("changes:joint_roles=[1]", "'joint_roles' must be an object"),
    ("changes:joint_names=[1, 2]", "'joint_names' must be a list of names"),
    ("changes:model_id=7", "'model_id' must be text"),
    ("changes:expression_range=[\"a\", 1]", "'expression_range'"),
    ("changes:expression_range=[1, 1e999]", "'expression_range'"),
])
def test_head_model_metadata_of_the_wrong_kind_is_named(tmp_path, good_head, meta, message):
    if isinstance(meta, str) and meta.startswith("changes:"):
        key, value = meta[len("changes:"):].split("=", 1)
        meta = _meta(good_head, **{key: json.loads(value) if value[:1] in "[{0123456789" else value})
    path = tmp_path / "bad.npz"
    path.write_bytes(hostile.meta_npz(good_head, meta))
    with pytest.raises(HeadModelError, match=message.replace("[", r"\[")):
        HeadModel.load(path)


@pytest.mark.parametrize("key, array, message", [
    ("template.npy", np.array([["a", "b", "c"]] * 3), "'template' must be an array of floats"),
    ("faces.npy", np.array([[0.0, 1.0, 2.0]]), "'faces' must be an array of integers"),
    ("region.lips.npy", np.array([0.5]), "region 'lips' must be an array of integers"),
    ("joint_parents.npy", np.zeros(0, np.int32), "'joint_parents' has shape"),
    ("lbs_weights.npy", np.ones((3, 2), np.float32), "rows must sum to 1"),
])
def test_head_model_arrays_of_the_wrong_kind_are_named(tmp_path, good_head, key, array, message):
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(good_head)) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members[key] = hostile.npy_bytes(array)
    path = tmp_path / "bad.npz"
    path.write_bytes(hostile.npz_bytes(members))
    with pytest.raises(HeadModelError, match=message):
        HeadModel.load(path)


def test_archives_that_are_not_array_files_are_refused(tmp_path):
    from model.core.safe_npz import ArrayFileError, read_npz

    cases = {
        "extra member": ({"a.npy": hostile.npy_bytes(np.zeros(2)), "evil.py": b"import os"}, "not an array"),
        "object array": ({"a.npy": hostile.npy_bytes(np.zeros(2)).replace(b"'<f8'", b"'|O' ")}, "Python-object"),
        "structured": ({"a.npy": hostile.npy_header((1,), "[('a', '<f8')]") + b"\0" * 8}, "dtype"),
        "format 3": ({"a.npy": b"\x93NUMPY\x03\x00" + b"\0" * 60}, "format 3.0"),
        "short data": ({"a.npy": hostile.npy_header((4,)) + b"\0" * 8}, "declares 32 bytes"),
        "negative shape": ({"a.npy": hostile.npy_header((-1,)) + b"\0" * 8}, "shape|damaged"),
        "huge header": ({"a.npy": b"\x93NUMPY\x02\x00" + (10**6).to_bytes(4, "little") + b" " * 10**6}, "damaged"),
    }
    for what, (members, message) in cases.items():
        with pytest.raises(ArrayFileError, match=message):
            read_npz(hostile.npz_bytes(members), name=what)
    with pytest.raises(ArrayFileError, match="not a regular file"):
        read_npz(tmp_path)


def test_shape_and_mask_files_are_read_safely(tmp_path):
    np.save(tmp_path / "betas.npy", np.array([1, "x"], dtype=object), allow_pickle=True)
    with pytest.raises(HeadModelError, match="Python-object"):
        load_shape_coefficients(tmp_path / "betas.npy", 300)
    (tmp_path / "big.txt").write_text("1.0\n" * 400_000)
    with pytest.raises(HeadModelError, match="larger than"):
        load_shape_coefficients(tmp_path / "big.txt", 300)
    np.savez(tmp_path / "masks.npz", **{k: np.array([0.5]) for k in ("lips", "forehead", "eye_region",
                                                                    "left_eyeball", "right_eyeball")})
    with pytest.raises(HeadModelError, match="dtype"):
        load_masks(tmp_path / "masks.npz", 10)


# ------------------------------------------------------------- motion files
def _motion_file(tmp_path, **arrays) -> Path:
    base = {"motion": np.zeros((4, 2), np.float32), "channels": np.array(["a", "b"]), "fps": np.float64(25.0),
            "meta": np.array("{}")}
    base.update(arrays)
    path = tmp_path / "motion.npz"
    with open(path, "wb") as handle:
        np.savez(handle, **base)
    return path


@pytest.mark.parametrize("arrays, message", [
    ({"fps": np.array([25.0, 30.0])}, "frame rate"),  # a TypeError traceback before
    ({"fps": np.float64(0.0)}, "frame rate"),
    ({"fps": np.float64(np.nan)}, "frame rate"),
    ({"meta": np.array("[1]")}, "not a JSON object"),
    ({"meta": np.array("[" * 100_000)}, "not a JSON object"),
    ({"channels": np.array([1, 2])}, "list of names"),
    ({"motion": np.array([["a", "b"]])}, "must be numbers"),
    ({"motion": hostile.npy_header((10**9, 2), "<f4")}, "declares"),
])
def test_motion_files_of_the_wrong_kind_are_named(tmp_path, arrays, message):
    from model.core.motion_file import MotionFileError, load_motion

    raw = {k: v for k, v in arrays.items() if isinstance(v, bytes)}
    path = _motion_file(tmp_path, **{k: v for k, v in arrays.items() if not isinstance(v, bytes)})
    if raw:
        import io
        import zipfile

        with zipfile.ZipFile(path) as archive:
            members = {info.filename: archive.read(info) for info in archive.infolist()}
        members.update({f"{k}.npy": v for k, v in raw.items()})
        path.write_bytes(hostile.npz_bytes(members))
    with pytest.raises(MotionFileError, match=message):
        load_motion(path)


# -------------------------------------------------------------- checkpoints
_LOAD_CHECKPOINTS_IN_CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))  # a crafted manifest must not get further
sys.path.insert(0, sys.argv[1])
from model.core.errors import CapTalkError
from model.generate import Generator
for folder in sys.argv[2:]:
    try:
        Generator.load(folder, device="cpu")
        print(json.dumps({"error": None}))
    except CapTalkError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc), "exit": exc.exit_code}))
"""


def checkpoint_copy(folder: Path) -> Path:
    import shutil

    folder.mkdir()
    for name in ("captalk.json", "codec.safetensors", "ar.safetensors"):
        shutil.copy(REPO_ROOT / "checkpoints" / "default" / name, folder / name)
    return folder


def _edit_manifest(folder: Path, edit) -> None:
    manifest = json.loads((folder / "captalk.json").read_text())
    (folder / "captalk.json").write_text(json.dumps(edit(manifest)))


CRAFTED_MANIFESTS = {  # edit, what the error says
    "a list": (lambda m: [m], "not a captalk-checkpoint manifest"),  # AttributeError before
    "format_version '1'": (lambda m: {**m, "format_version": "1"}, "format version '1'"),  # TypeError before
    "heads 0": (lambda m: {**m, "codec": {**m["codec"], "heads": 0}}, "heads must be an integer"),  # ZeroDivisionError
    "layers 10**6": (lambda m: {**m, "codec": {**m["codec"], "layers": 10**6}}, "layers must be an integer"),  # 7.7 GB
    "layers 60 width 2048": (lambda m: {**m, "ar": {**m["ar"], "layers": 60, "width": 2048}}, "at least"),  # ~12 GB
    "layers 2.5": (lambda m: {**m, "ar": {**m["ar"], "layers": 2.5}}, "layers must be an integer"),
    "channels 55": (lambda m: {**m, "channels": 55}, "'channels' must be a list"),  # TypeError in check_fits before
    "stats of text": (lambda m: {**m, "stats": {"mean": ["x"], "std": [1]}}, "inconsistent manifest"),
}


def test_crafted_manifests_are_refused_before_building_the_model(tmp_path):
    """One child process loads every crafted checkpoint (under a 6 GB address-space limit:
    before, some built multi-GB models)."""
    folders = []
    for index, (edit, _) in enumerate(CRAFTED_MANIFESTS.values()):
        folders.append(checkpoint_copy(tmp_path / f"ckpt{index}"))
        _edit_manifest(folders[-1], edit)
    try:
        result = subprocess.run([sys.executable, "-c", _LOAD_CHECKPOINTS_IN_CHILD, str(REPO_ROOT), *map(str, folders)],
                                capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    except subprocess.TimeoutExpired:
        pytest.fail("loading the checkpoints did not finish within 300 s")
    assert result.returncode == 0, f"status {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    outcomes = [json.loads(line) for line in result.stdout.strip().splitlines()[-len(folders):]]
    for (what, (_, message)), outcome in zip(CRAFTED_MANIFESTS.items(), outcomes):
        assert outcome["error"] == "CheckpointError" and outcome["exit"] == 2, (what, outcome)
        assert message in outcome["message"], (what, outcome)


def test_manifest_deep_nesting_and_size_are_refused(tmp_path):
    from model.core.checkpoint_manifest import CheckpointError, read_manifest

    folder = checkpoint_copy(tmp_path / "ckpt")
    (folder / "captalk.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match="RecursionError"):
        read_manifest(folder)
    (folder / "captalk.json").write_bytes(b"\xff\xfe")
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_manifest(folder)


@pytest.mark.parametrize("damage, message", [
    ("nan", "NaN or infinite"),  # loaded silently before: NaN motion
    ("int", "holds torch.int32"),  # converted silently before
    ("huge header", "cannot be read"),
])
def test_damaged_weights_are_refused(tmp_path, damage, message):
    import torch
    from safetensors.torch import load_file, save_file

    from model.checkpoint import load_weights
    from model.core.checkpoint_manifest import CheckpointError
    from model.codec.codec import CodecConfig, MotionCodec

    folder = checkpoint_copy(tmp_path / "ckpt")
    path = folder / "codec.safetensors"
    state = load_file(str(path))
    first = sorted(state)[0]
    if damage == "nan":
        state[first] = state[first].clone()
        state[first].view(-1)[0] = float("nan")
        save_file(state, str(path))
    elif damage == "int":
        state[first] = state[first].to(torch.int32)
        save_file(state, str(path))
    else:
        path.write_bytes((2**40).to_bytes(8, "little") + b"{}")
    config = CodecConfig.from_dict(json.loads((folder / "captalk.json").read_text())["codec"])
    with pytest.raises(CheckpointError, match=message):
        load_weights(folder, "codec", MotionCodec(config))
