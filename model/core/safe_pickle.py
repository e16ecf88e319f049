"""Load FLAME-style pickles without letting them run code or touch memory they do not own.

A pickle is a small program: opening one with `pickle.load` may call any Python function
the file names (``os.system`` included), and even numpy's own array reconstruction can be
steered into reading file-supplied pointers (an object dtype whose flags say "no
objects", ``ndarray(shape, 'O', buffer=...)``, structured dtypes with object fields or
field offsets past the item). FLAME files (``generic_model.pkl``, ``flame2023.pkl``,
``FLAME_masks.pkl``) only need plain numeric arrays, and the old ones also name
``chumpy`` arrays and ``scipy.sparse`` matrices, neither of which CapTalk has (or needs).

`load_restricted_pickle` therefore runs the pickle with the pure-Python unpickler and its
own handlers for every opcode that creates or changes objects:

- names resolve only to a short list (`_NAMES`): numpy array, dtype and scalar
  reconstruction (``numpy.core`` and ``numpy._core`` spellings), ``copyreg._reconstructor``
  (only to create a stand-in), ``set`` / ``frozenset`` / ``object``, ``bytes()`` (empty
  only), ``_codecs.encode(text, 'latin1')``, every ``chumpy.*`` class (a `ChumpyStandIn`)
  and the ``scipy.sparse`` csc / csr / coo matrices (a `SparseStandIn`);
- numpy is never handed the file's dtype or array state: a dtype is rebuilt by us from its
  type string (numeric or text kinds only: no objects, no fields, no subarrays), an array
  from exactly ``prod(shape) * itemsize`` bytes of the file, copied;
- BUILD (set an object's state) works only on our stand-ins; persistent ids, extension
  codes and out-of-band buffers are refused; dict keys and set members must be plain
  values (hashing a deeply nested tuple recurses in C);
- limits: the file's size, its number of opcodes, the array bytes it builds (at most the
  file's size: array data is stored inline, so more means the file reuses data to
  exhaust memory) and how deeply the result nests.

Anything else raises `UnsafePickleError` (code or memory tricks) or `HeadModelError`
(damaged, truncated or over a limit) before it happens. Files are read with
``encoding='latin1'`` so Python 2 pickles (FLAME 2020) load; their array data comes back
as latin1 text, which is turned back into the raw bytes.
"""
from __future__ import annotations

import _compat_pickle
import io
import math
import pickle
import re
import struct
from pathlib import Path

import numpy as np

from .head_model import HeadModelError

MAX_PICKLE_BYTES = 1 << 30  # 1 GiB; a FLAME file is ~50-100 MB
MAX_DENSE_ELEMENTS = 10**7  # a sparse matrix we densify (FLAME's J_regressor is 5 x 5023)
MAX_OPCODES = 2_000_000  # a FLAME 2020 file has a few hundred
MAX_DEPTH = 64  # containers inside containers; FLAME needs 4
MAX_CHUMPY_CLASSES = 256  # distinct chumpy names in one file
ARRAY_KINDS = "biufcSU"  # bool, integers, floats, complex, bytes and text: nothing that holds pointers
_TYPESTR = re.compile(r"[biufcSU]\d{1,10}|[?bBhHiIlLqQefdgFDG]")


class UnsafePickleError(HeadModelError):
    """The pickle asks for something outside what FLAME files need (code, raw memory), so it was not loaded."""


class _Refused(Exception):
    """Raised inside the unpickler; `load_restricted_pickle` adds the file's name."""

    def __init__(self, message: str, unsafe: bool = True):
        super().__init__(message)
        self.unsafe = unsafe


def _damaged(message: str) -> _Refused:
    return _Refused(message, unsafe=False)


# ------------------------------------------------------------------ stand-ins
class _StandIn:
    """Keeps an unpickled object's state (``.state``) and never runs any of its code."""

    def __setstate__(self, state) -> None:
        self.state = _merge_slot_state(state)

    def _checked_state(self, missing: str) -> dict:
        state = getattr(self, "state", None)
        if not isinstance(state, dict):
            raise HeadModelError(missing)
        return state


class ChumpyStandIn(_StandIn):
    """What a chumpy object unpickles to: its pickled state (``.state``), nothing evaluated.

    A plain ``chumpy.ch.Ch`` keeps its value as an ndarray under ``state['x']``.
    """

    chumpy_name = "chumpy"

    def to_array(self) -> np.ndarray:
        """The wrapped ndarray; raises HeadModelError for chumpy expressions we cannot evaluate."""
        state = self._checked_state(f"a {self.chumpy_name} object in the file has no array data")
        if getattr(self, "_visiting", False):  # a crafted file could make 'x' point back here
            raise HeadModelError(f"a {self.chumpy_name} object in the file refers to itself")
        self._visiting = True
        try:
            return self._value(state)
        finally:
            self._visiting = False

    def _value(self, state: dict) -> np.ndarray:
        if "x" in state:
            return as_array(state["x"])
        # Reordering / operator objects: accept only an unambiguous single array term.
        candidates = [v for v in state.values() if isinstance(v, np.ndarray) and v.dtype.kind in "fiub"]
        candidates += [v for v in state.values() if isinstance(v, ChumpyStandIn)
                       and isinstance(getattr(v, "state", None), dict) and "x" in v.state]
        if len(candidates) == 1:
            return as_array(candidates[0])
        raise HeadModelError(
            f"the file stores a chumpy expression ({self.chumpy_name}) instead of plain arrays; "
            "CapTalk cannot evaluate it without chumpy. Use the original FLAME file or an .npz "
            "conversion with plain arrays."
        )


class SparseStandIn(_StandIn):
    """What a scipy.sparse matrix unpickles to: ``data, indices, indptr, _shape`` (or coo fields)."""

    format = ""

    def to_array(self) -> np.ndarray:
        """(rows, cols) dense float64 array; every size is checked before anything is allocated."""
        state = self._checked_state("a sparse matrix in the file has no data")
        try:
            shape = state.get("_shape", state.get("shape"))
            if not (isinstance(shape, tuple) and len(shape) == 2 and all(_is_int(n) and n >= 0 for n in shape)):
                raise ValueError(f"its shape is {_describe(shape)}, not two sizes")
            if shape[0] * shape[1] > MAX_DENSE_ELEMENTS:
                raise ValueError(f"implausible shape {shape} for a FLAME matrix")
            data = self._numbers(state, "data", "fiub")
            if self.format == "coo":
                if "coords" in state:
                    coords = state["coords"]
                    if not (isinstance(coords, (tuple, list)) and len(coords) == 2):
                        raise ValueError("its coords are not (rows, cols)")
                    rows, cols = (self._numbers({"coords": c}, "coords", "iu") for c in coords)
                else:
                    rows, cols = self._numbers(state, "row", "iu"), self._numbers(state, "col", "iu")
            else:
                index = self._numbers(state, "indices", "iu")
                indptr = self._numbers(state, "indptr", "iu")
                major = shape[1] if self.format == "csc" else shape[0]
                # Check indptr before it sizes anything: np.repeat of its differences was
                # once asked for terabytes by a crafted file.
                if len(indptr) != major + 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0) \
                        or indptr[-1] != len(index):
                    raise ValueError(f"its indptr does not describe {len(index)} entries in {major} "
                                     f"{'columns' if self.format == 'csc' else 'rows'}")
                lines = np.repeat(np.arange(major), np.diff(indptr))
                rows, cols = (index, lines) if self.format == "csc" else (lines, index)
            if not len(rows) == len(cols) == len(data):
                raise ValueError(f"it has {len(data)} values for {len(rows)} rows and {len(cols)} columns")
            if rows.size and (rows.min() < 0 or cols.min() < 0 or rows.max() >= shape[0] or cols.max() >= shape[1]):
                raise ValueError(f"its indices fall outside its shape {shape}")
            dense = np.zeros(shape, dtype=np.float64)
            np.add.at(dense, (rows, cols), data.astype(np.float64))  # duplicates add up, as in scipy
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
            raise HeadModelError(f"a {self.format} sparse matrix in the file is damaged ({exc})") from None
        return dense

    @staticmethod
    def _numbers(state: dict, key: str, kinds: str) -> np.ndarray:
        value = state[key]
        if not (isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in kinds):
            raise ValueError(f"its '{key}' is {_describe(value)}, not a 1-D array of numbers")
        return value.astype(np.float64 if "f" in kinds else np.int64)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _describe(value) -> str:
    """A short description of a value from the file (never its repr: that can be huge or recurse)."""
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    if isinstance(value, tuple) and len(value) <= 4 and all(_is_int(v) for v in value):
        return str(value)
    return f"a {type(value).__name__}"


def _sparse_class(fmt: str) -> type:
    return type(f"{fmt}_matrix", (SparseStandIn,), {"format": fmt})


_SPARSE_CLASSES = {fmt: _sparse_class(fmt) for fmt in ("csc", "csr", "coo")}
_SPARSE_NAMES = {f"{fmt}_{kind}": cls for fmt, cls in _SPARSE_CLASSES.items() for kind in ("matrix", "array")}
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _merge_slot_state(state):
    # Objects with __slots__ pickle their state as (dict, slot_dict).
    if isinstance(state, tuple) and len(state) == 2 and all(isinstance(s, (dict, type(None))) for s in state):
        return {**(state[0] or {}), **(state[1] or {})}
    return state


def as_array(value) -> np.ndarray:
    """ndarray, chumpy stand-in or sparse stand-in -> plain ndarray (other types raise)."""
    if isinstance(value, _StandIn):
        return value.to_array()
    if isinstance(value, np.ndarray):
        return value
    raise HeadModelError(f"expected an array, found a {type(value).__name__}")


# ----------------------------------------------------- numpy, rebuilt by us
class _NdarrayName:
    """What ``numpy.ndarray`` resolves to: a name `_reconstruct` accepts, never a constructor
    (``ndarray(shape, 'O', buffer=...)`` would make an object array over file bytes)."""

    def __new__(cls, *args, **kwargs):
        raise _Refused("it asks numpy.ndarray to build an array over raw bytes from the file, which can make "
                       "numpy follow pointers the file chose; FLAME files never do this")


class _Pending:
    """A numpy value the pickle describes; numpy builds it only from checked parts."""


class _DtypeSpec(_Pending):
    """``numpy.dtype(typestr, align, copy)`` plus its BUILD state, kept as text until checked."""

    def __init__(self, typestr="", align=False, copy=True):
        if not isinstance(typestr, str) or len(typestr) > 12:
            raise _damaged(f"a numpy dtype in the file is named by {_describe(typestr)}")
        self.typestr, self.byteorder, self.itemsize, self.built = typestr, "=", -1, False

    def __setstate__(self, state) -> None:
        if self.built:
            raise _Refused("it changes a numpy dtype twice")
        self.built = True
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)):
            raise _damaged("a numpy dtype in the file has an unknown state layout")
        byteorder, subarray, names, fields, itemsize = state[1:6]
        if subarray is not None or names is not None or fields is not None:
            raise _Refused("it defines a structured numpy dtype (fields or subarrays), which can place an object "
                           "pointer or an out-of-range offset inside the data; FLAME arrays are plain numbers")
        if byteorder not in ("<", ">", "|", "=") or not _is_int(itemsize):
            raise _damaged("a numpy dtype in the file has a damaged state")
        self.byteorder, self.itemsize = byteorder, int(itemsize)

    def resolve(self) -> np.dtype:
        """The numpy dtype, built from its name only after the name is known to be plain data."""
        if self.typestr.lstrip("<>|=") in ("O", "O4", "O8"):
            raise _Refused("it holds a Python-object array (dtype 'O'), whose data are memory addresses; "
                           "FLAME arrays are plain numbers")
        if not _TYPESTR.fullmatch(self.typestr):
            raise _Refused(f"it uses the numpy dtype {self.typestr!r}; only numbers and text are allowed")
        dtype = np.dtype(self.typestr)
        if dtype.kind not in ARRAY_KINDS or dtype.hasobject or dtype.fields is not None:
            raise _Refused(f"it uses the numpy dtype {self.typestr!r}; only numbers and text are allowed")
        if self.itemsize not in (-1, dtype.itemsize) or dtype.itemsize == 0:
            raise _damaged(f"a numpy dtype {self.typestr!r} in the file claims {self.itemsize}-byte items")
        if self.byteorder in "<>" and dtype.itemsize > 1 and dtype.kind != "S":
            dtype = dtype.newbyteorder(self.byteorder)
        return dtype


class _PendingArray(_Pending):
    """An ndarray the pickle describes: ``_reconstruct`` creates it, BUILD gives its data."""

    def __init__(self, budget: "_ArrayBudget"):
        self.budget, self.array = budget, None

    def __setstate__(self, state) -> None:
        if self.array is not None:
            raise _Refused("it changes a numpy array's data after it was built")
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _damaged("a numpy array in the file has an unknown state layout")
        shape, dtype, fortran, raw = state[-4:]
        if not isinstance(fortran, (bool, int)):
            raise _damaged("a numpy array in the file has a damaged state")
        self.array = self.budget.array(raw, dtype, shape, "F" if fortran else "C")

    def resolve(self) -> np.ndarray:
        if self.array is None:
            raise _damaged("a numpy array in the file has no data")
        return self.array


class _ArrayBudget:
    """Builds arrays from the file's bytes, at most ``limit`` bytes of them in all."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def array(self, raw, dtype, shape, order: str) -> np.ndarray:
        if not isinstance(dtype, _DtypeSpec):
            raise _Refused(f"it gives an array the dtype {_describe(dtype)} instead of a numpy dtype")
        dtype = dtype.resolve()
        if not (isinstance(shape, tuple) and len(shape) <= 32 and all(_is_int(n) and n >= 0 for n in shape)):
            raise _damaged(f"a numpy array in the file has the shape {_describe(shape)}")
        raw = _raw_bytes(raw)
        count = math.prod(int(n) for n in shape)  # Python ints: no overflow for crafted shapes
        if count * dtype.itemsize != len(raw):
            raise _damaged(f"a numpy array in the file declares {count} x {dtype.itemsize} bytes but holds {len(raw)}")
        self.charge(len(raw))
        flat = np.frombuffer(raw, dtype=dtype, count=count)
        return flat.reshape(tuple(int(n) for n in shape), order=order).copy(order="K")

    def charge(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise _damaged(f"it builds more array data ({self.used / 2**20:.0f} MB so far) than the file holds "
                           f"({self.limit / 2**20:.0f} MB): it reuses data to fill memory")


def _raw_bytes(raw) -> bytes:
    """Array data as the file stores it: bytes (Python 3), latin1 text (Python 2) or a buffer."""
    if isinstance(raw, str):
        try:
            return raw.encode("latin1")
        except UnicodeEncodeError:
            raise _damaged("a numpy array's data in the file is text, not bytes") from None
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return bytes(raw)
    raise _Refused(f"a numpy array's data in the file is {_describe(raw)}, not bytes (object arrays store "
                   "Python objects there)")


# ------------------------------------------------------------------ unpickler
_ATOMS = (str, bytes, int, float, bool, type(None))
_ALLOWED_KEY = "a dict key or set member in the file is {}; FLAME files use plain names and numbers"


def _check_key(key) -> None:
    if not isinstance(key, _ATOMS):
        raise _Refused(_ALLOWED_KEY.format(_describe(key)), unsafe=False)


def _checked_items(items):
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise _damaged(f"a set in the file is built from {_describe(items)}")
    for item in items:
        _check_key(item)
    return items


def _set(items=()):
    return set(_checked_items(items))


def _frozenset(items=()):
    return frozenset(_checked_items(items))


def _empty_bytes(*args):
    """``bytes()`` as protocol-2 pickles write b'' (an empty array's data); nothing else."""
    if args:
        raise _Refused("it asks bytes() to build something other than empty bytes")
    return b""


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """_codecs.encode as Python 3 uses it for bytes in protocol-2 pickles: latin1 only."""
    if not isinstance(text, str) or not isinstance(encoding, str) or errors != "strict":
        raise _damaged("the file asks _codecs.encode for something other than latin1 text")
    # Compare names ourselves: codecs.lookup() could import arbitrary encodings modules.
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591", "l1"):
        raise _Refused(f"it asks to encode data as {encoding[:20]!r}; only latin1 is allowed")
    try:
        return text.encode("latin1")
    except UnicodeEncodeError:
        raise _damaged("the file's latin1 data is not latin1") from None


def _py3_name(module: str, name: str) -> str:
    """'module.name' as the file names it, plus the Python 3 name for Python 2 names."""
    mapped = _compat_pickle.NAME_MAPPING.get((module, name))
    mapped = mapped or (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
    full, py3 = f"{module}.{name}", ".".join(mapped)
    return f"'{full[:120]}'" if full == py3 else f"'{full[:120]}' (Python 3: '{py3[:120]}')"


def _counted(handler):
    def run(self):
        self.opcodes += 1
        if self.opcodes > MAX_OPCODES:
            raise _damaged(f"it holds more than {MAX_OPCODES:,} pickle instructions; a FLAME file has a few hundred")
        handler(self)
    return run


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with every object-making opcode replaced (module docstring).

    The C unpickler cannot be told what BUILD or SETITEM may do; this one can, and FLAME
    files hold few, large opcodes, so its speed does not matter here.
    """

    def __init__(self, data: bytes):
        super().__init__(io.BytesIO(data), encoding="latin1")
        self.size, self.opcodes = len(data), 0
        self.budget = _ArrayBudget(len(data))
        self.chumpy_classes: dict[str, type] = {}
        both = lambda name, value: {(f"numpy.core.{name[0]}", name[1]): value,
                                    (f"numpy._core.{name[0]}", name[1]): value}
        self.names = {
            ("numpy", "ndarray"): _NdarrayName,
            ("numpy", "dtype"): _DtypeSpec,
            ("copy_reg", "_reconstructor"): self._reconstructor,
            ("copyreg", "_reconstructor"): self._reconstructor,
            ("_codecs", "encode"): _latin1_encode,
            **both(("multiarray", "_reconstruct"), self._reconstruct),
            **both(("multiarray", "scalar"), self._scalar),
            **both(("numeric", "_frombuffer"), self._frombuffer),
        }
        for builtins in ("__builtin__", "builtins"):
            self.names.update({(builtins, "object"): object, (builtins, "set"): _set,
                               (builtins, "frozenset"): _frozenset, (builtins, "bytes"): _empty_bytes})
        self.callables = {id(f) for f in self.names.values() if f is not object}

    # ---------------------------------------------------------------- names
    def find_class(self, module: str, name: str):
        if (module, name) in self.names:
            return self.names[(module, name)]
        if (module == "chumpy" or module.startswith("chumpy.")) and _DOTTED_NAME.fullmatch(module) \
                and name.isidentifier():
            return self._chumpy_class(f"{module}.{name}")
        if (module == "scipy.sparse" or module.startswith("scipy.sparse.")) and name in _SPARSE_NAMES:
            return _SPARSE_NAMES[name]
        raise _Refused(f"it asks to call {_py3_name(module, name)}, which a FLAME file never needs. The file "
                       "tried to run code when opened; use the original file from https://flame.is.tue.mpg.de")

    def _chumpy_class(self, full: str) -> type:
        """One stand-in class per chumpy name, so error messages can say which one it was."""
        if full not in self.chumpy_classes:
            if len(self.chumpy_classes) >= MAX_CHUMPY_CLASSES:
                raise _damaged(f"it names more than {MAX_CHUMPY_CLASSES} chumpy classes")
            self.chumpy_classes[full] = type(full.rsplit(".", 1)[1], (ChumpyStandIn,), {"chumpy_name": full})
        return self.chumpy_classes[full]

    # ------------------------------------------------- what names may build
    def _reconstructor(self, cls, base, state):
        """copyreg._reconstructor, limited to creating our stand-ins (never calls a real class)."""
        if not (isinstance(cls, type) and issubclass(cls, _StandIn) and base is object and state is None):
            raise _Refused(f"it asks copy_reg._reconstructor to build {_describe(cls)} from {_describe(base)}, "
                           "which a FLAME file never needs; it was not loaded because it tried to run code")
        return object.__new__(cls)

    def _reconstruct(self, cls, shape=None, typecode=None):
        if cls is not _NdarrayName:
            raise _Refused(f"it asks numpy's _reconstruct for {_describe(cls)} instead of a plain ndarray")
        return _PendingArray(self.budget)

    def _frombuffer(self, buffer, dtype, shape, order="C"):
        if order not in ("C", "F"):
            raise _damaged("a numpy array in the file has an unknown memory order")
        pending = _PendingArray(self.budget)
        pending.array = self.budget.array(buffer, dtype, shape, order)
        return pending

    def _scalar(self, dtype, data=None):
        if not isinstance(dtype, _DtypeSpec):
            raise _Refused(f"it asks for a numpy scalar of {_describe(dtype)}")
        resolved = dtype.resolve()
        raw = _raw_bytes(data)
        if len(raw) != resolved.itemsize:
            raise _damaged(f"a numpy {resolved} scalar in the file holds {len(raw)} bytes")
        self.budget.charge(len(raw))
        return np.frombuffer(raw, dtype=resolved, count=1)[0]

    # ------------------------------------------------------------- opcodes
    dispatch = dict(pickle._Unpickler.dispatch)

    def _call(self, func, args):
        if isinstance(func, type) and issubclass(func, _StandIn):
            return object.__new__(func)  # an old-style class instance: state comes by BUILD
        if id(func) not in self.callables:
            raise _Refused(f"it calls {_describe(func)}, which is not one of the constructors it may use")
        if not isinstance(args, tuple):
            raise _damaged("a call in the file has no argument tuple")
        return func(*args)

    def load_reduce(self):
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    def _instantiate(self, klass, args):
        self.append(self._call(klass, tuple(args)))

    def load_newobj(self):
        self.stack.pop()  # arguments: stand-ins take none
        cls = self.stack[-1]
        if not (isinstance(cls, type) and issubclass(cls, _StandIn)):
            raise _Refused(f"it asks to create {_describe(cls)} with __new__, which FLAME files never do")
        self.stack[-1] = object.__new__(cls)

    def load_newobj_ex(self):
        self.stack.pop()  # keyword arguments
        self.load_newobj()

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, (_StandIn, _Pending)):
            raise _Refused(f"it asks to set the attributes of {_describe(inst)}, which FLAME files never do")
        inst.__setstate__(state)

    def load_setitem(self):
        _check_key(self.stack[-2])
        super().load_setitem()

    def load_setitems(self):
        for key in self.stack[::2]:  # after the mark: key, value, key, value...
            _check_key(key)
        super().load_setitems()

    def load_dict(self):
        for key in self.stack[::2]:
            _check_key(key)
        super().load_dict()

    def load_additems(self):
        _checked_items(self.stack)
        super().load_additems()

    def load_frozenset(self):
        _checked_items(self.stack)
        super().load_frozenset()

    def load_bytearray8(self):
        # The stock handler allocates the declared size before reading: 2**40 asked for a terabyte.
        (size,) = struct.unpack("<Q", self.read(8))
        if size > self.size:
            raise _damaged("it declares a byte array longer than the file")
        data = self.read(size)
        if len(data) != size:
            raise _damaged("it ends inside a byte array")
        self.append(bytearray(data))

    def load_readonly_buffer(self):
        if not isinstance(self.stack[-1], (bytes, bytearray)):
            raise _damaged("it marks a non-bytes value as a read-only buffer")
        super().load_readonly_buffer()

    def _refuse(what: str):
        def refuse(self):
            raise _Refused(f"it uses {what}, which FLAME files never do")
        return refuse

    load_persid = load_binpersid = _refuse("pickle persistent ids")
    load_ext1 = load_ext2 = load_ext4 = _refuse("pickle extension codes (the copyreg extension registry)")
    load_next_buffer = _refuse("protocol-5 out-of-band buffers (data kept outside the file)")

    for _code, _name in ((pickle.REDUCE, "load_reduce"), (pickle.NEWOBJ, "load_newobj"),
                         (pickle.NEWOBJ_EX, "load_newobj_ex"), (pickle.BUILD, "load_build"),
                         (pickle.SETITEM, "load_setitem"), (pickle.SETITEMS, "load_setitems"),
                         (pickle.DICT, "load_dict"), (pickle.ADDITEMS, "load_additems"),
                         (pickle.FROZENSET, "load_frozenset"), (pickle.BYTEARRAY8, "load_bytearray8"),
                         (pickle.READONLY_BUFFER, "load_readonly_buffer"), (pickle.PERSID, "load_persid"),
                         (pickle.BINPERSID, "load_binpersid"), (pickle.EXT1, "load_ext1"),
                         (pickle.EXT2, "load_ext2"), (pickle.EXT4, "load_ext4"),
                         (pickle.NEXT_BUFFER, "load_next_buffer")):
        dispatch[_code[0]] = locals()[_name]
    dispatch = {code: _counted(handler) for code, handler in dispatch.items()}
    del _code, _name, _refuse


def _resolve(value, depth: int, seen: dict):
    """Replace pending numpy values by the arrays / dtypes built from them, everywhere in the
    result (stand-ins' states included); refuse results nested deeper than MAX_DEPTH."""
    if isinstance(value, _Pending):
        return value.resolve()
    if not isinstance(value, (list, dict, tuple, _StandIn)):
        return value
    if id(value) in seen:
        return seen[id(value)]
    if depth > MAX_DEPTH:
        raise _damaged(f"it is nested more than {MAX_DEPTH} levels deep; a FLAME file has 4")
    if isinstance(value, tuple):
        resolved = tuple(_resolve(v, depth + 1, seen) for v in value)
        seen[id(value)] = resolved
        return resolved
    seen[id(value)] = value  # lists, dicts and stand-ins are fixed in place (cycles stay cycles)
    if isinstance(value, list):
        value[:] = [_resolve(v, depth + 1, seen) for v in value]
    elif isinstance(value, dict):
        for key in value:
            value[key] = _resolve(value[key], depth + 1, seen)
    elif hasattr(value, "state"):
        value.state = _resolve(value.state, depth + 1, seen)
    return value


def read_limited(path: str | Path, max_bytes: int = MAX_PICKLE_BYTES, what: str = "file") -> bytes:
    """The bytes of ``path``; HeadModelError if it is missing, empty or larger than ``max_bytes``."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise HeadModelError(f"{what} not found: {path}") from None
    if not path.is_file():
        raise HeadModelError(f"{what} '{path}' is not a file")
    if size == 0:
        raise HeadModelError(f"{what} '{path.name}' is empty")
    if size > max_bytes:
        raise HeadModelError(
            f"{what} '{path.name}' is {size / 2**20:.0f} MB, more than the {max_bytes / 2**20:.0f} MB limit; "
            "it is not a FLAME model file"
        )
    return path.read_bytes()


def load_restricted_pickle(source: str | Path | bytes, max_bytes: int = MAX_PICKLE_BYTES, name: str | None = None):
    """Unpickle a path or bytes allowing only array types (see module docstring).

    Raises UnsafePickleError if the pickle asks for code or raw memory, HeadModelError if
    it is missing, too big, truncated, over a limit or not a pickle.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = f"'{name}'" if name else "the pickle data"
        if len(data) > max_bytes:
            raise HeadModelError(f"{label} is larger than the {max_bytes / 2**20:.0f} MB limit")
    else:
        data = read_limited(source, max_bytes)
        label = f"'{name or Path(source).name}'"
    truncated = f"{label} is truncated (it ends early); copy or download the file again"
    try:
        return _resolve(_RestrictedUnpickler(data).load(), 0, {})
    except _Refused as exc:
        if exc.unsafe:
            raise UnsafePickleError(f"{label} was not loaded: {exc}") from None
        raise HeadModelError(f"{label} is not a usable FLAME file: {exc}") from None
    except HeadModelError:
        raise
    except (EOFError, struct.error):  # struct: a length or number cut off at the end
        raise HeadModelError(truncated) from None
    except pickle.UnpicklingError as exc:
        if "truncated" in str(exc) or "exhausted" in str(exc):
            raise HeadModelError(truncated) from None
        raise HeadModelError(f"{label} is not a readable pickle file ({exc})") from None
    except MemoryError:
        raise HeadModelError(f"{label} needs more memory than is free to load; it is not a FLAME file") from None
    except RecursionError:
        raise HeadModelError(f"{label} is nested too deeply to be a FLAME file") from None
    except Exception as exc:  # struct / memo / stack errors: the bytes are not a sound pickle
        raise HeadModelError(f"{label} is damaged or not a pickle file ({type(exc).__name__})") from None
