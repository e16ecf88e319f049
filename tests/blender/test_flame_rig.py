"""Import FLAME into Blender: the documented structure, and bad files change nothing.

FLAME itself is never used: the files are FLAME-format fakes written by flame_fixtures.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

import flame_fixtures  # noqa: E402
import hostile_files  # noqa: E402
from captalk_test_utils import evaluated_vertices  # noqa: E402


@pytest.fixture(scope="module")
def flame_sized_file(tmp_path_factory):
    """A FLAME-2020-style pickle of FLAME's size: 5,023 vertices, 300 shape + 100 expression."""
    return flame_fixtures.write_flame_2020_pickle(tmp_path_factory.mktemp("flame") / "generic_model.pkl")


def test_flame_import_builds_the_documented_rig(empty_scene, flame_sized_file, record_property):
    start = time.perf_counter()
    result = bpy.ops.captalk.import_flame(filepath=str(flame_sized_file))
    seconds = time.perf_counter() - start
    record_property("flame_sized_import_seconds", round(seconds, 3))
    print(f"FLAME-sized import (5,023 vertices, 100 expression shape keys): {seconds:.2f} s")
    assert result == {"FINISHED"}

    from captalk.captalk_addon.rig_builder import find_rig
    from captalk.model.core.head_model import HeadModel

    mesh_object, armature = find_rig(bpy.context.active_object)
    head = HeadModel.load(mesh_object["captalk_head_file"])
    keys = [k.name for k in mesh_object.data.shape_keys.key_blocks]
    assert keys == ["Basis"] + [f"expr{i:03d}" for i in range(100)]
    assert len(mesh_object.data.vertices) == 5023
    assert [b.name for b in armature.data.bones] == ["global", "neck", "jaw", "eye_left", "eye_right"]
    assert [g.name for g in mesh_object.vertex_groups] == list(head.joint_names)
    assert mesh_object.modifiers["CapTalk Armature"].object == armature
    assert mesh_object["captalk_head_model"] == armature["captalk_head_model"] == head.model_id
    assert head.model_id.startswith("flame2020-")
    assert head.num_channels == 100 + 15

    # Shape keys reproduce the expression basis (within float32 round-off).
    motion = head.neutral_motion(1)
    motion[0, [3, 50]] = (2.0, -1.5)
    for k in (3, 50):
        mesh_object.data.shape_keys.key_blocks[k + 1].value = float(motion[0, k])
    expected = head.vertices(motion)[0]
    assert np.abs(evaluated_vertices(mesh_object) - expected).max() < 1e-5


def test_expression_count_option(empty_scene, tmp_path):
    path = flame_fixtures.write_flame_npz(tmp_path / "flame.npz")
    assert bpy.ops.captalk.import_flame(filepath=str(path), expressions=20) == {"FINISHED"}
    keys = bpy.context.active_object.data.shape_keys.key_blocks
    assert len(keys) == 21


HOSTILE = {  # issue 20: each of these crashed Blender (segfault) or escaped as a MemoryError traceback
    "object_dtype_reconstruct": lambda: hostile_files.RECONSTRUCT_OBJECT_SEGFAULT,
    "object_buffer_csc": hostile_files.object_buffer_flame,
    "object_field_struct": hostile_files.object_field_struct,
    "indptr_bomb": hostile_files.indptr_bomb,
    "npz_declaring_8_TB": lambda: hostile_files.flame_npz_claiming((10**6, 10**6)),
}


@pytest.mark.parametrize("damage", ["truncated", "random", "malicious", "wrong_dict", "missing", *HOSTILE])
def test_bad_flame_files_leave_the_scene_unchanged(empty_scene, tmp_path, scene_fingerprint, damage):
    good = flame_fixtures.write_flame_2023_pickle(tmp_path / "good.pkl")
    path = tmp_path / f"{damage}.{'npz' if damage.startswith('npz') else 'pkl'}"
    trap = tmp_path / "payload_ran"
    if damage == "truncated":
        path.write_bytes(good.read_bytes()[:5000])
    elif damage == "random":
        path.write_bytes(np.random.default_rng(0).bytes(20000))
    elif damage == "malicious":
        flame_fixtures.write_malicious_pickle(path, trap)
    elif damage == "wrong_dict":
        import pickle

        path.write_bytes(pickle.dumps({"v_template": np.zeros((10, 3))}))
    elif damage in HOSTILE:
        path.write_bytes(HOSTILE[damage]())
    assert bpy.ops.captalk.add_open_head.poll()  # the scene is in a state that accepts imports
    before = scene_fingerprint()
    with pytest.raises(RuntimeError) as error:  # bpy.ops turns an ERROR report into RuntimeError
        bpy.ops.captalk.import_flame(filepath=str(path))
    assert "Error:" in str(error.value) and "Traceback" not in str(error.value)
    if damage in HOSTILE:
        assert path.name in str(error.value)  # the message names the file (and why it was refused)
    assert scene_fingerprint() == before
    assert not trap.exists()
