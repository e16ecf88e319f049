"""Generate on an imported FLAME-format rig (the open head written as a FLAME file): the
bundled model drives it through the adapter built at import. Real bpy, real worker."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from flame_fixtures import open_head_as_flame, write_flame_2020_pickle, write_flame_npz  # noqa: E402

pytestmark = pytest.mark.skipif(not bpy.app.build_options.audaspace, reason="this bpy build has no audio")
SPEECH = Path(__file__).resolve().parents[2] / "samples" / "speech_sample.wav"


@pytest.fixture(scope="module")
def flame_file(open_head_file, tmp_path_factory):
    from model.core.head_model import HeadModel

    fixture = open_head_as_flame(HeadModel.load(open_head_file))
    return write_flame_2020_pickle(tmp_path_factory.mktemp("flame") / "generic_model.pkl", flame=fixture.flame)


def _scene_with(path, tmp_path):
    from captalk.captalk_addon.rig_builder import find_rig
    from captalk.captalk_addon.sequencer import add_sound_strip

    assert bpy.ops.captalk.import_flame(filepath=str(path)) == {"FINISHED"}
    mesh, armature = find_rig(bpy.context.active_object)
    scene = bpy.context.scene
    scene.captalk.target_rig = mesh
    audio = tmp_path / "line.wav"
    shutil.copy(SPEECH, audio)
    scene.sequence_editor.active_strip = add_sound_strip(scene, str(audio), 1, name="line")
    return scene, mesh, armature


def test_generate_keys_the_flame_rig(empty_scene, flame_file, tmp_path):
    from captalk.captalk_addon.animation import PROP_STRIP

    scene, mesh, armature = _scene_with(flame_file, tmp_path)
    assert "driven by the bundled model" in mesh["captalk_drive_status"]
    bpy.ops.ed.undo_push(message="before")
    assert bpy.ops.captalk.generate_from_strip() == {"FINISHED"}
    assert "not mapped onto the rig: tongueOut" in bpy.context.window_manager.captalk_job.message
    actions = sorted(a.name for a in bpy.data.actions if PROP_STRIP in a)
    assert len(actions) == 2
    key_paths = {fc.data_path for a in bpy.data.actions if PROP_STRIP in a for fc in _fcurves(a)}
    assert 'key_blocks["expr000"].value' in key_paths
    assert any(p.startswith('pose.bones["jaw"]') for p in key_paths)
    assert any(p.startswith('pose.bones["neck"]') for p in key_paths)
    values = []
    for frame in range(1, 60, 5):
        scene.frame_set(frame)
        values.append(armature.pose.bones["jaw"].rotation_quaternion[1])
    assert np.ptp(values) > 1e-3, "the jaw must move with the speech"
    bpy.ops.ed.undo_push(message="Generate")
    bpy.ops.ed.undo()
    assert not [a for a in bpy.data.actions if PROP_STRIP in a]


def test_a_rig_whose_registration_fails_says_it_cannot_be_driven(empty_scene, tmp_path):
    ellipsoid = write_flame_npz(tmp_path / "ellipsoid.npz", num_vertices=800)
    scene, mesh, _ = _scene_with(ellipsoid, tmp_path)
    assert "cannot be driven by the bundled model" in mesh["captalk_drive_status"]
    assert "registration failed" in mesh["captalk_drive_status"]
    with pytest.raises(RuntimeError, match="cannot drive head model .*registration failed"):
        bpy.ops.captalk.generate_from_strip()
    from captalk.captalk_addon.animation import PROP_STRIP

    assert not [a for a in bpy.data.actions if PROP_STRIP in a]


def _fcurves(action):
    if hasattr(action, "layers") and action.layers:
        return [fc for layer in action.layers for strip in layer.strips for bag in strip.channelbags
                for fc in bag.fcurves]
    return list(action.fcurves)


def test_the_batch_animates_a_flame_file(flame_file, tmp_path, data_dir):
    """``captalk_batch.py --rig FLAME.pkl``: the motion file is in the FLAME rig's channels."""
    import json
    import os
    import subprocess
    import sys

    from model.core.flame_import import import_flame
    from model.core.motion_file import load_motion

    batch = Path(__file__).resolve().parents[2] / "scripts" / "captalk_batch.py"
    env = dict(os.environ, CAPTALK_DATA_DIR=str(data_dir),
               CAPTALK_BACKEND_PYTHON=os.environ.get("CAPTALK_BACKEND_PYTHON", sys.executable))
    done = subprocess.run([sys.executable, str(batch), "--rig", str(flame_file), "--audio", str(SPEECH),
                           "--out", str(tmp_path / "out"), "--name", "flame", "--no-render"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    clip = load_motion(tmp_path / "out" / "flame_motion.npz")
    target = import_flame(flame_file)
    assert clip.channels == tuple(target.channel_names)
    assert clip.meta["unmapped"] == ["tongueOut"] and clip.meta["head_model"] == target.model_id
    jaw = clip.motion[:, target.rotation_slice("jaw")]
    assert np.ptp(jaw[:, 0]) > 0.01, json.dumps(clip.meta)
    assert (tmp_path / "out" / "flame.blend").is_file()


def test_arkit_shape_keys_are_added_on_request(empty_scene, flame_file, open_head_file):
    """Import FLAME with 'ARKit shape keys': the open head's expressions, carried over, by name."""
    from captalk.captalk_addon.rig_builder import find_rig
    from model.core.flame_adapter import FlameAdapter, adapter_path
    from model.core.flame_import import import_flame

    assert bpy.ops.captalk.import_flame(filepath=str(flame_file), arkit_shapes=True) == {"FINISHED"}
    mesh, _ = find_rig(bpy.context.active_object)
    keys = mesh.data.shape_keys.key_blocks
    adapter = FlameAdapter.load(adapter_path(import_flame(flame_file).model_id))
    assert set(adapter.shape_names) <= set(keys.keys()) and "tongueOut" not in keys
    assert "expr000" in keys  # the rig's own channels stay
    n = len(mesh.data.vertices)
    basis, jaw = np.empty(3 * n, np.float32), np.empty(3 * n, np.float32)
    keys[0].data.foreach_get("co", basis)
    keys["jawOpen"].data.foreach_get("co", jaw)
    np.testing.assert_allclose((jaw - basis).reshape(n, 3), adapter.shapes[adapter.shape_names.index("jawOpen")],
                               atol=1e-6)
    assert np.abs(jaw - basis).max() > 0.01  # the jaw opens by centimetres
