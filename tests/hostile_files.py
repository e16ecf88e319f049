"""Hostile and broken files for the readers' tests and the fuzzers' seed corpus.

Each builder returns the file's bytes (pickles written opcode by opcode where no pickler
would write them). Several of these crashed the process that read them before the
readers were hardened (issue 20): tests open those in a subprocess.
"""
from __future__ import annotations

import base64
import io
import json
import pickle
import struct
import zipfile

import numpy as np

from flame_fixtures import FLAME_KEYS, Py2Call, Py2Global, Py2Instance, Py2Raw, make_synthetic_flame, py2_opcodes, \
    py2_pickle

# Issue 20 item 1(a): numpy.core.multiarray._reconstruct with an object dtype whose flags say
# "no objects" and a list shorter than the declared shape; segfaulted load_restricted_pickle.
RECONSTRUCT_OBJECT_SEGFAULT = base64.b64decode(
    "gAJjbnVtcHkuY29yZS5tdWx0aWFycmF5Cl9yZWNvbnN0cnVjdAooY251bXB5Cm5kYXJyYXkKKEsAdEIBAAAAYnRSKEsBKEvrdGNudW1weQpkdHlwZQoo"
    "jAJPOImIdFIoSwOMAXxOTk5K/////0r/////Sz90YoldKGNfX2J1aWx0aW5fXwpzZXQKKVJldGIu"
)


def binbytes(data: bytes) -> Py2Raw:
    """A Python 3 ``bytes`` value (BINBYTES), which py2_pickle's str would not give."""
    return Py2Raw(b"B" + struct.pack("<I", len(data)) + data)


def dtype_opcodes(typestr: str, state: tuple) -> Py2Raw:
    """``numpy.dtype(typestr, False, True)`` then BUILD with ``state`` (numpy's own layout:
    version, byte order, subarray, names, fields, itemsize, alignment, flags)."""
    return Py2Raw(py2_opcodes(Py2Call("numpy", "dtype", (typestr, False, True))) + py2_opcodes(state) + b"b")


def reconstructed_array(dtype: Py2Raw, shape: tuple, data) -> Py2Raw:
    """``_reconstruct(ndarray, (0,), b'b')`` then BUILD with (1, shape, dtype, False, data)."""
    new = Py2Call("numpy.core.multiarray", "_reconstruct", (Py2Global("numpy", "ndarray"), (0,), "b"))
    return Py2Raw(py2_opcodes(new) + py2_opcodes((1, shape, dtype, False, data)) + b"b")


def _flame_with(**replace) -> bytes:
    """A small FLAME-2020-style pickle (800 vertices) with some keys replaced."""
    flame = make_synthetic_flame(800, 100)
    model = {k: flame[k] for k in FLAME_KEYS}
    model.update(replace)
    return py2_pickle(model)


def csc(state: dict) -> Py2Instance:
    return Py2Instance("scipy.sparse.csc", "csc_matrix", state, newobj=True)


def object_buffer_flame() -> bytes:
    """Issue 20 item 1(b): a FLAME-2023-style file whose J_regressor csc data is
    ``numpy.ndarray((1,), 'O', buffer=8 bytes)``: an object array over a file-supplied pointer."""
    evil = Py2Call("numpy", "ndarray", ((1,), "O", binbytes(b"\x41" * 8)))
    return _flame_with(J_regressor=csc({"_shape": (5, 800), "data": evil, "indices": np.zeros(1, np.int32),
                                        "indptr": np.zeros(801, np.int32)}))


def object_field_struct() -> bytes:
    """A structured dtype whose only field is an object pointer, flags saying "no objects"."""
    fields = {"a": (Py2Raw(dtype_opcodes("O8", (3, "|", None, None, None, -1, -1, 0)).opcodes), 0)}
    dtype = dtype_opcodes("V8", (3, "|", None, ("a",), fields, 8, 1, 0))
    return py2_pickle({"x": reconstructed_array(dtype, (1,), binbytes(b"\x41" * 8))})


def field_offset_out_of_range() -> bytes:
    """A structured dtype whose float field lies 1 MB past its 8-byte item."""
    fields = {"a": (Py2Raw(dtype_opcodes("f8", (3, "<", None, None, None, -1, -1, 0)).opcodes), 1 << 20)}
    dtype = dtype_opcodes("V8", (3, "|", None, ("a",), fields, 8, 1, 0))
    return py2_pickle({"x": reconstructed_array(dtype, (1,), binbytes(b"\0" * 8))})


def indptr_bomb(declared: int = 2**40) -> bytes:
    """A csc J_regressor whose indptr claims ``declared`` entries in its first column
    (np.repeat of that many int64 before the shape was checked)."""
    indptr = np.zeros(801, np.int64)
    indptr[1:] = declared
    return _flame_with(J_regressor=csc({"_shape": (5, 800), "data": np.ones(1), "indices": np.zeros(1, np.int32),
                                        "indptr": indptr}))


def repeated_array_data(times: int = 64, size: int = 1 << 20) -> bytes:
    """One ``size``-byte string used as the data of ``times`` arrays via the memo: a small
    file that asks for ``times`` x ``size`` bytes of arrays."""
    dtype = dtype_opcodes("u1", (3, "|", None, None, None, -1, -1, 0))
    first = reconstructed_array(dtype, (size,), binbytes(b"\x07" * size)).opcodes
    # memoise the bytes: rebuild the first array's opcodes with a PUT after the BINBYTES
    data_op = b"B" + struct.pack("<I", size) + b"\x07" * size
    first = first.replace(data_op, data_op + b"q\x01", 1)
    again = reconstructed_array(dtype, (size,), Py2Raw(b"h\x01")).opcodes
    return b"\x80\x02]q\x00(" + first + again * (times - 1) + b"e."


def deep_list(depth: int = 100_000) -> bytes:
    """A list nested ``depth`` deep (EMPTY_LIST, APPEND)."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def deep_tuple_key(depth: int = 200_000) -> bytes:
    """A dict whose key is a tuple nested ``depth`` deep: hashing it recurses in C."""
    return b"\x80\x02}N" + b"\x85" * depth + b"Ns."


def huge_bytearray() -> bytes:
    """BYTEARRAY8 declaring 2**40 bytes with none following."""
    return b"\x80\x05\x96" + struct.pack("<Q", 2**40) + b"."


def huge_binbytes8() -> bytes:
    return b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b"."


def out_of_band_buffer() -> bytes:
    """Protocol 5 NEXT_BUFFER: data the caller would have to hand in separately."""
    return b"\x80\x05\x97."


def nested_global(module: str = "numpy", name: str = "ndarray.__new__") -> bytes:
    """Protocol 4 STACK_GLOBAL with a dotted (attribute of attribute) name."""
    text = lambda s: b"\x8c" + bytes([len(s)]) + s.encode()
    return b"\x80\x04" + text(module) + text(name) + b"\x93."


def copyreg_newobj() -> bytes:
    """copyreg.__newobj__(os._wrap_close...) style: a copyreg helper beyond _reconstructor."""
    return py2_pickle(Py2Call("copy_reg", "__newobj__", (Py2Global("posix", "system"), "true")))


def reduce_ex_payload() -> bytes:
    """What an object's __reduce_ex__ returning (getattr, (builtins, 'eval')) writes."""
    return py2_pickle(Py2Call("__builtin__", "getattr", (Py2Global("__builtin__", "__builtins__"), "eval")))


def bytes_constructor_bomb() -> bytes:
    """``__builtin__.bytes(2**40)``: the name protocol-2 pickles use for b'' asked to allocate."""
    return py2_pickle(Py2Call("__builtin__", "bytes", (2**40,)))


def build_on_function() -> bytes:
    """BUILD on an allowed function: would set its attributes (slot state) for every later load."""
    return b"\x80\x02c_codecs\nencode\nN}U\x0c__defaults__)s\x86b."


# ------------------------------------------------------------------------- .npz
def npy_header(shape: tuple, descr: str = "<f8", fortran: bool = False) -> bytes:
    """A .npy version 1.0 header for an array that is not there."""
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def npz_bytes(members: dict[str, bytes], compress: bool = True) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def flame_npz_claiming(shape: tuple, key: str = "shapedirs") -> bytes:
    """A FLAME .npz whose ``key`` member declares ``shape`` float64 but holds 64 bytes."""
    flame = make_synthetic_flame(800, 100)
    members = {f"{k}.npy": npy_bytes(flame[k]) for k in FLAME_KEYS if k != key}
    members[f"{key}.npy"] = npy_header(shape) + b"\0" * 64
    return npz_bytes(members)


def meta_npz(good: bytes, meta) -> bytes:
    """A head-model file (``good``'s bytes) with its meta member replaced by ``meta``
    (a JSON-able value, or raw text)."""
    text = meta if isinstance(meta, str) else json.dumps(meta)
    with zipfile.ZipFile(io.BytesIO(good)) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members["meta.npy"] = npy_bytes(np.array(text))
    return npz_bytes(members, compress=False)


# Pickles that are refused (the seed corpus of the unpickler fuzzer takes them too).
HOSTILE_PICKLES = {
    "reconstruct_object_segfault": lambda: RECONSTRUCT_OBJECT_SEGFAULT,
    "object_field_struct": object_field_struct,
    "field_offset_out_of_range": field_offset_out_of_range,
    "deep_list": lambda: deep_list(100_000),
    "deep_tuple_key": lambda: deep_tuple_key(200_000),
    "huge_bytearray": huge_bytearray,
    "huge_binbytes8": huge_binbytes8,
    "out_of_band_buffer": out_of_band_buffer,
    "nested_global": nested_global,
    "copyreg_newobj": copyreg_newobj,
    "reduce_ex_payload": reduce_ex_payload,
    "bytes_constructor_bomb": bytes_constructor_bomb,
    "build_on_function": build_on_function,
    "repeated_array_data": repeated_array_data,
}


def plain_pickles() -> dict[str, bytes]:
    """Small well-formed pickles of arrays in every protocol (fuzzer seeds)."""
    value = {"a": np.arange(6.0).reshape(2, 3), "b": np.float32(1.5), "c": np.array([1, 2], np.uint8),
             "e": np.zeros(0), "s": {"x"}, "f": np.asfortranarray(np.ones((2, 2), np.int32))}
    seeds = {f"plain_p{p}": pickle.dumps(value, protocol=p) for p in range(pickle.HIGHEST_PROTOCOL + 1)}
    dense = np.array([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]])
    rows, cols = np.nonzero(dense)
    seeds["sparse_chumpy_py2"] = py2_pickle({
        "csr": Py2Instance("scipy.sparse.csr", "csr_matrix", {"_shape": (2, 3), "data": dense[rows, cols],
                                                             "indices": cols.astype(np.int32),
                                                             "indptr": np.array([0, 1, 3], np.int32)}),
        "ch": Py2Instance("chumpy.ch", "Ch", {"x": np.ones((2, 2)), "_dirty_vars": Py2Call("__builtin__", "set", ([],))}),
    })
    return seeds
