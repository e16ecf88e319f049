"""Import a user's FLAME model file into CapTalk's head-model format.

Accepted files (the user brings them; FLAME is not redistributable):

- FLAME 2020 ``generic_model.pkl``: a Python 2 pickle with chumpy arrays and a
  scipy.sparse ``J_regressor``;
- FLAME 2023 ``flame2023.pkl`` (and similar): a Python 3 pickle of plain arrays;
- an ``.npz`` conversion with the same keys (plain arrays only).

All are read without running code (`safe_pickle`, ``np.load(allow_pickle=False)``).
FLAME keys: ``v_template`` (V,3), ``f`` (F,3), ``shapedirs`` (V,3,K) = 300 identity + K-300
expression components, ``posedirs`` (V,3,36), ``J_regressor`` (5,V), ``kintree_table`` (2,5),
``weights`` (V,5). FLAME is Y up with the face along +Z; the head model is Z up with the
face along -Y, so everything is rotated by ``FLAME_TO_HEAD`` (x, y, z) -> (x, -z, y).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from . import safe_npz
from .head_model import HeadModel, HeadModelError
from .regions import inner_lip_pairs, derive_regions
from .safe_pickle import MAX_PICKLE_BYTES, ChumpyStandIn, UnsafePickleError, as_array, load_restricted_pickle, \
    read_limited

FLAME_TO_HEAD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
FLAME_JOINTS = ("global", "neck", "jaw", "eye_left", "eye_right")
FLAME_ROLES = {"neck": "global", "head": "neck", "jaw": "jaw", "eye_left": "eye_left", "eye_right": "eye_right"}
NUM_SHAPE = 300
FLAME_LICENCE = "FLAME (user-supplied; see https://flame.is.tue.mpg.de, not redistributable)"
REQUIRED_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights")
EXPECTED = "a FLAME model file (FLAME 2020 generic_model.pkl, FLAME 2023 flame2023.pkl, or an .npz conversion)"
MASK_KEYS = ("lips", "forehead", "eye_region", "left_eyeball", "right_eyeball")


def import_flame(
    path: str | Path,
    n_expressions: int = 100,
    shape: np.ndarray | str | Path | None = None,
    masks: str | Path | None = None,
    model_id: str | None = None,
) -> HeadModel:
    """Read a FLAME file and return it as a HeadModel (Z up, face along -Y, metres).

    n_expressions: how many FLAME expression components become channels (1..available).
    shape: identity coefficients (up to 300; array or .npy/.npz/.txt path) baked into the
        template; the identity basis is kept, so shape coefficients given later add to them.
    masks: FLAME_masks.pkl for the metric regions; without it they are derived from the rig.
    """
    try:
        return _import_flame(Path(path), n_expressions, shape, masks, model_id)
    except MemoryError:  # within the readers' limits, yet more than this machine has free
        raise HeadModelError(f"importing '{Path(path).name}' needs more memory than is free; close other "
                             "programs and try again") from None


def _import_flame(path: Path, n_expressions, shape, masks, model_id) -> HeadModel:
    data = read_limited(path, what="FLAME file")
    digest = hashlib.sha256(data).hexdigest()
    arrays, version = read_flame_arrays(data, path.name)
    flame = check_flame_arrays(arrays, path.name)
    n_shape = flame["shapedirs"].shape[2] - flame["n_expr_available"]
    if not isinstance(n_expressions, (int, np.integer)) or not 1 <= n_expressions <= flame["n_expr_available"]:
        raise HeadModelError(
            f"asked for {n_expressions} expressions but '{path.name}' has {flame['n_expr_available']}; "
            f"choose 1 to {flame['n_expr_available']}"
        )
    betas = load_shape_coefficients(shape, n_shape)

    M = FLAME_TO_HEAD
    shapedirs = flame["shapedirs"]
    rest = flame["v_template"] + shapedirs[:, :, :n_shape] @ betas  # FLAME frame, (V, 3)
    template = rest @ M.T
    joints = flame["J_regressor"] @ template  # regressor is linear, so rotate-then-regress is fine
    shape_basis = rotate_basis(shapedirs[:, :, :n_shape], M)
    expression_basis = rotate_basis(shapedirs[:, :, n_shape : n_shape + n_expressions], M)
    pose_basis = convert_pose_basis(flame["posedirs"], M)

    notes = [
        f"converted from FLAME axes (Y up, face +Z) to Z up, face -Y; {version} file '{path.name}'",
        f"{n_expressions} of {flame['n_expr_available']} FLAME expression components, named expr000..",
    ]
    if np.any(betas):
        notes.append("template includes the identity (shape) coefficients given at import; "
                     "shape coefficients applied later add to them")
    common = dict(template=template, faces=flame["f"], lbs_weights=flame["weights"], joints=joints)
    if masks is not None:
        regions = regions_from_masks(masks, **common)
        notes.append(f"regions from '{Path(masks).name}' (lips; upper face = forehead + eye region minus "
                     "eyeballs; eyes = eyeballs); inner-lip pairs matched inside the lips mask")
    else:
        regions = derive_regions(joint_names=FLAME_JOINTS, joint_roles=FLAME_ROLES, **common)
        notes.append("regions (lips, upper face, inner-lip pairs, eyes) were derived from the rig "
                     "(jaw and eye skinning), no FLAME_masks.pkl given")

    return HeadModel(
        model_id=model_id or _model_id(version, digest, n_expressions, betas),
        name=f"FLAME ({path.name})",
        licence=FLAME_LICENCE,
        provenance=f"{path.name} sha256={digest} ({version})",
        template=_f32(template),
        faces=flame["f"],
        expression_names=tuple(f"expr{i:03d}" for i in range(n_expressions)),
        expression_basis=_f32(expression_basis),
        joint_names=FLAME_JOINTS,
        joint_parents=flame["parents"],
        joints=_f32(joints),
        lbs_weights=_f32(flame["weights"]),
        motion_joints=FLAME_JOINTS,
        joint_roles=dict(FLAME_ROLES),
        regions=regions,
        shape_names=tuple(f"shape{i:03d}" for i in range(n_shape)),
        shape_basis=_f32(shape_basis),
        joint_regressor=_f32(flame["J_regressor"]),
        pose_basis=_f32(pose_basis),
        notes=tuple(notes),
    )


def _model_id(version: str, digest: str, n_expressions: int, betas: np.ndarray) -> str:
    """Distinct per file, channel count and identity: rigs built from them differ."""
    model_id = f"{version}-{digest[:8]}-e{n_expressions}"
    if np.any(betas):
        model_id += "-s" + hashlib.sha256(np.ascontiguousarray(betas, dtype=np.float64).tobytes()).hexdigest()[:6]
    return model_id


# ------------------------------------------------------------------ reading
def read_flame_arrays(data: bytes, name: str) -> tuple[dict[str, np.ndarray], str]:
    """File bytes -> (FLAME key -> ndarray, version tag 'flame2020' / 'flame2023' / 'flame')."""
    if data[:4] == b"PK\x03\x04":
        version = "flame2023" if "2023" in name else "flame2020" if ("2020" in name or "generic" in name) else "flame"
        return read_npz(data, name), version
    if data[:1] not in (b"\x80", b"(", b"}", b"]", b"c"):  # protocol 2+ header or a protocol-0/1 start
        raise HeadModelError(f"'{name}' is neither a pickle nor an .npz file; expected {EXPECTED}")
    try:
        obj = load_restricted_pickle(data, name=name)
    except UnsafePickleError:
        raise
    except HeadModelError as exc:
        raise HeadModelError(f"{exc}; expected {EXPECTED}") from None
    if not isinstance(obj, dict):
        raise HeadModelError(f"'{name}' holds a {type(obj).__name__}, not a FLAME model dictionary; "
                             f"expected {EXPECTED}")
    _check_keys(obj, name)
    version = "flame2020" if any(isinstance(v, ChumpyStandIn) for v in obj.values()) else "flame2023"
    arrays = {}
    for key in REQUIRED_KEYS:
        try:
            arrays[key] = as_array(obj[key])
        except HeadModelError as exc:
            raise HeadModelError(f"'{name}': key '{key}': {exc}") from None
    return arrays, version


def read_npz(data: bytes, name: str) -> dict[str, np.ndarray]:
    """.npz bytes -> FLAME key -> ndarray; headers checked before inflating, object arrays refused."""
    arrays = safe_npz.read_npz(data, name=name, keys=REQUIRED_KEYS, kinds="biuf", max_bytes=MAX_PICKLE_BYTES,
                               error=HeadModelError)
    _check_keys(arrays, name)
    return arrays


def _check_keys(keys, name: str) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in keys]
    if not missing:
        return
    hint = " (this looks like FLAME_masks.pkl; give it as the masks file)" if "lips" in keys else ""
    raise HeadModelError(f"'{name}' is missing {', '.join(missing)}{hint}; expected {EXPECTED}")


def check_flame_arrays(arrays: dict[str, np.ndarray], name: str) -> dict:
    """Check shapes / dtypes; return float64 arrays, int64 faces, parents and n_expr_available."""
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiub":
            raise HeadModelError(f"'{name}': '{key}' holds {getattr(value, 'dtype', type(value).__name__)} data, "
                                 "expected numbers")
    # Shapes first, conversions after: a crafted file must not make us copy a wrong-sized array.
    V = arrays["v_template"].shape[0] if arrays["v_template"].ndim == 2 else -1
    K = arrays["shapedirs"].shape[2] if arrays["shapedirs"].ndim == 3 else -1
    expect = {
        "v_template": (V, 3), "shapedirs": (V, 3, K), "posedirs": (V, 3, 36),
        "J_regressor": (5, V), "kintree_table": (2, 5), "weights": (V, 5),
    }
    for key, shape in expect.items():
        if V < 1 or K < 1 or arrays[key].shape != shape:
            wanted = str(shape).replace("-1", "?")
            raise HeadModelError(f"'{name}': '{key}' has shape {arrays[key].shape}, expected {wanted}; "
                                 f"expected {EXPECTED}")
    if arrays["f"].ndim != 2 or arrays["f"].shape[0] > 16 * V:  # a mesh has about 2 triangles per vertex
        raise HeadModelError(f"'{name}': 'f' must be (F, 3) triangles indexing the {V} vertices")
    out = {key: value.astype(np.int64 if key in ("f", "kintree_table") else np.float64)
           for key, value in arrays.items()}
    faces = out["f"]
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.size == 0 or faces.min() < 0 or faces.max() >= V:
        raise HeadModelError(f"'{name}': 'f' must be (F, 3) triangles indexing the {V} vertices")
    if K <= NUM_SHAPE:
        raise HeadModelError(f"'{name}': 'shapedirs' has {K} components, no expression components after the "
                             f"{NUM_SHAPE} identity ones")
    for key, value in out.items():
        if not np.all(np.isfinite(value)):
            raise HeadModelError(f"'{name}': '{key}' contains NaN or infinite values")
    out["parents"] = flame_parents(out["kintree_table"], name)
    out["n_expr_available"] = K - NUM_SHAPE
    return out


def flame_parents(kintree: np.ndarray, name: str = "file") -> np.ndarray:
    """(2, J) kintree_table (row 0 parents, row 1 joint ids) -> (J,) parents, -1 for the root.

    FLAME stores the root's parent as 2**32 - 1 (an unsigned -1).
    """
    J = kintree.shape[1]
    parents = np.full(J, -2, dtype=np.int64)
    for parent, child in kintree.T:
        if not 0 <= child < J:
            raise HeadModelError(f"'{name}': 'kintree_table' names joint {child}, outside 0..{J - 1}")
        parents[child] = parent if 0 <= parent < J else -1
    if parents[0] != -1 or any(not 0 <= parents[j] < j for j in range(1, J)):
        raise HeadModelError(f"'{name}': 'kintree_table' {kintree.tolist()} is not FLAME's joint tree")
    return parents


def _f32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def rotate_basis(dirs: np.ndarray, M: np.ndarray) -> np.ndarray:
    """FLAME blendshapes (V, 3, K) -> head-model basis (K, V, 3) with offsets rotated by M."""
    return np.einsum("ab,vbk->kva", M, dirs)


def convert_pose_basis(posedirs: np.ndarray, M: np.ndarray) -> np.ndarray:
    """FLAME posedirs (V, 3, 9P) -> head-model pose_basis (9P, V, 3) in the rotated frame.

    With rotations R' = M R M^T the features become f' = vec(M (R - I) M^T) = kron(M, M) f
    (row-major vec), so f = kron(M, M)^T f' and the offsets M.sum_p f_p B_p equal
    sum_q f'_q B'_q with B'_q = sum_p kron(M, M)[q, p] (M B_p).
    """
    V, _, P = posedirs.shape
    basis = posedirs.transpose(2, 0, 1).reshape(P // 9, 9, V, 3)  # per joint, 9 features
    basis = np.einsum("qp,jpvc->jqvc", np.kron(M, M), basis)
    basis = np.einsum("dc,jqvc->jqvd", M, basis)
    return basis.reshape(P, V, 3)


# ----------------------------------------------------------- identity, masks
def load_shape_coefficients(shape, n_shape: int) -> np.ndarray:
    """None / array / .npy / .npz ('betas' or 'shape') / .txt -> (n_shape,) zero-padded float64."""
    if shape is None:
        return np.zeros(n_shape)
    if isinstance(shape, (str, Path)):
        shape = _read_shape_file(Path(shape))
    betas = np.asarray(shape, dtype=np.float64).ravel()
    if betas.size > n_shape:
        raise HeadModelError(f"got {betas.size} shape coefficients; FLAME has {n_shape}")
    if not np.all(np.isfinite(betas)):
        raise HeadModelError("shape coefficients contain NaN or infinite values")
    return np.pad(betas, (0, n_shape - betas.size))


MAX_SHAPE_FILE_BYTES = 1 << 20  # 300 coefficients as text or an array


def _read_shape_file(path: Path) -> np.ndarray:
    if not path.is_file():
        raise HeadModelError(f"shape coefficient file not found: {path}")
    if path.stat().st_size > MAX_SHAPE_FILE_BYTES:
        raise HeadModelError(f"'{path.name}' is larger than {MAX_SHAPE_FILE_BYTES >> 20} MB; a file of shape "
                             "coefficients holds at most a few hundred numbers")
    keys = ("betas", "shape", "shape_params")
    if path.suffix == ".npy":
        return safe_npz.read_npy(path, kinds="biuf", max_bytes=MAX_SHAPE_FILE_BYTES, error=HeadModelError)
    if path.suffix == ".npz":
        loaded = safe_npz.read_npz(path, keys=keys, kinds="biuf", max_bytes=MAX_SHAPE_FILE_BYTES, error=HeadModelError)
        for key in keys:
            if key in loaded:
                return loaded[key]
        raise HeadModelError(f"'{path.name}' has no 'betas' or 'shape' array of shape coefficients")
    try:
        return np.loadtxt(path, dtype=np.float64)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise HeadModelError(f"cannot read shape coefficients from '{path.name}' ({str(exc)[:200]})") from None


def load_masks(path: str | Path, num_vertices: int) -> dict[str, np.ndarray]:
    """FLAME_masks.pkl (or .npz) -> region name -> (N,) int64 vertex indices."""
    path = Path(path)
    data = read_limited(path, what="FLAME masks file")
    if data[:4] == b"PK\x03\x04":
        raw = safe_npz.read_npz(data, name=path.name, keys=MASK_KEYS, kinds="iu", error=HeadModelError)
    else:
        raw = load_restricted_pickle(data, name=path.name)
    if not isinstance(raw, dict) or any(k not in raw for k in MASK_KEYS):
        raise HeadModelError(f"'{path.name}' is not FLAME_masks.pkl: it needs the regions {', '.join(MASK_KEYS)}")
    masks = {}
    for key in MASK_KEYS:
        index = np.asarray(as_array(raw[key])).ravel()
        if index.dtype.kind not in "iu" or (index.size and (index.min() < 0 or index.max() >= num_vertices)):
            raise HeadModelError(f"'{path.name}': mask '{key}' is not a list of vertex indices of this "
                                 f"{num_vertices}-vertex FLAME model")
        masks[key] = index.astype(np.int64)
    return masks


def regions_from_masks(masks, template, faces, lbs_weights, joints) -> dict[str, np.ndarray]:
    """Regions from FLAME_masks; lip pairs matched across the mouth slit inside the lips mask."""
    m = load_masks(masks, len(template))
    eyes = np.union1d(m["left_eyeball"], m["right_eyeball"])
    upper_face = np.setdiff1d(np.union1d(m["forehead"], m["eye_region"]), eyes)
    return {"lips": np.unique(m["lips"]), "upper_face": upper_face, "eyes": eyes,
            "lip_pairs": mask_lip_pairs(template, faces, lbs_weights, m["lips"])}


def mask_lip_pairs(template, faces, lbs_weights, lips, min_hops: int = 4) -> np.ndarray:
    """(K, 2) inner-lip (upper, lower) pairs with both vertices in ``lips``.

    Uses the rig derivation of `regions` with non-lip vertices given a jaw weight of 0.5,
    which counts as neither upper nor lower lip; widens the gap if the mouth is open.
    """
    jaw = FLAME_JOINTS.index("jaw")
    jaw_w = np.full(len(template), 0.5)
    jaw_w[lips] = lbs_weights[lips, jaw]
    eye_w = lbs_weights[:, [FLAME_JOINTS.index("eye_left"), FLAME_JOINTS.index("eye_right")]].sum(axis=1)
    for gap in (0.004, 0.008, 0.016):
        pairs = inner_lip_pairs(template, faces, jaw_w, eye_w, gap, min_hops)
        if len(pairs) >= 3:
            return pairs
    raise HeadModelError("no facing upper / lower lip vertices found inside the 'lips' mask; "
                         "is the masks file for this FLAME model?")
