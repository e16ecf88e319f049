"""Synthetic FLAME-format files for tests. NOT FLAME: a made-up ellipsoid head.

Nothing here comes from a real FLAME file (FLAME may not be redistributed). The head is
built in FLAME's own axes (metres, Y up, face along +Z) so the importer's coordinate
conversion is exercised:

- an ellipsoid grid whose front longitudes are packed closer (so a mouth fits);
- a mouth slit on one ring: the slit vertices are split into an upper copy (moved up
  1.5 mm, skinned to the neck joint) and a lower copy (moved down 1.5 mm, skinned to the
  jaw), with shared corner vertices, so the lips face each other without an edge;
- two eyeball spheres skinned to the eye joints; a small strip inside the mouth that
  pads the vertex count to exactly ``num_vertices``;
- FLAME's 5 joints (global, neck, jaw, eye_left, eye_right; parents -1, 0, 1, 1, 1) with a
  sparse, positive J_regressor; smooth random shapedirs (300 identity + n expression),
  small random posedirs.

Writers: `write_flame_2020_pickle` (a Python-2 protocol-2 pickle written opcode by opcode,
with chumpy / scipy.sparse objects and py2 ``str`` array data, so it only loads with
encoding='latin1'), `write_flame_2023_pickle` (Python 3 pickle of plain arrays, sparse
J_regressor), `write_flame_npz`, `write_masks_pickle` (FLAME_masks.pkl layout) and
`write_malicious_pickle`.
"""
from __future__ import annotations

import builtins
import os
import pickle
import struct
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RADII = (0.075, 0.10, 0.09)  # x (ear to ear), y (up), z (forward); metres
MOUTH_Y = -0.03
MOUTH_HALF_ANGLE = 0.35  # radians of longitude from the front to a mouth corner
LIP_OFFSET = 0.0015
EYE_RADIUS = 0.012
ROOT_PARENT = 2**32 - 1  # FLAME's kintree_table stores the root's parent as unsigned -1
FLAME_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights")


# ------------------------------------------------------------------ geometry
def _ellipsoid_with_mouth(n_lat: int, n_lon: int) -> dict:
    """Grid head with a split mouth ring. Returns verts, faces and per-vertex attributes."""
    rx, ry, rz = RADII
    theta = np.pi * (np.arange(n_lat) + 1) / (n_lat + 1)
    # Pack longitudes near the front so the mouth holds enough vertices (first step ~0.035 rad).
    power = max(1.0, np.log(0.035 / np.pi) / np.log(2.0 / n_lon))
    u = (np.arange(n_lon) - n_lon // 2) / (n_lon / 2)
    phi = np.pi * np.sign(u) * np.abs(u) ** power
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    grid = np.stack([rx * np.sin(th) * np.sin(ph), ry * np.cos(th), rz * np.sin(th) * np.cos(ph)], -1)
    verts = np.concatenate([[[0, ry, 0]], grid.reshape(-1, 3), [[0, -ry, 0]]])
    ring = np.concatenate([[-1], np.repeat(np.arange(n_lat), n_lon), [n_lat]])
    lon = np.concatenate([[np.pi], np.tile(phi, n_lat), [np.pi]])
    g = lambda i, j: 1 + i * n_lon + (j % n_lon)
    bottom = len(verts) - 1

    mouth_ring = int(np.argmin(np.abs(ry * np.cos(theta) - MOUTH_Y)))
    cut = [j for j in range(n_lon) if abs(phi[j]) < MOUTH_HALF_ANGLE]
    corners = [min(cut) - 1, max(cut) + 1]
    lower_copy = {g(mouth_ring, j): len(verts) + k for k, j in enumerate(cut)}
    verts = np.concatenate([verts, verts[list(lower_copy)]])
    verts[list(lower_copy)] += [0, LIP_OFFSET, 0]
    verts[list(lower_copy.values())] -= [0, LIP_OFFSET, 0]
    ring = np.concatenate([ring, np.full(len(cut), mouth_ring)])
    lon = np.concatenate([lon, phi[cut]])

    faces = []
    for j in range(n_lon):
        faces.append((0, g(0, j), g(0, j + 1)))
        faces.append((g(n_lat - 1, j), bottom, g(n_lat - 1, j + 1)))
        for i in range(n_lat - 1):
            a, b, c, d = g(i, j), g(i, j + 1), g(i + 1, j + 1), g(i + 1, j)
            if i == mouth_ring:  # the ring below the slit hangs on the lower copies
                a, b = lower_copy.get(a, a), lower_copy.get(b, b)
            faces += [(a, d, c), (a, c, b)]

    # Which side of the mouth a vertex is on: 1 below (jaw), 0 above, 0.5 on the mouth ring.
    below = np.where(ring > mouth_ring, 1.0, np.where(ring < mouth_ring, 0.0, 0.5))
    below[list(lower_copy)] = 0.0
    below[list(lower_copy.values())] = 1.0
    return {
        "verts": verts, "faces": np.array(faces), "lon": lon, "below": below, "ring": ring,
        "mouth_ring": mouth_ring, "n_lon": n_lon, "n_lat": n_lat, "grid_index": g,
        "corners": [g(mouth_ring, j) for j in corners],
    }


def _sphere(centre, radius, n_rings, n_lon, first_index):
    """Small UV sphere (eyeball): (N, 3) verts, (F, 3) faces numbered from first_index."""
    theta = np.pi * (np.arange(n_rings) + 1) / (n_rings + 1)
    phi = 2 * np.pi * np.arange(n_lon) / n_lon
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    grid = np.stack([np.sin(th) * np.sin(ph), np.cos(th), np.sin(th) * np.cos(ph)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0, 1, 0]], grid, [[0, -1, 0]]]) * radius + centre
    g = lambda i, j: first_index + 1 + i * n_lon + (j % n_lon)
    faces = []
    for j in range(n_lon):
        faces.append((first_index, g(0, j), g(0, j + 1)))
        faces.append((g(n_rings - 1, j), first_index + len(verts) - 1, g(n_rings - 1, j + 1)))
        for i in range(n_rings - 1):
            a, b, c, d = g(i, j), g(i, j + 1), g(i + 1, j + 1), g(i + 1, j)
            faces += [(a, d, c), (a, c, b)]
    return verts, np.array(faces)


def _strip(count, first_index):
    """A two-row triangle strip of ``count`` >= 3 vertices inside the mouth (pads the count)."""
    n0 = (count + 1) // 2
    n1 = count - n0
    top = np.stack([np.linspace(-0.02, 0.02, n0), np.full(n0, MOUTH_Y + 0.004), np.full(n0, 0.03)], -1)
    low = np.stack([np.linspace(-0.02, 0.02, n1), np.full(n1, MOUTH_Y - 0.004), np.full(n1, 0.03)], -1)
    t = lambda i: first_index + i
    b = lambda i: first_index + n0 + i
    faces = [(t(i), b(i), t(i + 1)) for i in range(min(n0 - 1, n1))]
    faces += [(t(i + 1), b(i), b(i + 1)) for i in range(n1 - 1)]
    return np.concatenate([top, low]), np.array(faces)


def build_head(num_vertices: int = 800) -> dict:
    """Rest geometry, skinning and masks of the synthetic head, in FLAME axes.

    Returns v_template (V,3), f (F,3) uint32, weights (V,5), J_regressor (5,V),
    kintree_table (2,5) and masks (name -> int64 indices); V == num_vertices.
    """
    small = num_vertices < 2000
    n_lon = 48 if small else 96
    eye_rings, eye_lon = (6, 8) if small else (8, 12)
    eye_count = 2 * (2 + eye_rings * eye_lon)
    n_lat = (num_vertices - eye_count - 2 - 2 * n_lon // 4) // n_lon
    while True:
        if n_lat < 6:
            raise ValueError(f"num_vertices={num_vertices} is too small for the synthetic head")
        head = _ellipsoid_with_mouth(n_lat, n_lon)
        pad = num_vertices - len(head["verts"]) - eye_count
        if pad >= 3:
            break
        n_lat -= 1

    verts, faces = [head["verts"]], [head["faces"]]
    rx, ry, rz = RADII
    eye_sets = []
    for side in (1.0, -1.0):  # eye_left is the subject's left: +x in FLAME axes
        x, y = 0.032 * side, 0.03
        z = rz * np.sqrt(1 - (x / rx) ** 2 - (y / ry) ** 2) - 0.006
        first = sum(len(v) for v in verts)
        v, f = _sphere(np.array([x, y, z]), EYE_RADIUS, eye_rings, eye_lon, first)
        verts.append(v)
        faces.append(f)
        eye_sets.append(np.arange(first, first + len(v)))
    first = sum(len(v) for v in verts)
    v, f = _strip(pad, first)
    verts.append(v)
    faces.append(f)
    template = np.concatenate(verts)
    V = len(template)
    assert V == num_vertices

    n_head = len(head["verts"])
    lon = np.concatenate([head["lon"], np.full(V - n_head, np.pi)])
    below = np.concatenate([head["below"], np.zeros(V - n_head)])
    weights = _skinning(template, lon, below, eye_sets)
    regressor = _joint_regressor(head, eye_sets, V)
    masks = _masks(template, lon, n_head, eye_sets, head)
    return {
        "v_template": template,
        "f": np.concatenate(faces).astype(np.uint32),
        "weights": weights,
        "J_regressor": regressor,
        "kintree_table": np.array([[ROOT_PARENT, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "masks": masks,
    }


def _skinning(template, lon, below, eye_sets) -> np.ndarray:
    """(V, 5) weights: jaw below the mouth at the front, global at the neck base, eyes."""
    y = template[:, 1]
    side = np.clip((1.4 - np.abs(lon)) / 0.4, 0, 1)
    chin = np.clip((y + 0.085) / 0.03, 0, 1)
    w_global = np.clip((-0.08 - y) / 0.015, 0, 1)
    w_jaw = below * side * chin * (1 - w_global)
    weights = np.stack([w_global, 1 - w_global - w_jaw, w_jaw, 0 * y, 0 * y], -1)
    for k, index in enumerate(eye_sets):
        weights[index] = 0
        weights[index, 3 + k] = 1
    return weights


def _joint_regressor(head, eye_sets, V) -> np.ndarray:
    """(5, V) positive rows summing to 1, few vertices each (FLAME's is sparse too)."""
    g, n_lon, n_lat = head["grid_index"], head["n_lon"], head["n_lat"]
    lon = head["lon"]
    side_cols = [int(np.argmin(np.abs(lon[1 : 1 + n_lon] - s * np.pi / 2))) for s in (1, -1)]
    ring_y = RADII[1] * np.cos(np.pi * (np.arange(n_lat) + 1) / (n_lat + 1))
    neck_ring = int(np.argmin(np.abs(ring_y + 0.085)))
    ear_ring = int(np.argmin(np.abs(ring_y + 0.005)))
    rows = [
        [g(n_lat - 1, j) for j in range(n_lon)],  # global: the bottom ring's centre
        [g(neck_ring, j) for j in range(n_lon)],  # neck
        [g(ear_ring, j) for j in side_cols],  # jaw: between the ears, above the mouth
        list(eye_sets[0]),
        list(eye_sets[1]),
    ]
    regressor = np.zeros((5, V))
    for k, index in enumerate(rows):
        regressor[k, index] = 1.0 / len(index)
    return regressor


def _masks(template, lon, n_head, eye_sets, head) -> dict[str, np.ndarray]:
    """FLAME_masks-style vertex sets (head vertices only, eyeballs separate)."""
    y, a = template[:, 1], np.abs(lon)
    on_head = np.arange(len(template)) < n_head
    pick = lambda cond: np.flatnonzero(cond & on_head).astype(np.int64)
    return {
        "lips": pick((a < 0.5) & (np.abs(y - MOUTH_Y) < 0.02)),
        "forehead": pick((a < 0.9) & (y > 0.05)),
        "eye_region": pick((a < 1.0) & (y > 0.01) & (y <= 0.05)),
        "left_eyeball": eye_sets[0].astype(np.int64),
        "right_eyeball": eye_sets[1].astype(np.int64),
        "nose": pick((a < 0.3) & (y > -0.01) & (y < 0.02)),
        "face": pick((a < 1.2) & (y > -0.08)),
        "neck": pick(y < -0.08),
        "scalp": pick((a >= 0.9) & (y > 0.05)),
        "left_eye_region": pick((lon > 0.1) & (lon < 1.0) & (y > 0.01) & (y <= 0.05)),
        "right_eye_region": pick((lon < -0.1) & (lon > -1.0) & (y > 0.01) & (y <= 0.05)),
        "boundary": pick(a > 3.0),
    }


def make_synthetic_flame(num_vertices: int = 800, n_expressions: int = 100, seed: int = 0) -> dict:
    """All FLAME keys (FLAME axes, float64) plus 'masks'; shapedirs has 300 + n_expressions."""
    head = build_head(num_vertices)
    rng = np.random.default_rng(seed)
    V = num_vertices
    centred = head["v_template"] - head["v_template"].mean(axis=0)
    # Identity: smooth (affine) deformations, ~1.5 mm per unit coefficient, so the mouth survives.
    shape = np.einsum("vb,kab->vak", centred, rng.normal(0, 0.01, (300, 3, 3)))
    shape += rng.normal(0, 1e-5, shape.shape)
    expression = rng.normal(0, 5e-4, (V, 3, n_expressions))
    head["shapedirs"] = np.concatenate([shape, expression], axis=2)
    head["posedirs"] = rng.normal(0, 2e-4, (V, 3, 36))
    head["J"] = head["J_regressor"] @ head["v_template"]
    return head


# ------------------------------------------------------- Python-2 pickle writer
@dataclass
class Py2Global:
    """A bare GLOBAL reference ``module.name``."""
    module: str
    name: str


@dataclass
class Py2Call:
    """``module.name(*args)`` (GLOBAL + args + REDUCE)."""
    module: str
    name: str
    args: tuple


@dataclass
class Py2Raw:
    """Opcodes written as given (hostile-file tests build what no pickler writes)."""
    opcodes: bytes


@dataclass
class Py2Instance:
    """An object of class ``module.name`` with ``state`` (via copy_reg._reconstructor or NEWOBJ)."""
    module: str
    name: str
    state: dict
    newobj: bool = False


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def py2_pickle(obj) -> bytes:
    """Pickle ``obj`` the way Python 2 wrote protocol 2 (str -> BINSTRING). Python ``str``
    values are written as py2 ``str`` (bytes), ndarrays as numpy 1.x on Python 2 did."""
    return b"\x80\x02" + _py2(obj) + b"."


def py2_opcodes(obj) -> bytes:
    """The opcodes of one value (no protocol header, no STOP), as `py2_pickle` writes it."""
    return _py2(obj)


def _py2(obj) -> bytes:
    if obj is None:
        return b"N"
    if isinstance(obj, bool):
        return b"\x88" if obj else b"\x89"
    if isinstance(obj, (int, np.integer)):
        n = int(obj)
        if 0 <= n < 256:
            return b"K" + bytes([n])
        if 0 <= n < 65536:
            return b"M" + struct.pack("<H", n)
        if -(2**31) <= n < 2**31:
            return b"J" + struct.pack("<i", n)
        raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + bytes([len(raw)]) + raw
    if isinstance(obj, float):
        return b"G" + struct.pack(">d", obj)
    if isinstance(obj, (str, bytes)):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            return b"U" + bytes([len(raw)]) + raw  # SHORT_BINSTRING
        return b"T" + struct.pack("<i", len(raw)) + raw  # BINSTRING
    if isinstance(obj, tuple):
        body = b"".join(_py2(x) for x in obj)
        return {0: b")", 1: body + b"\x85", 2: body + b"\x86", 3: body + b"\x87"}.get(len(obj), b"(" + body + b"t")
    if isinstance(obj, list):
        return b"]" + (b"(" + b"".join(_py2(x) for x in obj) + b"e" if obj else b"")
    if isinstance(obj, dict):
        body = b"".join(_py2(k) + _py2(v) for k, v in obj.items())
        return b"}" + (b"(" + body + b"u" if obj else b"")
    if isinstance(obj, np.ndarray):
        return _py2_ndarray(obj)
    if isinstance(obj, Py2Raw):
        return obj.opcodes
    if isinstance(obj, Py2Global):
        return _global(obj.module, obj.name)
    if isinstance(obj, Py2Call):
        return _global(obj.module, obj.name) + _py2(tuple(obj.args)) + b"R"
    if isinstance(obj, Py2Instance):
        if obj.newobj:
            head = _global(obj.module, obj.name) + b")" + b"\x81"
        else:
            args = (Py2Global(obj.module, obj.name), Py2Global("__builtin__", "object"), None)
            head = _global("copy_reg", "_reconstructor") + _py2(args) + b"R"
        return head + _py2(obj.state) + b"b"
    raise TypeError(f"py2_pickle cannot write {type(obj).__name__}")


def _py2_ndarray(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array)
    dtype = array.dtype
    order = "|" if dtype.itemsize == 1 else "<"
    dtype_code = _global("numpy", "dtype") + _py2((dtype.str[1:], 0, 1)) + b"R"
    dtype_code += _py2((3, order, None, None, None, -1, -1, 0)) + b"b"
    new = _global("numpy.core.multiarray", "_reconstruct") + _py2((Py2Global("numpy", "ndarray"), (0,), "b")) + b"R"
    state = _py2(1) + _py2(tuple(array.shape)) + dtype_code + _py2(False) + _py2(array.tobytes())
    return new + b"(" + state + b"t" + b"b"


def _chumpy(array: np.ndarray) -> Py2Instance:
    """A chumpy.ch.Ch as pickled by chumpy: __dict__ minus weakref caches; value under 'x'."""
    state = {"x": array, "_dirty_vars": Py2Call("__builtin__", "set", ([],)), "_itr": None, "_depends_on_deps": {}}
    return Py2Instance("chumpy.ch", "Ch", state)


def _csc_parts(dense: np.ndarray):
    """Dense (R, C) -> csc data, indices (rows), indptr, as scipy stores them."""
    data, indices, indptr = [], [], [0]
    for col in dense.T:
        rows = np.flatnonzero(col)
        data += list(col[rows])
        indices += list(rows)
        indptr.append(len(indices))
    return np.array(data, np.float64), np.array(indices, np.int32), np.array(indptr, np.int32)


# ----------------------------------------------------------------- writers
def _flame_dict(flame: dict) -> dict:
    return {k: flame[k] for k in (*FLAME_KEYS, "J")}


def write_flame_2020_pickle(path, num_vertices: int = 5023, n_expressions: int = 100, seed: int = 0,
                            flame: dict | None = None) -> Path:
    """FLAME-2020-style generic_model.pkl: Python 2 protocol 2, chumpy shapedirs (via
    copy_reg._reconstructor), scipy.sparse.csc.csc_matrix J_regressor (via NEWOBJ), array
    data as py2 str (loads only with encoding='latin1'). Returns the path."""
    flame = flame or make_synthetic_flame(num_vertices, n_expressions, seed)
    data, indices, indptr = _csc_parts(flame["J_regressor"])
    csc_state = {"_shape": flame["J_regressor"].shape, "maxprint": 50,
                 "indices": indices, "indptr": indptr, "data": data}
    model = {
        "f": flame["f"],
        "J_regressor": Py2Instance("scipy.sparse.csc", "csc_matrix", csc_state, newobj=True),
        "kintree_table": flame["kintree_table"],
        "J": flame["J"],
        "weights": flame["weights"],
        "posedirs": flame["posedirs"],
        "v_template": flame["v_template"],
        "shapedirs": _chumpy(flame["shapedirs"]),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    path = Path(path)
    path.write_bytes(py2_pickle(model))
    return path


class _FakeCsc:
    """Stands for scipy.sparse csc_matrix while pickling (scipy is not installed here)."""

    def __init__(self, dense: np.ndarray):
        self.data, self.indices, self.indptr = _csc_parts(dense)
        self._shape = dense.shape
        self.maxprint = 50


def write_flame_2023_pickle(path, num_vertices: int = 800, n_expressions: int = 100, seed: int = 0,
                            protocol: int = 4, sparse: bool = True, flame: dict | None = None) -> Path:
    """FLAME-2023-style pickle: Python 3, plain ndarrays; J_regressor as a scipy
    ``scipy.sparse._csc.csc_matrix`` (faked via a temporary sys.modules entry) or dense."""
    flame = flame or make_synthetic_flame(num_vertices, n_expressions, seed)
    model = _flame_dict(flame)
    path = Path(path)
    if not sparse:
        path.write_bytes(pickle.dumps(model, protocol=protocol))
        return path
    names = ("scipy", "scipy.sparse", "scipy.sparse._csc")
    saved = {name: sys.modules.get(name) for name in names}
    saved_attrs = (_FakeCsc.__module__, _FakeCsc.__qualname__)
    try:
        for name in names:
            sys.modules[name] = types.ModuleType(name)
        _FakeCsc.__module__, _FakeCsc.__qualname__, _FakeCsc.__name__ = "scipy.sparse._csc", "csc_matrix", "csc_matrix"
        sys.modules["scipy.sparse._csc"].csc_matrix = _FakeCsc
        model["J_regressor"] = _FakeCsc(flame["J_regressor"])
        path.write_bytes(pickle.dumps(model, protocol=protocol))
    finally:
        _FakeCsc.__module__, _FakeCsc.__qualname__ = saved_attrs
        _FakeCsc.__name__ = "_FakeCsc"
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return path


def write_flame_npz(path, num_vertices: int = 800, n_expressions: int = 100, seed: int = 0,
                    flame: dict | None = None) -> Path:
    """An .npz conversion: same keys, plain arrays, dense J_regressor."""
    flame = flame or make_synthetic_flame(num_vertices, n_expressions, seed)
    path = Path(path)
    with open(path, "wb") as handle:
        np.savez(handle, **_flame_dict(flame))
    return path


def write_masks_pickle(path, masks: dict) -> Path:
    """FLAME_masks.pkl layout: a Python 2 pickle of region name -> vertex index array."""
    path = Path(path)
    path.write_bytes(py2_pickle({k: np.asarray(v, dtype=np.int64) for k, v in masks.items()}))
    return path


class _Payload:
    """Pickles as a call to ``func(*args)``: what a booby-trapped file would contain."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def write_malicious_pickle(path, target, kind: str = "system") -> Path:
    """A pickle whose loading would create the file ``target``.

    kind: 'system' (os.system -> posix.system 'touch'), 'exec' (builtins.exec of open()),
    'subprocess' (subprocess.call), 'nested' (a FLAME-looking dict whose shapedirs is an
    os.system call), 'py2' (hand-written protocol-0 'cposix\\nsystem').
    """
    target = str(target)
    touch = f"touch '{target}'"
    if kind == "py2":
        data = b"cposix\nsystem\n(S'" + touch.replace("'", "").encode() + b"'\ntR."
    else:
        payload = {
            "system": _Payload(os.system, touch),
            "exec": _Payload(builtins.exec, f"open({target!r}, 'w').close()"),
            "subprocess": _Payload(subprocess.call, ["touch", target]),
            "nested": {"v_template": np.zeros((3, 3)), "f": np.zeros((1, 3), np.uint32),
                       "shapedirs": _Payload(os.system, touch)},
        }[kind]
        data = pickle.dumps(payload, protocol=2)
    path = Path(path)
    path.write_bytes(data)
    return path


# ------------------------------------------------- the open head as a FLAME file
# Fixtures for the FLAME bridge (model.flame_bridge): the open head itself written in
# FLAME's format and axes, so the truth of every mapping is known. Joints map by role:
# open head neck, head, jaw, eye.L, eye.R -> FLAME global, neck, jaw, eye_left, eye_right.
ROTATING = {"jaw": ("jawLeft", "jawOpen", "jawRight", "mouthClose"), "eye": ("eyeLook",)}


def _rotation_fit(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Best rotation about the origin taking points P (N, 3) to Q (N, 3) (Kabsch)."""
    U, _, Vt = np.linalg.svd(Q.T @ P)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def beyond_rotation(head, name: str) -> np.ndarray:
    """(V, 3) what ARKit shape ``name`` of the open head does beyond its joint rotation:
    the best rigid rotation of the vertices fully skinned to the joint (jaw for jaw* and
    mouthClose, each eye for eyeLook*), undone through linear blend skinning."""
    D = head.expression_basis[head.expression_names.index(name)].astype(np.float64)
    rest = head.template.astype(np.float64)
    if name in ROTATING["jaw"]:
        joints = ["jaw"]
    elif name.startswith(ROTATING["eye"]):
        joints = ["eye.L", "eye.R"]
    else:
        return D
    A = np.broadcast_to(np.eye(3), (len(rest), 3, 3)).copy()
    b = np.zeros_like(rest)
    for joint in joints:
        k = head.joint_names.index(joint)
        j, w = head.joints[k].astype(np.float64), head.lbs_weights[:, k].astype(np.float64)
        full = w > 0.9
        R = _rotation_fit(rest[full] - j, rest[full] + D[full] - j)
        A += w[:, None, None] * (R - np.eye(3))
        b += w[:, None] * (j - R @ j)
    return np.einsum("vab,vb->va", np.linalg.inv(A), rest + D - b) - rest


def open_head_basis(head, components: int = 100, drop: tuple[str, ...] = (), seed: int = 0) -> np.ndarray:
    """(components, V, 3) orthonormal basis (each component 1 cm in norm) in head axes that spans
    every ARKit shape's displacement and what it does beyond its rotations, padded with
    smooth random fields; shapes in ``drop`` are projected out (the basis cannot make them).
    With components < the spanning set, the first ``components`` directions are kept."""
    names = [n for n in head.expression_names if n != "tongueOut"]
    fields = [head.expression_basis[head.expression_names.index(n)] for n in names]
    fields += [beyond_rotation(head, n) for n in names if n in ROTATING["jaw"] or n.startswith(ROTATING["eye"])]
    rng = np.random.default_rng(seed)
    centred = head.template - head.template.mean(axis=0)
    while len(fields) < max(components, 100):
        fields.append(np.einsum("vb,ab->va", centred, rng.normal(0, 0.05, (3, 3))) + 1e-4 * np.sin(
            centred @ rng.normal(0, 40, 3))[:, None] * rng.normal(0, 1, 3))
    flat = np.stack([np.asarray(f, dtype=np.float64).ravel() for f in fields], axis=1)
    q, _ = np.linalg.qr(flat)
    q = q[:, :components]
    for name in drop:
        d = np.concatenate([beyond_rotation(head, name).ravel()[:, None],
                            head.expression_basis[head.expression_names.index(name)].ravel()[:, None]], axis=1)
        d, _ = np.linalg.qr(d)
        q = q - d @ (d.T @ q)
        q, _ = np.linalg.qr(q)
    return (q.T * 0.01).reshape(components, len(head.template), 3)


def _regressor_for(template: np.ndarray, joints: np.ndarray, k: int = 12) -> np.ndarray:
    """(J, V) rows summing to 1 that give ``joints`` exactly from the ``k`` nearest vertices."""
    distance = np.linalg.norm(template[None] - joints[:, None], axis=2)  # numpy only: Blender tests use it
    near = np.argsort(distance, axis=1)[:, :k]
    regressor = np.zeros((len(joints), len(template)))
    for row, (joint, idx) in enumerate(zip(joints, near)):
        A = np.vstack([template[idx].T, np.ones(k)])  # (4, k)
        regressor[row, idx] = np.linalg.lstsq(A, np.append(joint, 1.0), rcond=None)[0]
    return regressor


@dataclass(frozen=True)
class OpenHeadFlame:
    """A FLAME-format dict of the open head plus its ground truth.

    flame: FLAME keys in FLAME axes; source_vertices (V, 3) int and source_weights (V, 3):
    each fixture vertex as a barycentric combination of open-head vertices (before the warp).
    """

    flame: dict
    source_vertices: np.ndarray
    source_weights: np.ndarray


def open_head_as_flame(head, components: int = 100, drop: tuple[str, ...] = (), shuffle: bool = False,
                       split: int = 0, warp: bool = False, seed: int = 0) -> OpenHeadFlame:
    """The open head ``head`` (a HeadModel) in FLAME's format and axes.

    components / drop: the expression basis (see `open_head_basis`); split: that many
    triangles get a vertex at their centroid (known barycentric truth); warp: a smooth
    non-rigid warp of the template (about 2 mm) plus a similarity (scale 1.06, 4 degrees,
    a few cm) so the registration has work to do; shuffle: vertex order permuted.
    posedirs are zero (the open head has no pose correctives).
    """
    from model.core.flame_import import FLAME_TO_HEAD  # here: the module also loads without the back end

    rng = np.random.default_rng(seed)
    template = head.template.astype(np.float64)
    basis = open_head_basis(head, components, drop, seed)
    V = len(template)
    faces = head.faces.astype(np.int64)
    src_v = np.repeat(np.arange(V)[:, None], 3, axis=1)
    src_w = np.tile([1.0, 0.0, 0.0], (V, 1))
    weights = head.lbs_weights.astype(np.float64)
    if split:
        chosen = np.linspace(0, len(faces) - 1, split).astype(int)
        tri = faces[chosen]
        new = V + np.arange(split)
        template = np.concatenate([template, template[tri].mean(axis=1)])
        basis = np.concatenate([basis, basis[:, tri].mean(axis=2)], axis=1)
        weights = np.concatenate([weights, weights[tri].mean(axis=1)])
        src_v = np.concatenate([src_v, tri])
        src_w = np.concatenate([src_w, np.full((split, 3), 1 / 3)])
        a, b, c = tri.T
        keep = np.setdiff1d(np.arange(len(faces)), chosen)
        faces = np.concatenate([faces[keep], np.stack([a, b, new], 1), np.stack([b, c, new], 1),
                                np.stack([c, a, new], 1)])
    joints = head.joints.astype(np.float64)
    if warp:
        centre = template.mean(axis=0)
        bump = lambda x: 0.002 * np.stack([np.sin(40 * x[:, 2]), np.sin(35 * x[:, 0] + 1), np.cos(30 * x[:, 1])], 1)
        angle = np.radians(4.0)
        R = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
        move = lambda x: (1.06 * (x - centre + bump(x - centre))) @ R.T + centre + [0.01, -0.02, 0.03]
        template, joints = move(template), move(joints)
        basis = 1.06 * basis @ R.T
    order = rng.permutation(len(template)) if shuffle else np.arange(len(template))
    inverse = np.argsort(order)
    template, basis, weights = template[order], basis[:, order], weights[order]
    src_v, src_w, faces = src_v[order], src_w[order], inverse[faces]

    to_flame = lambda x: x @ FLAME_TO_HEAD  # head axes -> FLAME axes (inverse of (x, y, z) -> (x, -z, y))
    Vn = len(template)
    centred = template - template.mean(axis=0)
    identity = np.einsum("vb,kab->vak", to_flame(centred), rng.normal(0, 0.01, (300, 3, 3)))
    expression = to_flame(basis).transpose(1, 2, 0)  # (V, 3, E)
    flame = {
        "v_template": to_flame(template),
        "f": faces.astype(np.uint32),
        "weights": weights / weights.sum(axis=1, keepdims=True),
        "J_regressor": _regressor_for(to_flame(template), to_flame(joints)),
        "kintree_table": np.array([[ROOT_PARENT, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "shapedirs": np.concatenate([identity, expression], axis=2),
        "posedirs": np.zeros((Vn, 3, 36)),
    }
    flame["J"] = flame["J_regressor"] @ flame["v_template"]
    return OpenHeadFlame(flame, src_v, src_w)
