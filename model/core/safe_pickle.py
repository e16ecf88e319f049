"""Load FLAME-style pickles without letting them run code.

A pickle is a small program: opening one with `pickle.load` may call any Python function
the file names (``os.system`` included). FLAME files (``generic_model.pkl``,
``flame2023.pkl``, ``FLAME_masks.pkl``) only need numpy arrays, and the old ones also
name ``chumpy`` arrays and ``scipy.sparse`` matrices, neither of which CapTalk has (or
needs). `load_restricted_pickle` therefore resolves only a short list of names:

- numpy array / dtype / scalar reconstruction (``numpy.core`` and ``numpy._core`` names);
- ``copy_reg._reconstructor`` / ``copyreg._reconstructor``, only to create a stand-in;
- ``object``, ``set``, ``frozenset`` (chumpy objects keep a ``set`` in their state);
- ``_codecs.encode(text, 'latin1')`` (how Python 3 writes bytes in protocol 2);
- every ``chumpy.*`` class -> a `ChumpyStandIn` that only keeps the pickled state;
- ``scipy.sparse`` csc / csr / coo matrices -> a `SparseStandIn` that keeps the state.

Any other name raises `UnsafePickleError` before anything is called. Files are read with
``encoding='latin1'`` so Python 2 pickles (FLAME 2020) load; numpy decodes latin1 text
back to the raw array bytes.
"""
from __future__ import annotations

import _compat_pickle
import io
import pickle
from pathlib import Path

import numpy as np

from .head_model import HeadModelError

try:  # numpy >= 2 (and the 1.26 forward-compat shim)
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # pragma: no cover - older numpy
    from numpy.core import multiarray as _multiarray, numeric as _numeric

MAX_PICKLE_BYTES = 1 << 30  # 1 GiB; a FLAME file is ~50-100 MB
MAX_DENSE_ELEMENTS = 10**8  # a sparse matrix we densify (FLAME's J_regressor is 5 x 5023)


class UnsafePickleError(HeadModelError):
    """The pickle names a function outside the allowed list, so it was not loaded."""


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
        candidates += [v for v in state.values() if isinstance(v, ChumpyStandIn) and "x" in getattr(v, "state", {})]
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
        """(rows, cols) dense float64 array."""
        state = self._checked_state("a sparse matrix in the file has no data")
        try:
            shape = tuple(int(n) for n in state.get("_shape", state.get("shape")))
            data = np.asarray(state["data"], dtype=np.float64)
            if self.format == "coo":
                rows, cols = state["coords"] if "coords" in state else (state["row"], state["col"])
            else:
                index = np.asarray(state["indices"], dtype=np.int64)
                indptr = np.asarray(state["indptr"], dtype=np.int64)
                major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
                rows, cols = (index, major) if self.format == "csc" else (major, index)
            rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
            if len(shape) != 2 or min(shape) < 0 or shape[0] * shape[1] > MAX_DENSE_ELEMENTS:
                raise ValueError(f"implausible shape {shape}")
            if rows.size and min(rows.min(), cols.min()) < 0:
                raise ValueError("negative indices")
            dense = np.zeros(shape, dtype=np.float64)
            np.add.at(dense, (rows, cols), data)  # duplicates add up, as in scipy
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise HeadModelError(f"a {self.format} sparse matrix in the file is damaged ({exc})") from None
        return dense


def _sparse_class(fmt: str) -> type:
    return type(f"{fmt}_matrix", (SparseStandIn,), {"format": fmt})


_SPARSE_CLASSES = {fmt: _sparse_class(fmt) for fmt in ("csc", "csr", "coo")}
_SPARSE_NAMES = {f"{fmt}_{kind}": cls for fmt, cls in _SPARSE_CLASSES.items() for kind in ("matrix", "array")}
_CHUMPY_CLASSES: dict[str, type] = {}


def _chumpy_class(module: str, name: str) -> type:
    """One stand-in class per chumpy name, so error messages can say which one it was."""
    full = f"{module}.{name}"
    if full not in _CHUMPY_CLASSES:
        _CHUMPY_CLASSES[full] = type(name, (ChumpyStandIn,), {"chumpy_name": full})
    return _CHUMPY_CLASSES[full]


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


# ----------------------------------------------------------------- unpickler
def _safe_reconstructor(cls, base, state):
    """copyreg._reconstructor, limited to creating our stand-ins (never calls a real class)."""
    stand_in = isinstance(cls, type) and issubclass(cls, _StandIn)
    if not (stand_in and base is object and state is None):
        raise UnsafePickleError(
            f"the file asks copy_reg._reconstructor to build {cls!r} from {base!r}, which a FLAME file never "
            "needs; it was not loaded because it tried to run code"
        )
    return object.__new__(cls)


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """_codecs.encode as Python 3 uses it for bytes in protocol-2 pickles: latin1 only."""
    # Compare names ourselves: codecs.lookup() could import arbitrary encodings modules.
    name = str(encoding).lower().replace("-", "").replace("_", "")
    if name not in ("latin1", "iso88591", "l1") or not isinstance(text, str):
        raise UnsafePickleError(f"the file asks to encode data as {encoding!r}; only latin1 is allowed")
    return text.encode("latin1", errors)


_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("copy_reg", "_reconstructor"): _safe_reconstructor,
    ("copyreg", "_reconstructor"): _safe_reconstructor,
    ("_codecs", "encode"): _latin1_encode,
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _multiarray._reconstruct
    _ALLOWED[(f"{_core}.multiarray", "scalar")] = _multiarray.scalar
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _numeric._frombuffer
for _builtins in ("__builtin__", "builtins"):
    for _name, _obj in (("object", object), ("set", set), ("frozenset", frozenset)):
        _ALLOWED[(_builtins, _name)] = _obj


def _py3_name(module: str, name: str) -> str:
    """'module.name' as the file names it, plus the Python 3 name for Python 2 names."""
    mapped = _compat_pickle.NAME_MAPPING.get((module, name))
    mapped = mapped or (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
    full, py3 = f"{module}.{name}", ".".join(mapped)
    return f"'{full}'" if full == py3 else f"'{full}' (Python 3: '{py3}')"


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, label: str):
        super().__init__(file, encoding="latin1")
        self.label = label

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "chumpy" or module.startswith("chumpy."):
            return _chumpy_class(module, name)
        if (module == "scipy.sparse" or module.startswith("scipy.sparse.")) and name in _SPARSE_NAMES:
            return _SPARSE_NAMES[name]
        raise UnsafePickleError(
            f"{self.label} was not loaded: it asks to call {_py3_name(module, name)}, which a FLAME file never "
            "needs. The file tried to run code when opened; use the original file from "
            "https://flame.is.tue.mpg.de"
        )

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.label} was not loaded: it uses pickle persistent ids, "
                                "which FLAME files never do")


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

    Raises UnsafePickleError if the pickle names anything else, HeadModelError if it is
    missing, too big, truncated or not a pickle.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = f"'{name}'" if name else "the pickle data"
        if len(data) > max_bytes:
            raise HeadModelError(f"{label} is larger than the {max_bytes / 2**20:.0f} MB limit")
    else:
        data = read_limited(source, max_bytes)
        label = f"'{name or Path(source).name}'"
    try:
        return _RestrictedUnpickler(io.BytesIO(data), label).load()
    except HeadModelError:  # includes UnsafePickleError
        raise
    except EOFError:
        raise HeadModelError(f"{label} is truncated (it ends early); copy or download the file again") from None
    except pickle.UnpicklingError as exc:
        if "truncated" in str(exc):
            raise HeadModelError(f"{label} is truncated (it ends early); copy or download the file again") from None
        raise HeadModelError(f"{label} is not a readable pickle file ({exc})") from None
    except RecursionError:
        raise HeadModelError(f"{label} is nested too deeply to be a FLAME file") from None
    except Exception as exc:  # numpy / struct / memo errors: the bytes are not a sound pickle
        raise HeadModelError(f"{label} is damaged or not a pickle file ({type(exc).__name__}: {exc})") from None
