"""FLAME import: every file format, options, the coordinate conversion, and refused files.

All FLAME files here are synthetic (tests/flame_fixtures.py); no real FLAME data is used.
"""
from __future__ import annotations

import pickle
import pickletools
import re

import numpy as np
import pytest

from flame_fixtures import (
    FLAME_KEYS,
    Py2Call,
    Py2Global,
    Py2Instance,
    make_synthetic_flame,
    py2_pickle,
    write_flame_2020_pickle,
    write_flame_2023_pickle,
    write_flame_npz,
    write_malicious_pickle,
    write_masks_pickle,
)
from model.core.flame_import import FLAME_TO_HEAD as M, import_flame
from model.core.head_model import HeadModel, HeadModelError
from model.core.safe_pickle import UnsafePickleError, load_restricted_pickle

V = 800


@pytest.fixture(scope="session")
def flame() -> dict:
    return make_synthetic_flame(V, n_expressions=100, seed=0)


@pytest.fixture(scope="session")
def files(flame, tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("flame")
    return {
        "2020": write_flame_2020_pickle(d / "generic_model.pkl", flame=flame),
        "2023-p2": write_flame_2023_pickle(d / "flame2023_p2.pkl", protocol=2, flame=flame),
        "2023-p4": write_flame_2023_pickle(d / "flame2023.pkl", protocol=4, flame=flame),
        "2023-p5": write_flame_2023_pickle(d / "flame2023_p5.pkl", protocol=5, flame=flame),
        "2023-dense": write_flame_2023_pickle(d / "flame2023_dense.pkl", sparse=False, flame=flame),
        "npz": write_flame_npz(d / "flame2023.npz", flame=flame),
        "masks": write_masks_pickle(d / "FLAME_masks.pkl", flame["masks"]),
    }


@pytest.fixture(scope="session")
def model_2020(files) -> HeadModel:
    return import_flame(files["2020"])


# ------------------------------------------------------------- reference FLAME
def rodrigues(r: np.ndarray) -> np.ndarray:
    theta = np.linalg.norm(r)
    if theta < 1e-12:
        return np.eye(3)
    k = r / theta
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * K @ K


def flame_forward(flame, betas, expr, pose, joints_from_expression=True) -> np.ndarray:
    """FLAME's own forward pass, in FLAME axes: pose (5, 3) axis-angle -> (V, 3).

    As the FLAME / SMPL-X code: v_shaped = template + shapedirs.[betas, expr]; joints =
    J_regressor.v_shaped; pose correctives from (R_j - I) of joints 1..4; LBS.
    """
    sd = flame["shapedirs"]
    coeffs = np.zeros(sd.shape[2])
    coeffs[: len(betas)] = betas
    coeffs[300 : 300 + len(expr)] = expr
    v_shaped = flame["v_template"] + sd @ coeffs
    joint_source = v_shaped if joints_from_expression else flame["v_template"] + sd[:, :, :300] @ coeffs[:300]
    J = flame["J_regressor"] @ joint_source
    R = np.stack([rodrigues(p) for p in pose])
    v_posed = v_shaped + flame["posedirs"] @ (R[1:] - np.eye(3)).reshape(-1)
    parents = [-1, 0, 1, 1, 1]
    world, skin = [], []
    for j in range(5):
        local = np.eye(4)
        local[:3, :3] = R[j]
        local[:3, 3] = J[j] - (J[parents[j]] if j else 0)
        world.append(local if j == 0 else world[parents[j]] @ local)
        rel = world[j].copy()
        rel[:3, 3] -= world[j][:3, :3] @ J[j]
        skin.append(rel)
    T = np.einsum("vj,jab->vab", flame["weights"], np.stack(skin))
    return np.einsum("vab,vb->va", T[:, :3, :3], v_posed) + T[:, :3, 3]


def head_motion(model, expr, pose) -> np.ndarray:
    """One motion frame: FLAME expression coefficients and pose rotated into head axes."""
    frame = np.zeros(model.num_channels)
    frame[: len(expr)] = expr
    for k, joint in enumerate(model.motion_joints):
        frame[model.rotation_slice(joint)] = M @ pose[k]
    return frame[None]


# -------------------------------------------------------------------- formats
def test_2020_fixture_is_a_python2_chumpy_pickle(files):
    data = files["2020"].read_bytes()
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    globals_ = {arg for name, arg in ops if name == "GLOBAL"}
    assert {"copy_reg _reconstructor", "chumpy.ch Ch", "scipy.sparse.csc csc_matrix", "__builtin__ set"} <= globals_
    binstrings = [arg for name, arg in ops if name in ("BINSTRING", "SHORT_BINSTRING")]
    assert any(max(s.encode("latin1")) >= 0x80 for s in binstrings if s)  # raw array data: latin1 only
    assert not any(name in ("BINUNICODE", "SHORT_BINUNICODE", "BINBYTES") for name, _ in ops)


@pytest.mark.parametrize("kind", ["2020", "2023-p2", "2023-p4", "2023-p5", "2023-dense", "npz"])
def test_each_format_gives_the_documented_structure(files, flame, model_2020, kind):
    model = import_flame(files[kind])
    assert model.num_channels == 100 + 15
    assert model.expression_names == tuple(f"expr{i:03d}" for i in range(100))
    assert model.joint_names == model.motion_joints == ("global", "neck", "jaw", "eye_left", "eye_right")
    assert model.joint_parents.tolist() == [-1, 0, 1, 1, 1]
    assert model.joint_roles["jaw"] == "jaw" and model.joint_roles["head"] == "neck"
    assert model.channel_names[100:103] == ["global.rx", "global.ry", "global.rz"]
    assert model.shape_names[0] == "shape000" and model.shape_basis.shape == (300, V, 3)
    assert model.pose_basis.shape == (36, V, 3) and model.joint_regressor.shape == (5, V)
    assert all(model.regions[r].size for r in ("lips", "upper_face", "lip_pairs", "eyes"))
    assert any("derived from the rig" in note for note in model.notes)
    assert "not redistributable" in model.licence
    digest = __import__("hashlib").sha256(files[kind].read_bytes()).hexdigest()
    assert files[kind].name in model.provenance and digest in model.provenance
    assert re.fullmatch(r"flame(2020|2023)?-[0-9a-f]{8}-e100", model.model_id)
    assert model.model_id.startswith("flame2020" if kind == "2020" else "flame2023")
    # Same synthetic FLAME in every container -> the same head.
    np.testing.assert_array_equal(model.template, model_2020.template)
    np.testing.assert_array_equal(model.pose_basis, model_2020.pose_basis)
    np.testing.assert_array_equal(model.faces, flame["f"].astype(np.int64))
    np.testing.assert_allclose(model.template, flame["v_template"] @ M.T, atol=1e-7)


def test_axes_are_z_up_face_minus_y(model_2020):
    eyes = model_2020.template[model_2020.regions["eyes"]]
    mouth = model_2020.template[model_2020.regions["lip_pairs"].ravel()]
    assert eyes[:, 2].mean() > mouth[:, 2].mean()  # eyes above the mouth
    assert mouth[:, 1].mean() < model_2020.template[:, 1].mean()  # mouth at the front (-Y)
    left = model_2020.joints[model_2020.joint_names.index("eye_left")]
    assert left[0] > 0  # the subject's left eye is +X, as in Blender


def test_n_expressions_option(files, model_2020):
    model = import_flame(files["2020"], n_expressions=10)
    assert model.num_channels == 10 + 15 and model.expression_names[-1] == "expr009"
    assert model.model_id.endswith("-e10")
    np.testing.assert_array_equal(model.expression_basis, model_2020.expression_basis[:10])
    for bad in (0, 101, 2.5):
        with pytest.raises(HeadModelError, match="choose 1 to 100"):
            import_flame(files["2020"], n_expressions=bad)


@pytest.mark.parametrize("container", ["array", "npy", "npz-betas", "npz-shape", "txt"])
def test_shape_coefficients_change_the_template_as_flame_does(files, flame, tmp_path, container):
    betas = np.random.default_rng(1).normal(0, 1, 10)
    source = {
        "array": lambda: betas,
        "npy": lambda: (np.save(tmp_path / "b.npy", betas[None]), tmp_path / "b.npy")[1],
        "npz-betas": lambda: (np.savez(tmp_path / "b.npz", betas=betas), tmp_path / "b.npz")[1],
        "npz-shape": lambda: (np.savez(tmp_path / "s.npz", shape=betas), str(tmp_path / "s.npz"))[1],
        "txt": lambda: (np.savetxt(tmp_path / "b.txt", betas), tmp_path / "b.txt")[1],
    }[container]()
    model = import_flame(files["2023-p4"], shape=source)
    rest = flame["v_template"] + flame["shapedirs"][:, :, :10] @ betas
    np.testing.assert_allclose(model.template, rest @ M.T, atol=1e-6)
    np.testing.assert_allclose(model.joints, flame["J_regressor"] @ rest @ M.T, atol=1e-6)
    assert any("identity" in note for note in model.notes)


def test_bad_shape_coefficients(files, tmp_path):
    with pytest.raises(HeadModelError, match="301 shape coefficients"):
        import_flame(files["npz"], shape=np.zeros(301))
    with pytest.raises(HeadModelError, match="not found"):
        import_flame(files["npz"], shape=tmp_path / "missing.npy")
    np.savez(tmp_path / "other.npz", expression=np.zeros(3))
    with pytest.raises(HeadModelError, match="betas"):
        import_flame(files["npz"], shape=tmp_path / "other.npz")


def test_masks_file_gives_the_regions(files, flame):
    model = import_flame(files["2020"], masks=files["masks"])
    m = flame["masks"]
    eyes = np.union1d(m["left_eyeball"], m["right_eyeball"])
    np.testing.assert_array_equal(model.regions["lips"], np.unique(m["lips"]))
    np.testing.assert_array_equal(model.regions["eyes"], eyes)
    upper_face = np.setdiff1d(np.union1d(m["forehead"], m["eye_region"]), eyes)
    np.testing.assert_array_equal(model.regions["upper_face"], upper_face)
    pairs = model.regions["lip_pairs"]
    assert len(pairs) >= 3 and np.isin(pairs, m["lips"]).all()
    upper, lower = model.template[pairs[:, 0]], model.template[pairs[:, 1]]
    assert np.all(upper[:, 2] > lower[:, 2])  # upper lip above the lower one (Z up)
    assert any("FLAME_masks.pkl" in note for note in model.notes)


def test_bad_masks_files(files, flame, tmp_path):
    write_masks_pickle(tmp_path / "partial.pkl", {"lips": flame["masks"]["lips"]})
    with pytest.raises(HeadModelError, match="not FLAME_masks.pkl"):
        import_flame(files["2020"], masks=tmp_path / "partial.pkl")
    wrong = dict(flame["masks"], lips=np.array([0, V + 5]))
    write_masks_pickle(tmp_path / "wrong.pkl", wrong)
    with pytest.raises(HeadModelError, match="mask 'lips'"):
        import_flame(files["2020"], masks=tmp_path / "wrong.pkl")
    write_malicious_pickle(tmp_path / "evil_masks.pkl", tmp_path / "owned", kind="system")
    with pytest.raises(UnsafePickleError):
        import_flame(files["2020"], masks=tmp_path / "evil_masks.pkl")
    assert not (tmp_path / "owned").exists()


# ------------------------------------------------------- coordinate conversion
def test_posed_vertices_match_flame_rotated_into_head_axes(files, flame):
    rng = np.random.default_rng(2)
    betas = rng.normal(0, 1, 20)
    model = import_flame(files["2020"], shape=betas)
    for _ in range(3):
        pose = rng.normal(0, 0.3, (5, 3))
        got = model.vertices(head_motion(model, [], pose))[0]
        np.testing.assert_allclose(got, flame_forward(flame, betas, [], pose) @ M.T, atol=2e-6)


def test_expressions_match_flame_rotated_into_head_axes(model_2020, flame):
    expr = np.random.default_rng(3).normal(0, 1, 100)
    got = model_2020.vertices(head_motion(model_2020, expr, np.zeros((5, 3))))[0]
    np.testing.assert_allclose(got, flame_forward(flame, [], expr, np.zeros((5, 3))) @ M.T, atol=2e-6)


def test_expression_and_pose_use_identity_joints(model_2020, flame):
    """The head-model format regresses joints from the identity shape only; FLAME also
    moves them with the expression. Equal when FLAME's joints are taken the same way."""
    rng = np.random.default_rng(4)
    expr, pose = rng.normal(0, 1, 100), rng.normal(0, 0.3, (5, 3))
    got = model_2020.vertices(head_motion(model_2020, expr, pose))[0]
    want = flame_forward(flame, [], expr, pose, joints_from_expression=False) @ M.T
    np.testing.assert_allclose(got, want, atol=2e-6)


# ------------------------------------------------------------- refused files
@pytest.mark.parametrize(
    "kind, refused",
    [("system", "posix.system"), ("exec", "exec"), ("subprocess", "subprocess.call"),
     ("nested", "posix.system"), ("py2", "posix.system")],
)
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, kind, refused):
    target = tmp_path / f"created_by_{kind}"
    evil = write_malicious_pickle(tmp_path / "generic_model.pkl", target, kind=kind)
    with pytest.raises(UnsafePickleError, match="run code") as info:
        import_flame(evil)
    assert refused in str(info.value)
    with pytest.raises(UnsafePickleError):
        load_restricted_pickle(evil)
    assert not target.exists()


def test_reconstructor_only_builds_stand_ins():
    ndarray = Py2Global("numpy", "ndarray")
    data = py2_pickle(Py2Call("copy_reg", "_reconstructor", (ndarray, ndarray, None)))
    with pytest.raises(UnsafePickleError, match="_reconstructor"):
        load_restricted_pickle(data)


def test_chumpy_expression_without_value_is_a_clear_error(tmp_path, flame):
    model = {k: flame[k] for k in FLAME_KEYS if k != "shapedirs"}
    model["shapedirs"] = Py2Instance("chumpy.reordering", "transpose", {"a": None, "axes": (1, 0)})
    path = tmp_path / "expr.pkl"
    path.write_bytes(py2_pickle(model))
    with pytest.raises(HeadModelError, match="chumpy expression .*chumpy.reordering.transpose"):
        import_flame(path)


def test_damaged_and_foreign_files(files, flame, tmp_path):
    data = files["2020"].read_bytes()
    cases = {
        "truncated.pkl": (data[: len(data) // 2], "truncated"),
        "random.pkl": (b"\x13" + np.random.default_rng(5).bytes(4000), "neither a pickle nor an .npz"),
        "random_header.pkl": (b"\x80\x02" + np.random.default_rng(6).bytes(4000), "FLAME|pickle|truncated"),
        "empty.pkl": (b"", "empty"),
        "dict.pkl": (pickle.dumps({"a": 1}), "missing v_template"),
        "list.pkl": (pickle.dumps([1, 2]), "not a FLAME model dictionary"),
        "masks.pkl": (files["masks"].read_bytes(), "FLAME_masks.pkl"),
        "truncated.npz": (files["npz"].read_bytes()[:5000], "npz"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(HeadModelError, match=message):
            import_flame(tmp_path / name)
    with pytest.raises(HeadModelError, match="not found"):
        import_flame(tmp_path / "nothing.pkl")
    with pytest.raises(HeadModelError, match="limit"):
        load_restricted_pickle(files["2020"], max_bytes=1000)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("posedirs", np.zeros((V, 3, 30)), r"'posedirs' has shape \(800, 3, 30\), expected \(800, 3, 36\)"),
        ("weights", np.zeros((V, 4)), "'weights' has shape"),
        ("J_regressor", np.zeros((5, V + 1)), "'J_regressor' has shape"),
        ("shapedirs", np.zeros((V, 3, 300)), "no expression components"),
        ("f", np.array([[0, 1, V]]), "'f' must be"),
        ("kintree_table", np.array([[2**32 - 1, 0, 0, 4, 1], [0, 1, 2, 3, 4]]), "kintree_table"),
        ("v_template", np.full((V, 3), np.nan), "NaN"),
    ],
)
def test_wrong_arrays_are_named(flame, tmp_path, key, value, message):
    model = {k: flame[k] for k in FLAME_KEYS}
    model[key] = value
    path = tmp_path / "flame2023.pkl"
    path.write_bytes(pickle.dumps(model))
    with pytest.raises(HeadModelError, match=message):
        import_flame(path)


def test_npz_with_object_arrays_is_refused(flame, tmp_path):
    arrays = {k: flame[k] for k in FLAME_KEYS}
    arrays["f"] = arrays["f"].astype(object)
    np.savez(tmp_path / "objects.npz", **arrays)
    with pytest.raises(HeadModelError, match="object arrays"):
        import_flame(tmp_path / "objects.npz")


# ----------------------------------------------------------------- round trip
def test_save_and_load_round_trip(files, tmp_path):
    model = import_flame(files["2020"], n_expressions=20, masks=files["masks"], shape=np.ones(5))
    loaded = HeadModel.load(model.save(tmp_path / "flame_head.npz"))
    assert loaded.metadata() == model.metadata()
    for key in ("template", "faces", "expression_basis", "joints", "joint_parents", "lbs_weights",
                "shape_basis", "joint_regressor", "pose_basis"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(model, key), err_msg=key)
    for region in model.regions:
        np.testing.assert_array_equal(loaded.regions[region], model.regions[region])
    motion = np.random.default_rng(7).normal(0, 0.2, (3, model.num_channels))
    np.testing.assert_array_equal(loaded.vertices(motion), model.vertices(motion))


# ------------------------------------------------------------ restricted loader
def test_sparse_stand_ins_densify():
    dense = np.array([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]])
    rows, cols = np.nonzero(dense)
    csr = {"_shape": (2, 3), "data": dense[rows, cols], "indices": cols.astype(np.int32),
           "indptr": np.array([0, 1, 3], np.int32)}
    coo = {"shape": (2, 3), "data": dense[rows, cols], "row": rows, "col": cols}
    loaded = load_restricted_pickle(py2_pickle({
        "csr": Py2Instance("scipy.sparse.csr", "csr_matrix", csr),
        "coo": Py2Instance("scipy.sparse._coo", "coo_matrix", coo, newobj=True),
    }))
    for key in ("csr", "coo"):
        np.testing.assert_array_equal(loaded[key].to_array(), dense)
    huge = Py2Instance("scipy.sparse.csc", "csc_matrix", dict(csr, _shape=(10**6, 10**6)))
    with pytest.raises(HeadModelError, match="implausible"):
        load_restricted_pickle(py2_pickle(huge)).to_array()


def test_plain_python3_pickles_of_arrays_load():
    value = {"a": np.arange(6.0).reshape(2, 3), "b": np.float32(1.5), "c": np.array([1, 2], np.uint8), "s": {"x"}}
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        loaded = load_restricted_pickle(pickle.dumps(value, protocol=protocol))
        np.testing.assert_array_equal(loaded["a"], value["a"])
        assert loaded["b"] == value["b"] and loaded["s"] == {"x"}
        np.testing.assert_array_equal(loaded["c"], value["c"])


def test_codecs_encode_is_latin1_only():
    data = py2_pickle(Py2Call("_codecs", "encode", ("abc", "rot13")))
    with pytest.raises(UnsafePickleError, match="latin1"):
        load_restricted_pickle(data)


def test_flame_sized_fixture_imports(tmp_path):
    path = write_flame_2020_pickle(tmp_path / "generic_model.pkl")  # 5023 vertices, ~53 MB like FLAME 2020
    model = import_flame(path)
    assert model.num_vertices == 5023 and model.num_channels == 115
    assert len(model.regions["lip_pairs"]) >= 3


def test_self_referencing_chumpy_object_is_an_error():
    # PROTO 2; a Ch via NEWOBJ, memoised, whose state {'x': <itself>} is applied with BUILD.
    data = b"\x80\x02cchumpy.ch\nCh\n)\x81q\x00}q\x01U\x01xh\x00sb."
    with pytest.raises(HeadModelError, match="refers to itself"):
        load_restricted_pickle(data).to_array()
