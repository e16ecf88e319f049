"""The FLAME bridge: the open head's ARKit motion carried onto FLAME-format rigs.

Fixtures are the open head itself written as FLAME files (tests/flame_fixtures.py), so
the truth of every mapping is known: the same mesh; shuffled vertex order; a subdivided
and warped copy with barycentric ground truth; bases that cannot make some shapes; and
the synthetic ellipsoid 'FLAME', which no open head can be registered onto.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from flame_fixtures import open_head_as_flame, write_flame_2020_pickle, write_flame_npz, write_malicious_pickle
from model.core.flame_adapter import (AdapterError, FlameAdapter, NoAdapter, adapter_path, failure_path,
                                      find_adapter, map_to_rig)
from model.core.flame_import import import_flame
from model.core.head_model import HeadModel
from model.core.motion_file import MotionClip
from model.flame_bridge.build import build_adapter, face_weights
from model.flame_bridge.registration import RegistrationError, rig_parts
from conftest import REPO_ROOT

UNIT_MEAN_MM = 0.15  # each unit shape on the same mesh: mean error over the surface
UNIT_LIPS_MM = 0.5  # ... and the largest error on the lips
BILABIAL_GAP_MM = 0.3


@pytest.fixture(scope="module")
def source(open_head_file) -> HeadModel:
    return HeadModel.load(open_head_file)


def _rig(tmp_path_factory, source, name, n_expressions=100, **options):
    fixture = open_head_as_flame(source, **options)
    path = write_flame_npz(tmp_path_factory.mktemp("flame") / f"{name}.npz", flame=fixture.flame)
    target = import_flame(path, n_expressions=n_expressions)
    return fixture, target, build_adapter(source, target)


@pytest.fixture(scope="module")
def same(tmp_path_factory, source):
    return _rig(tmp_path_factory, source, "same")


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory, source):
    return _rig(tmp_path_factory, source, "shuffled", shuffle=True, seed=3)


@pytest.fixture(scope="module")
def warped(tmp_path_factory, source):
    return _rig(tmp_path_factory, source, "warped", shuffle=True, split=485, warp=True, seed=5)


def _units(source) -> MotionClip:
    S = source.num_expressions
    motion = np.zeros((S, source.num_channels), np.float32)
    motion[np.arange(S), np.arange(S)] = 1.0
    return MotionClip(motion, tuple(source.channel_names))


def _truth(source, fixture, motion):
    """The open head's vertices for ``motion``, at each fixture vertex's source point."""
    verts = source.vertices(motion)
    return np.einsum("tvkc,vk->tvc", verts[:, fixture.source_vertices], fixture.source_weights)


def _unit_errors(source, fixture, target, adapter):
    clip = _units(source)
    mapped = map_to_rig(clip, adapter)
    error = np.linalg.norm(target.vertices(mapped.motion) - _truth(source, fixture, clip.motion), axis=2)
    surface = rig_parts(target).surface
    lips = target.regions["lips"]
    return {name: (1000 * error[k, surface].mean(), 1000 * error[k, lips].max())
            for k, name in enumerate(source.expression_names) if name != "tongueOut"}


@pytest.mark.parametrize("rig", ["same", "shuffled"])
def test_each_unit_arkit_shape_is_recovered(rig, request, source):
    fixture, target, adapter = request.getfixturevalue(rig)
    errors = _unit_errors(source, fixture, target, adapter)
    bad = {name: (round(m, 3), round(x, 3)) for name, (m, x) in errors.items()
           if m > UNIT_MEAN_MM or x > UNIT_LIPS_MM}
    assert not bad, f"shapes off by more than {UNIT_MEAN_MM} mm mean / {UNIT_LIPS_MM} mm on the lips: {bad}"
    assert adapter.unmapped == ("tongueOut",) and "tongueOut" not in adapter.shape_names


def test_shuffled_order_is_found_without_vertex_numbers(shuffled, source):
    """Every surface vertex of the shuffled copy lands on the open-head vertex it came from."""
    from model.flame_bridge.registration import register

    fixture, target, _ = shuffled
    reg = register(source, target)
    found = reg.interpolate(source.template.astype(np.float64)[None])[0]
    truth = source.template[fixture.source_vertices[:, 0]]
    surface = rig_parts(target).surface
    assert surface.sum() == 4200 + 72 + 40  # the head and both eyeballs; the tongue is left out
    error = np.linalg.norm(found - truth, axis=1)[surface]
    assert error.max() < 1e-5


def test_registration_recovers_the_barycentric_truth(warped, source):
    fixture, target, adapter = warped
    from model.flame_bridge.registration import register

    reg = register(source, target)
    found = reg.interpolate(source.template.astype(np.float64)[None])[0]
    truth = np.einsum("vkc,vk->vc", source.template[fixture.source_vertices], fixture.source_weights)
    parts = rig_parts(target)
    face = parts.surface & (target.template[:, 1] < target.template[parts.surface, 1].mean())
    error = 1000 * np.linalg.norm(found - truth, axis=1)
    lips = target.regions["lips"]
    print(f"warped fixture: correspondence error mean {error[face].mean():.3f} mm, p95 "
          f"{np.percentile(error[face], 95):.3f} mm, lips mean {error[lips].mean():.3f} mm")
    assert error[face].mean() < 0.5 and np.percentile(error[face], 95) < 1.5 and error[lips].mean() < 0.5
    assert abs(reg.scale - 1.06) < 0.02


def test_warped_rig_reproduces_the_shapes(warped, source):
    """Displacements, compared after the fixture's own similarity (scale 1.06, 4 degrees about Z)."""
    fixture, target, adapter = warped
    clip = _units(source)
    mapped = map_to_rig(clip, adapter)
    moved = target.vertices(mapped.motion) - target.template
    rest = np.einsum("vkc,vk->vc", source.template[fixture.source_vertices], fixture.source_weights)
    a = np.radians(4.0)
    R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    truth = 1.06 * (_truth(source, fixture, clip.motion) - rest) @ R.T
    error = 1000 * np.linalg.norm(moved - truth, axis=2)
    surface, lips = rig_parts(target).surface, target.regions["lips"]
    keep = [k for k, n in enumerate(source.expression_names) if n != "tongueOut"]
    mean, lip = error[keep][:, surface].mean(axis=1), error[keep][:, lips].mean(axis=1)
    print(f"warped fixture, unit shapes: surface mean {mean.mean():.3f} mm (worst {mean.max():.3f}), "
          f"lips mean {lip.mean():.3f} mm (worst {lip.max():.3f})")
    assert mean.max() < 0.7 and lip.max() < 1.0


def _speech_like_motion(source, frames=400, seed=0, closed_out=None) -> np.ndarray:
    """Open-head motion with bilabial closures: the jaw opens and closes, smiles and
    puckers come and go, and on every third beat mouthClose, mouthPress and the lip rolls
    are solved (least squares, within [0, 1]) so that the open head's lips touch while
    the jaw stays open, as a /p b m/ does."""
    from scipy.optimize import lsq_linear

    rng = np.random.default_rng(seed)
    idx = {n: i for i, n in enumerate(source.channel_names)}
    t = np.arange(frames) / 25.0
    motion = np.zeros((frames, source.num_channels), np.float32)
    motion[:, idx["jawOpen"]] = 0.05 + 0.2 * (1 + np.sin(2 * np.pi * 2.1 * t)) / 2
    for name in ("mouthSmileLeft", "mouthSmileRight", "mouthFunnel", "mouthPucker", "browInnerUp"):
        motion[:, idx[name]] = np.clip(0.15 + 0.1 * np.sin(t * rng.uniform(1, 3) + rng.uniform(0, 6)), 0, 1)
    motion[:, idx["head.rx"]] = 0.1 * np.sin(t)
    motion[:, idx["head.rz"]] = 0.05 * np.sin(0.7 * t)
    pairs = source.regions["lip_pairs"]
    B = source.expression_basis.astype(np.float64)
    basis = B[:, pairs[:, 0]] - B[:, pairs[:, 1]]  # (E, K, 3)
    rest = (source.template[pairs[:, 0]] - source.template[pairs[:, 1]]).astype(np.float64)
    closers = [idx[n] for n in ("mouthClose", "mouthPressLeft", "mouthPressRight", "mouthRollUpper",
                                "mouthRollLower", "mouthShrugLower", "mouthShrugUpper")]
    closed = np.sin(2 * np.pi * 0.7 * t) > 0.5
    motion[closed, idx["jawOpen"]] = np.minimum(motion[closed, idx["jawOpen"]], 0.1)
    E = source.num_expressions
    normal = rest / np.linalg.norm(rest, axis=1, keepdims=True)
    opening = np.einsum("ekc,kc->ek", basis, normal)  # (E, K): opening per unit weight
    for f in np.flatnonzero(closed):
        now = np.einsum("kc,kc->k", rest, normal) + motion[f, :E] @ opening
        fit = lsq_linear(opening[closers].T, -now, bounds=(0, 1))
        motion[f, closers] = fit.x
    if closed_out is not None:
        closed_out.append(closed)
    return motion


def _openings(verts, pairs, normal):
    """(T, K) signed lip openings in mm: upper minus lower vertex along each pair's rest
    opening direction ``normal`` (K, 3) (the head hardly turns in these clips)."""
    return 1000 * np.einsum("tkc,kc->tk", verts[:, pairs[:, 0]] - verts[:, pairs[:, 1]], normal)


def test_bilabial_frames_keep_the_lips_closed(same, source):
    fixture, target, adapter = same
    beats = []
    motion = _speech_like_motion(source, closed_out=beats)
    mapped = map_to_rig(MotionClip(motion, tuple(source.channel_names)), adapter)
    pairs = target.regions["lip_pairs"]  # same mesh: the same vertices on both rigs
    src_pairs = np.stack([fixture.source_vertices[pairs[:, 0], 0], fixture.source_vertices[pairs[:, 1], 0]], 1)
    rest = source.template[src_pairs[:, 0]] - source.template[src_pairs[:, 1]]
    normal = rest / np.linalg.norm(rest, axis=1, keepdims=True)
    src_gap = _openings(source.vertices(motion), src_pairs, normal)
    tgt_gap = _openings(target.vertices(mapped.motion), pairs, normal)
    # closed: the lip pairs that touch on the open head (|opening| < 0.5 mm) on the bilabial beats
    closed = beats[0][:, None] & (np.abs(src_gap) < 0.5)
    assert closed.sum() > 500, f"the open head's lips must touch ({closed.sum()} touching pairs)"
    error = np.abs(tgt_gap - src_gap)[closed]
    print(f"bilabial frames: {beats[0].sum()}, touching pairs {closed.sum()}, gap error mean {error.mean():.3f} mm, max {error.max():.3f} mm")
    assert error.mean() <= BILABIAL_GAP_MM and np.percentile(error, 95) <= 2 * BILABIAL_GAP_MM

    # without the gap term (the fixed-matrix projection) the lips are measurably worse
    psi_only = dict(adapter.arrays, solve_gap=np.zeros_like(adapter.arrays["solve_gap"]),
                    solve_data=np.eye(adapter.num_expressions))
    fixed = map_to_rig(MotionClip(motion, tuple(source.channel_names)),
                       FlameAdapter(**{**adapter.__dict__, "arrays": psi_only}))
    fixed_gap = _openings(target.vertices(fixed.motion), pairs, normal)
    fixed_error = np.abs(fixed_gap - src_gap)[closed]
    print(f"without the gap term: gap error mean {fixed_error.mean():.3f} mm, max {fixed_error.max():.3f} mm")
    assert fixed_error.mean() >= error.mean()


def test_residual_report_matches_an_independent_projection(tmp_path_factory, source):
    fixture, target, adapter = _rig(tmp_path_factory, source, "cut30", n_expressions=30, components=30)
    W = face_weights(target, rig_parts(target).surface)
    B = target.expression_basis.reshape(30, -1).astype(np.float64)
    w3 = np.repeat(W, 3)
    for name, figures in adapter.report["channels"].items():
        if name.startswith(("jaw", "eyeLook")) or name == "mouthClose":
            continue  # those are rotation + expressions; checked by the unit tests
        d = source.expression_basis[source.expression_names.index(name)].astype(np.float64)
        d = np.einsum("vkc,vk->vc", d[fixture.source_vertices], fixture.source_weights).ravel()
        coef = np.linalg.lstsq((B * np.sqrt(w3)).T, d * np.sqrt(w3), rcond=None)[0]
        expected = np.sqrt(np.sum(w3 * (d - B.T @ coef) ** 2) / np.sum(w3 * d**2))
        assert figures["relative"] == pytest.approx(expected, abs=0.02), name
    assert max(f["relative"] for f in adapter.report["channels"].values()) > 0.5  # 30 cannot make all


def test_residual_report_names_the_shapes_the_basis_cannot_make(tmp_path_factory, source, same):
    _, _, adapter = _rig(tmp_path_factory, source, "dropped", drop=("cheekPuff", "mouthPucker"))
    report = adapter.report["channels"]
    assert report["cheekPuff"]["relative"] > 0.7 and report["mouthPucker"]["relative"] > 0.7
    full = same[2].report["channels"]
    assert full["cheekPuff"]["relative"] < 0.01 and full["mouthPucker"]["relative"] < 0.01


def test_ellipsoid_registration_fails_with_a_clear_message(tmp_path, source):
    target = import_flame(write_flame_npz(tmp_path / "ellipsoid.npz", num_vertices=800))
    with pytest.raises(RegistrationError, match="registration failed: .* does not look like a human head"):
        build_adapter(source, target)


def test_mapped_clip_is_in_the_rigs_channels(same, source):
    _, target, adapter = same
    clip = MotionClip(_speech_like_motion(source, 50), tuple(source.channel_names), meta={"seed": 1})
    mapped = map_to_rig(clip, adapter)
    assert mapped.channels == tuple(target.channel_names) and mapped.motion.shape == (50, target.num_channels)
    assert mapped.meta["unmapped"] == ["tongueOut"] and mapped.meta["seed"] == 1
    assert mapped.meta["head_model"] == target.model_id
    # head rotation goes onto FLAME's neck (the same mesh: the same axes)
    neck = target.rotation_slice("neck")
    np.testing.assert_allclose(mapped.motion[:, neck], clip.motion[:, -3:], atol=1e-6)
    with pytest.raises(AdapterError, match="channels"):
        map_to_rig(MotionClip(np.zeros((3, 4), np.float32), ("a", "b", "c", "d")), adapter)


def test_adapter_file_round_trip_and_refusals(same, source, tmp_path):
    _, target, adapter = same
    path = adapter.save(tmp_path / "a.npz")
    loaded = FlameAdapter.load(path)
    clip = MotionClip(_speech_like_motion(source, 20), tuple(source.channel_names))
    np.testing.assert_array_equal(map_to_rig(clip, loaded).motion, map_to_rig(clip, adapter).motion)
    assert loaded.shapes.shape == (51, target.num_vertices, 3)
    evil = tmp_path / "evil.npz"
    np.savez(evil, meta=np.array(["x"], dtype=object))
    with pytest.raises(AdapterError, match="not a readable FLAME adapter"):
        FlameAdapter.load(evil)
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(AdapterError):
        FlameAdapter.load(tmp_path / "bad.npz")


def _backend(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "model", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_flame_adapter_command_builds_the_cache(tmp_path, source, data_dir):
    fixture = open_head_as_flame(source)
    pkl = write_flame_2020_pickle(tmp_path / "generic_model.pkl", flame=fixture.flame)
    done = _backend("flame-adapter", str(pkl))
    assert done.returncode == 0, done.stdout + done.stderr
    model_id = import_flame(pkl).model_id
    assert adapter_path(model_id).is_file() and "tongueOut" in done.stdout
    adapter = find_adapter(model_id)
    assert adapter.target_model_id == model_id and adapter.source_model_id == source.model_id


def test_flame_adapter_command_refuses_bad_files(tmp_path, data_dir):
    target = tmp_path / "pwned"
    evil = write_malicious_pickle(tmp_path / "evil.pkl", target)
    done = _backend("flame-adapter", str(evil))
    assert done.returncode == 2 and not target.exists() and "Traceback" not in done.stderr
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    done = _backend("flame-adapter", str(tmp_path / "junk.pkl"))
    assert done.returncode == 2 and "Traceback" not in done.stderr

    ellipsoid = write_flame_npz(tmp_path / "ellipsoid.npz", num_vertices=800)
    done = _backend("flame-adapter", str(ellipsoid))
    assert done.returncode == 2 and "registration failed" in done.stderr, done.stderr
    model_id = import_flame(ellipsoid).model_id
    assert failure_path(model_id).is_file() and not adapter_path(model_id).exists()
    with pytest.raises(NoAdapter, match="cannot drive .* registration failed"):
        find_adapter(model_id)
