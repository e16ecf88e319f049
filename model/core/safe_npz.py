"""Read ``.npz`` / ``.npy`` files whose declared sizes are checked before anything is inflated.

``numpy.load`` allocates what a member's header declares and only then finds out whether
the data is there: a 28 MB FLAME .npz once asked for 22.4 GiB, and the MemoryError
escaped to the user. `read_npz` reads every wanted member's .npy header first (shape,
dtype, memory order) and refuses

- dtypes that are not plain data (objects, structured or subarray dtypes: they need
  pickle or can hide pointers) and kinds the caller did not ask for;
- a header whose size does not match what the archive says the member holds;
- more than ``max_bytes`` of array data in all, and archives of more than MAX_MEMBERS
  members or with duplicate names;
- special files (a FIFO would block the reader forever) and members that are not .npy;

and only then inflates each member straight into its array (no second copy). Nothing is
unpickled (numpy's ``allow_pickle`` is never involved). Errors are ``error`` (a
`BadInput` subclass of the caller's choosing) with the file's name and the reason.
"""
from __future__ import annotations

import io
import math
import os
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np

from .errors import BadInput

MAX_ARRAY_BYTES = 1 << 30  # array data in one file; a FLAME-sized head model holds ~30 MB
MAX_MEMBERS = 256  # numpy.savez writes one per array; ours have at most ~20
MAX_HEADER_BYTES = 10_000  # numpy's own default cap on a .npy header
PLAIN_KINDS = "biufcSU"  # bool, integers, floats, complex, bytes, text
_CHUNK = 1 << 24


class ArrayFileError(BadInput):
    """An .npz / .npy file that cannot be read safely; the message says why."""


def read_npz(source: str | os.PathLike | bytes, name: str | None = None, keys=None, kinds: str = PLAIN_KINDS,
             max_bytes: int = MAX_ARRAY_BYTES, error: type[BadInput] = ArrayFileError) -> dict[str, np.ndarray]:
    """An .npz (path or bytes) -> member name (without .npy) -> array.

    keys: read only these members (the others are listed, never inflated); None: all.
    kinds: numpy dtype kinds allowed. Raises ``error`` for anything unsafe or damaged.
    """
    label = f"'{name or (Path(source).name if not isinstance(source, (bytes, bytearray)) else 'the .npz data')}'"
    try:
        with _open(source, label, error) as handle, zipfile.ZipFile(handle) as archive:
            members = _members(archive, label, keys, error)
            headers = {key: _header(archive, info, label, key, kinds, error) for key, info in members.items()}
            total = sum(nbytes for _, _, _, nbytes, _ in headers.values())
            if total > max_bytes:
                raise error(f"{label} declares {total / 2**20:,.0f} MB of arrays, more than the "
                            f"{max_bytes / 2**20:,.0f} MB limit; it is not a file CapTalk writes or reads")
            return {key: _inflate(archive, members[key], *headers[key], label, key, error) for key in headers}
    except BadInput:
        raise
    except MemoryError:
        raise error(f"{label} needs more memory than is free to read") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, RuntimeError,
            NotImplementedError, struct.error, KeyError, UnicodeDecodeError, RecursionError, SyntaxError) as exc:
        raise error(f"{label} is a damaged or truncated .npz file ({type(exc).__name__}: {str(exc)[:200]}); "
                    "copy it again") from None


def read_npy(path: str | os.PathLike, name: str | None = None, kinds: str = PLAIN_KINDS,
             max_bytes: int = MAX_ARRAY_BYTES, error: type[BadInput] = ArrayFileError) -> np.ndarray:
    """One .npy file -> its array, with the same checks as `read_npz`."""
    label = f"'{name or Path(path).name}'"
    try:
        with _open(path, label, error) as handle:
            size = os.fstat(handle.fileno()).st_size
            shape, order, dtype, nbytes, offset = _parse_header(handle, size, label, "the array", kinds, error)
            if nbytes > max_bytes:
                raise error(f"{label} declares {nbytes / 2**20:,.0f} MB, more than the {max_bytes / 2**20:,.0f} MB limit")
            return _fill(handle, shape, order, dtype, label, error)
    except BadInput:
        raise
    except MemoryError:
        raise error(f"{label} needs more memory than is free to read") from None
    except (EOFError, OSError, ValueError, struct.error, UnicodeDecodeError, RecursionError, SyntaxError) as exc:
        raise error(f"{label} is a damaged .npy file ({type(exc).__name__}: {str(exc)[:200]})") from None


def _open(source, label: str, error) -> io.BufferedIOBase:
    if isinstance(source, (bytes, bytearray)):
        return io.BytesIO(source)
    path = Path(source)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{label} not found: {path}") from None
    if not stat.S_ISREG(mode):  # a FIFO or device would block or never end
        raise error(f"{label} is not a regular file")
    return open(path, "rb")


def _members(archive: zipfile.ZipFile, label: str, keys, error) -> dict[str, zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise error(f"{label} holds {len(infos)} members, more than the {MAX_MEMBERS} an array file has")
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        if not info.filename.endswith(".npy") or info.is_dir():
            raise error(f"{label} holds '{info.filename[:100]}', which is not an array (.npy); is it an .npz file?")
        key = info.filename[:-4]
        if key in members:
            raise error(f"{label} holds two arrays named '{key[:100]}'")
        members[key] = info
    return {key: info for key, info in members.items() if keys is None or key in keys}


def _header(archive, info: zipfile.ZipInfo, label: str, key: str, kinds: str, error):
    with archive.open(info) as member:
        return _parse_header(member, info.file_size, label, f"'{key}'", kinds, error)


def _parse_header(stream, size: int, label: str, what: str, kinds: str, error):
    """(shape, order, dtype, data bytes, header bytes) from a .npy header, checked against
    ``size``, the bytes the member holds."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream, max_header_size=MAX_HEADER_BYTES)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream, max_header_size=MAX_HEADER_BYTES)
    else:
        raise error(f"{label}: {what} uses .npy format {version[0]}.{version[1]}, which CapTalk does not read")
    if dtype.hasobject:
        raise error(f"{label}: {what} holds Python-object arrays, which CapTalk does not load (they need pickle, "
                    "which can run code); save the file with plain numeric arrays")
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in kinds:
        raise error(f"{label}: {what} has the dtype {dtype}, not one of the plain kinds it should hold")
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise error(f"{label}: {what} declares the shape {shape}")
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: a crafted shape cannot wrap around
    offset = stream.tell()
    if offset + nbytes != size:
        raise error(f"{label}: {what} declares {nbytes:,} bytes of data but the file holds {size - offset:,}; "
                    "the file is damaged or crafted")
    return shape, "F" if fortran else "C", dtype, nbytes, offset


def _inflate(archive, info, shape, order, dtype, nbytes, offset, label, key, error) -> np.ndarray:
    with archive.open(info) as member:
        member.read(offset)  # the header, checked before
        array = _fill(member, shape, order, dtype, label, error)
        if member.read(1):  # reading to the end also checks the member's CRC
            raise error(f"{label}: '{key}' holds more data than its header declares")
    return array


def _fill(stream, shape, order: str, dtype: np.dtype, label: str, error) -> np.ndarray:
    """Read exactly the array's bytes from ``stream`` into a new array of ``shape``."""
    flat = np.empty(math.prod(shape), dtype=dtype)
    view = memoryview(flat.view(np.uint8))
    done = 0
    while done < len(view):
        # In chunks: a zip member's readinto reads a temporary copy of what it is asked for.
        count = stream.readinto(view[done : done + _CHUNK])
        if not count:
            raise error(f"{label} ends inside its array data; copy it again")
        done += count
    return flat.reshape(shape, order=order)
