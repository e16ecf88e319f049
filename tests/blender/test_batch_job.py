"""The headless main job, run as a real process the way the README runs it."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

BATCH = Path(__file__).resolve().parents[2] / "scripts" / "captalk_batch.py"


def batch_env(data_dir) -> dict:
    """The test's data folder, and its back end: $CAPTALK_BACKEND_PYTHON, else this interpreter."""
    return dict(os.environ, CAPTALK_DATA_DIR=str(data_dir),
                CAPTALK_BACKEND_PYTHON=os.environ.get("CAPTALK_BACKEND_PYTHON", sys.executable))


def run_batch(*args, data_dir) -> subprocess.CompletedProcess:
    env = batch_env(data_dir)
    return subprocess.run([sys.executable, str(BATCH), *args], env=env, capture_output=True, text=True, timeout=600)


def test_without_a_motion_model_the_job_stops_clearly_and_writes_nothing(tmp_path, data_dir, open_head_file):
    out = tmp_path / "out"
    result = run_batch("--out", str(out), "--checkpoint", str(tmp_path / "no-model"), data_dir=data_dir)
    assert result.returncode == 3, result.stderr
    assert "no motion model at" in result.stderr and "Nothing was animated or written" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()  # never a scene without motion, never a fake preview


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00\x00\x00WAVEfmt garbage", bytes(range(256)) * 64])
def test_unreadable_audio_is_a_clear_error_and_writes_nothing(tmp_path, data_dir, content):
    audio = tmp_path / "speech.wav"
    audio.write_bytes(content)
    out = tmp_path / "out"
    result = run_batch("--audio", str(audio), "--out", str(out), data_dir=data_dir)
    if not bpy.app.build_options.audaspace:  # PyPI bpy 4.2 cannot read any audio
        assert result.returncode == 3 and "has no audio support" in result.stderr
    else:
        assert result.returncode == 2, result.stderr
        assert "is not audio this Blender can read" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_missing_audio_is_a_clear_error(tmp_path, data_dir):
    result = run_batch("--audio", str(tmp_path / "nope.wav"), "--out", str(tmp_path), data_dir=data_dir)
    assert result.returncode == 2
    assert "audio file not found" in result.stderr
    assert not list(tmp_path.iterdir())


def test_blender_side_never_loads_torch(tmp_path, data_dir, open_head_file):
    """Rig import and the animation writer use numpy only in Blender's process: torch stays in the back end."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import sys, bpy\n"
        f"sys.path[:0] = [{str(BATCH.parent)!r}, {str(BATCH.parents[1] / 'tests')!r}]\n"
        "import source_addon, flame_fixtures\n"
        "source_addon.register_from_source()\n"
        "import captalk.captalk_addon.animation, captalk.model.core.timeline, captalk.model.core.motion_file\n"
        "bpy.ops.wm.read_factory_settings(use_empty=True)\n"
        "assert bpy.ops.captalk.add_open_head() == {'FINISHED'}\n"
        f"path = flame_fixtures.write_flame_npz({str(tmp_path / 'f.npz')!r})\n"
        "assert bpy.ops.captalk.import_flame(filepath=str(path)) == {'FINISHED'}\n"
        "print('torch loaded:', 'torch' in sys.modules)\n"
    )
    env = dict(os.environ, CAPTALK_DATA_DIR=str(data_dir))
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "torch loaded: False" in result.stdout


# ----------------------------------------------------------------- the whole job, with a model
# A tiny model trained in a fixture (tests/conftest.py), run through the real back-end process
# ($CAPTALK_BACKEND_PYTHON from the Blender 4.5 environment). PyPI bpy 4.2 has no sound, so
# there the job stops before the model (tested above).
needs_audio = pytest.mark.skipif(not bpy.app.build_options.audaspace, reason="this bpy build has no audio")
SCENE_RATE = (30, 1.001)  # 29.97 fps
STRIP_START = 12


def run_batch_on(blend: Path, *args, data_dir) -> subprocess.CompletedProcess:
    """``blender -b BLEND --python captalk_batch.py -- ARGS`` as PyPI bpy runs it: open, then the script."""
    code = ("import bpy, runpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); "
            "sys.argv = [sys.argv[2], '--', *sys.argv[3:]]; runpy.run_path(sys.argv[0], run_name='__main__')")
    env = batch_env(data_dir)
    return subprocess.run([sys.executable, "-c", code, str(blend), str(BATCH), *args], env=env, capture_output=True,
                          text=True, timeout=600)


def short_speech(path: Path, seconds: float) -> Path:
    """The first ``seconds`` of the bundled speech sample."""
    import wave

    with wave.open(str(BATCH.parents[1] / "samples" / "speech_sample.wav")) as source:
        params = source.getparams()
        frames = source.readframes(int(seconds * params.framerate))
    with wave.open(str(path), "wb") as target:
        target.setparams(params)
        target.writeframes(frames)
    return path


def open_blend(path: Path):
    bpy.ops.wm.open_mainfile(filepath=str(path))
    scene = bpy.context.scene
    mesh = next(o for o in scene.objects if o.get("captalk_rig_part") == "mesh")
    from captalk.captalk_addon.rig_builder import find_rig
    from captalk.captalk_addon.compat import strip_collection

    return scene, *find_rig(mesh), list(strip_collection(scene))


@pytest.fixture(scope="module")
def batch_runs(tmp_path_factory, addon, data_dir, open_head_file, tiny_checkpoint):
    """The job on an artist's 29.97 fps scene (with their own actions), then again on its result."""
    from captalk_test_utils import add_artist_actions, describe_action

    root = tmp_path_factory.mktemp("batch")
    audio = short_speech(root / "line.wav", 2.4)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    assert bpy.ops.captalk.add_open_head() == {"FINISHED"}
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = SCENE_RATE
    from captalk.captalk_addon.rig_builder import find_rig

    artist = add_artist_actions(*find_rig(bpy.context.active_object))
    artist_content = [describe_action(a) for a in artist]
    bpy.ops.wm.save_as_mainfile(filepath=str(root / "scene.blend"), copy=True)

    checkpoint = str(tiny_checkpoint[1])
    first = run_batch_on(root / "scene.blend", "--audio", str(audio), "--out", str(root / "out1"), "--checkpoint",
                         checkpoint, "--start-frame", str(STRIP_START), "--seed", "3", data_dir=data_dir)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = run_batch_on(root / "out1" / "captalk_demo.blend", "--audio", str(audio), "--out", str(root / "out2"),
                          "--checkpoint", checkpoint, "--seed", "4", "--no-render", data_dir=data_dir)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return {"root": root, "audio": audio, "artist": artist_content}


def captalk_results() -> list:
    from captalk.captalk_addon.animation import PROP_STRIP

    return sorted(((a.name, a[PROP_STRIP]) for a in bpy.data.actions if PROP_STRIP in a))


def assert_keys_follow_the_timeline(scene, mesh, armature, strip, motion_file):
    """Every shape-key and head-bone F-curve holds `model.core.timeline`'s frames and values."""
    from captalk.captalk_addon.animation import captalk_strips
    from captalk.model.core.motion_file import load_motion
    from captalk.model.core.rig_layout import bone_local_quaternions
    from captalk.model.core.timeline import SceneRate, channel_layout, sample_motion
    from captalk_test_utils import action_keys

    clip = load_motion(motion_file)
    frames, values = sample_motion(clip.motion, STRIP_START, SceneRate(*SCENE_RATE))
    assert strip.frame_start == STRIP_START and frames[0] == STRIP_START
    expressions, joints = channel_layout(clip.channels)
    (shape_strip,) = captalk_strips(mesh.data.shape_keys, strip.name)
    keys = action_keys(shape_strip.action)
    assert len(keys) == len(expressions) == 52 and shape_strip.frame_start == STRIP_START
    for k, name in enumerate(expressions):
        co = keys[(f'key_blocks["{name}"].value', 0)]
        np.testing.assert_array_equal(co[:, 0], frames)
        np.testing.assert_allclose(co[:, 1], values[:, k], atol=1e-6)
    assert joints == ("head",)
    (bone_strip,) = captalk_strips(armature, strip.name)
    quats = bone_local_quaternions(values[:, len(expressions):], np.array(armature.data.bones["head"].matrix_local)[:3, :3])
    bone_keys = action_keys(bone_strip.action)
    for i in range(4):
        np.testing.assert_allclose(bone_keys[('pose.bones["head"].rotation_quaternion', i)][:, 1], quats[:, i], atol=1e-6)
    return values


@needs_audio
def test_the_job_keys_the_rig_on_the_scene_frames_and_leaves_the_artist_actions(batch_runs):
    from captalk_test_utils import describe_action

    root = batch_runs["root"]
    assert {p.name for p in (root / "out1").iterdir()} == {"captalk_demo.blend", "captalk_demo_motion.npz",
                                                           "captalk_demo.mp4"}
    scene, mesh, armature, strips = open_blend(root / "out1" / "captalk_demo.blend")
    assert (scene.render.fps, round(scene.render.fps_base, 6)) == SCENE_RATE  # never changed
    (strip,) = strips
    values = assert_keys_follow_the_timeline(scene, mesh, armature, strip, root / "out1" / "captalk_demo_motion.npz")
    assert np.ptp(values[:, :52], axis=0).max() > 0.01  # it moves

    artist = (mesh.data.shape_keys.animation_data.action, armature.animation_data.action)
    assert [describe_action(a) for a in artist] == batch_runs["artist"]


@needs_audio
def test_running_the_job_again_replaces_only_its_own_result(batch_runs):
    from captalk_test_utils import describe_action

    root = batch_runs["root"]
    assert {p.name for p in (root / "out2").iterdir()} == {"captalk_demo.blend", "captalk_demo_motion.npz"}
    scene, mesh, armature, strips = open_blend(root / "out2" / "captalk_demo.blend")
    (strip,) = strips  # the same sound strip, not a second one
    assert captalk_results() == [(f"CapTalk {strip.name} bones", strip.name),
                                 (f"CapTalk {strip.name} shape keys", strip.name)]
    assert_keys_follow_the_timeline(scene, mesh, armature, strip, root / "out2" / "captalk_demo_motion.npz")
    from captalk.model.core.motion_file import load_motion

    first = load_motion(root / "out1" / "captalk_demo_motion.npz").motion
    assert not np.allclose(load_motion(root / "out2" / "captalk_demo_motion.npz").motion, first)  # seed 4, not 3
    artist = (mesh.data.shape_keys.animation_data.action, armature.animation_data.action)
    assert [describe_action(a) for a in artist] == batch_runs["artist"]


@needs_audio
def test_the_preview_has_the_audio_length_and_a_sound_track(batch_runs):
    import aud

    root = batch_runs["root"]
    _, _, _, (strip,) = open_blend(root / "out1" / "captalk_demo.blend")
    frames = strip.frame_final_end - strip.frame_final_start  # the audio's frames, all rendered
    clip = bpy.data.movieclips.load(str(root / "out1" / "captalk_demo.mp4"))
    assert tuple(clip.size) == (480, 480)
    assert clip.frame_duration == frames and clip.fps == pytest.approx(30 / 1.001, abs=0.01)
    sound = aud.Sound(str(root / "out1" / "captalk_demo.mp4"))
    rate = sound.specs[0]
    samples = sound.resample(16000, False).rechannel(1).data()[:, 0]
    assert len(samples) / 16000 == pytest.approx(2.4, abs=0.1)  # AAC pads a few ms
    assert abs(frames / (30 / 1.001) - 2.4) < 1.5 / 29.97
    assert rate > 0 and float(np.sqrt(np.mean(samples ** 2))) > 0.01  # speech, not silence


@needs_audio
def test_a_bad_schedule_is_bad_input_and_writes_nothing(tmp_path, data_dir, open_head_file, tiny_checkpoint):
    schedule = tmp_path / "schedule.json"
    schedule.write_text('[{"start": 0, "emotion": "happy"}, {"start": -2, "emotion": "sad"}]')
    out = tmp_path / "out"
    result = run_batch("--out", str(out), "--checkpoint", str(tiny_checkpoint[1]), "--schedule", str(schedule),
                       data_dir=data_dir)
    assert result.returncode == 2, result.stderr
    assert "schedule entry 2" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


# ----------------------------------------------------------------- job lists, every strip, engines, in-process
@needs_audio
def test_a_job_list_writes_each_job_from_the_same_scene(tmp_path, addon, data_dir, open_head_file, tiny_checkpoint):
    from captalk.model.core.motion_file import load_motion

    short_speech(tmp_path / "a.wav", 1.6)
    short_speech(tmp_path / "b.wav", 2.8)
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps({"jobs": [
        {"name": "first", "audio": "a.wav", "emotion": "sad"},
        {"name": "second", "audio": "b.wav", "rig": "open", "start_frame": 20, "seed": 2,
         "schedule": [{"start": 1.2, "emotion": "very happy"}]}]}))
    out = tmp_path / "out"
    result = run_batch("--jobs", str(jobs), "--out", str(out), "--checkpoint", str(tiny_checkpoint[1]), "--no-render",
                       data_dir=data_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == {"first.blend", "first_motion.npz", "second.blend", "second_motion.npz"}
    assert load_motion(out / "first_motion.npz").num_frames == 40
    assert load_motion(out / "second_motion.npz").num_frames == 70
    scene, mesh, armature, strips = open_blend(out / "second.blend")
    assert [s.name for s in strips] == ["b"] and strips[0].frame_start == 20, "not the first job's strip"
    (section,) = scene.captalk.sections
    assert section.emotion == "very happy"
    fps = scene.render.fps / scene.render.fps_base  # the factory scene's 24
    assert scene.timeline_markers[section.marker_name].frame == math.ceil(20 + 1.2 * fps), "first frame at 1.2 s"
    assert captalk_results() == [("CapTalk b bones", "b"), ("CapTalk b shape keys", "b")]


@needs_audio
def test_a_bad_job_anywhere_in_the_list_stops_the_run_before_anything(tmp_path, data_dir, tiny_checkpoint):
    short_speech(tmp_path / "a.wav", 1.0)
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([{"audio": "a.wav"}, {"audio": "missing.wav"}]))
    out = tmp_path / "out"
    result = run_batch("--jobs", str(jobs), "--out", str(out), "--checkpoint", str(tiny_checkpoint[1]),
                       data_dir=data_dir)
    assert result.returncode == 2 and "audio file not found" in result.stderr and "missing.wav" in result.stderr
    assert not out.exists()
    jobs.write_text(json.dumps([{"audio": "a.wav", "colour": "red"}]))
    result = run_batch("--jobs", str(jobs), "--out", str(out), data_dir=data_dir)
    assert result.returncode == 2 and "unknown key(s) colour" in result.stderr and not out.exists()


@needs_audio
def test_every_sound_strip_of_a_blend_drives_its_own_rig(tmp_path, addon, data_dir, open_head_file, tiny_checkpoint):
    from captalk.captalk_addon.rig_builder import find_rig
    from captalk.captalk_addon.sequencer import add_sound_strip

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    rigs = []
    for _ in range(2):
        assert bpy.ops.captalk.add_open_head() == {"FINISHED"}
        rigs.append(find_rig(bpy.context.active_object)[0])
    rig_names = [rig.name for rig in rigs]
    for number, (rig, start) in enumerate(zip(rigs, (1, 80))):
        strip = add_sound_strip(scene, str(short_speech(tmp_path / f"line{number}.wav", 1.2 + number)), start,
                                channel=number + 1, name=f"line{number}")
        strip.captalk_rig = rig
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "two.blend"), copy=True)
    out = tmp_path / "out"
    result = run_batch_on(tmp_path / "two.blend", "--all-strips", "--name", "dialogue", "--out", str(out),
                          "--checkpoint", str(tiny_checkpoint[1]), "--no-render", data_dir=data_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == {"dialogue.blend", "dialogue_motion_line0.npz",
                                               "dialogue_motion_line1.npz"}
    bpy.ops.wm.open_mainfile(filepath=str(out / "dialogue.blend"))
    for number, start in enumerate((1, 80)):
        rig = bpy.data.objects[rig_names[number]]
        (track,) = [t for t in rig.data.shape_keys.animation_data.nla_tracks if t.name == "CapTalk"]
        assert [(s.action.name, s.frame_start) for s in track.strips] == [(f"CapTalk line{number} shape keys", start)]


@needs_audio
@pytest.mark.parametrize("engine", ["eevee", "cycles"])
def test_eevee_and_cycles_previews_cover_the_audio(tmp_path, addon, data_dir, open_head_file, tiny_checkpoint, engine):
    audio = short_speech(tmp_path / "blip.wav", 0.4)
    out = tmp_path / "out"
    result = run_batch("--audio", str(audio), "--out", str(out), "--checkpoint", str(tiny_checkpoint[1]), "--engine",
                       engine, "--samples", "1", "--resolution", "64", data_dir=data_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    clip = bpy.data.movieclips.load(str(out / "captalk_demo.mp4"))
    assert tuple(clip.size) == (64, 64) and clip.frame_duration == 10  # 0.4 s at 25 fps
    bpy.ops.wm.open_mainfile(filepath=str(out / "captalk_demo.blend"))
    assert bpy.context.scene.render.engine == {"eevee": "BLENDER_EEVEE" if bpy.app.version >= (5, 0, 0)
                                              else "BLENDER_EEVEE_NEXT", "cycles": "CYCLES"}[engine]


@needs_audio
def test_in_process_gives_the_workers_motion(tmp_path, addon, data_dir, open_head_file, tiny_checkpoint):
    pytest.importorskip("torch", reason="in-process generation needs torch in this Blender's Python")
    from captalk.model.core.motion_file import load_motion

    audio = short_speech(tmp_path / "line.wav", 2.0)
    motions = []
    for mode, extra in (("worker", []), ("in-process", ["--in-process"])):
        out = tmp_path / mode
        result = run_batch("--audio", str(audio), "--out", str(out), "--checkpoint", str(tiny_checkpoint[1]),
                           "--no-render", "--seed", "5", *extra, data_dir=data_dir)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert ("in this process" in result.stdout) == (mode == "in-process")
        motions.append(load_motion(out / "captalk_demo_motion.npz").motion)
    np.testing.assert_allclose(motions[0], motions[1], atol=1e-4)
