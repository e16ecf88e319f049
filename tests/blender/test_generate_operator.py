"""Generate from audio strip, end to end: real bpy, the default model in a real worker
process, short clips. PyPI bpy 4.2 has no sound (no Audaspace), so these run on 4.5 and 5.0."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from captalk_test_utils import action_keys, add_artist_actions, describe_action  # noqa: E402

pytestmark = pytest.mark.skipif(not bpy.app.build_options.audaspace, reason="this bpy build has no audio")

SPEECH = Path(__file__).resolve().parents[2] / "samples" / "speech_sample.wav"
HAPPY = "a strong delighted expression, beaming"


@pytest.fixture
def scene(empty_scene, open_head_file, tmp_path):
    """The open head as the scene's rig and the sample speech as a strip at frame 11."""
    from captalk.captalk_addon.rig_builder import find_rig
    from captalk.captalk_addon.sequencer import add_sound_strip

    assert bpy.ops.captalk.add_open_head() == {"FINISHED"}
    mesh, _ = find_rig(bpy.context.active_object)
    scene = bpy.context.scene
    scene.captalk.target_rig = mesh
    scene.captalk.style, scene.captalk.emotion = "a calm teacher", "neutral"
    audio = tmp_path / "line.wav"
    shutil.copy(SPEECH, audio)
    strip = add_sound_strip(scene, str(audio), 11, name="line")
    scene.sequence_editor.active_strip = strip
    return scene


def rig(scene):
    from captalk.captalk_addon.rig_builder import find_rig

    return find_rig(scene.captalk.target_rig)


def captalk_actions() -> list[str]:
    from captalk.captalk_addon.animation import PROP_STRIP

    return sorted(a.name for a in bpy.data.actions if PROP_STRIP in a)


def generate() -> set:
    return bpy.ops.captalk.generate_from_strip()


def shape_values(scene, name: str, frames) -> np.ndarray:
    key = rig(scene)[0].data.shape_keys
    values = []
    for frame in frames:
        scene.frame_set(int(frame))
        values.append(key.key_blocks[name].value)
    return np.array(values)


def worker_motion(scene, strip_name: str = "line"):
    """The motion the worker gives for the strip's planned request (deterministic per seed)."""
    from captalk.captalk_addon.generation import plan_jobs
    from captalk.captalk_addon.worker import get_worker, worker_spec

    job = next(j for j in plan_jobs(scene) if j.strip_name == strip_name)
    return job, get_worker(worker_spec()).generate(job.request)[0]


@pytest.mark.parametrize("rate", [(25, 1.0), (30, 1.0), (30, 1.001)], ids=["25", "30", "29.97"])
def test_keys_sit_on_the_strips_frames_with_the_models_motion(scene, rate):
    from captalk.model.core.timeline import SceneRate, sample_motion

    scene.render.fps, scene.render.fps_base = rate
    strip = scene.sequence_editor.active_strip
    strip.frame_offset_start = 20  # trimmed: the first 20 frames of the sound do not play
    job, clip = worker_motion(scene)
    seconds_per_frame = rate[1] / rate[0]
    assert job.timing.audio_start == pytest.approx(20 * seconds_per_frame)
    assert job.timing.start_frame == pytest.approx(31)
    assert generate() == {"FINISHED"}
    assert (scene.render.fps, scene.render.fps_base) == (rate[0], pytest.approx(rate[1])), "frame rate untouched"

    key = rig(scene)[0].data.shape_keys
    keys = action_keys(key.animation_data.nla_tracks["CapTalk"].strips[0].action)
    frames, values = sample_motion(clip.motion, job.timing.start_frame, SceneRate.from_blender(*rate))
    jaw = clip.channels.index("jawOpen")
    co = keys[('key_blocks["jawOpen"].value', 0)]
    np.testing.assert_array_equal(co[:, 0], frames)
    np.testing.assert_allclose(co[:, 1], values[:, jaw], atol=1e-6)
    assert frames[0] == 31 and frames[-1] == pytest.approx(
        np.floor(31 + (len(clip.motion) - 1) / 25 * rate[0] / rate[1]))


def test_a_marker_changes_the_motion_after_its_frame_and_not_before(scene):
    frames = np.arange(11, 11 + 7 * 25)
    assert generate() == {"FINISHED"}
    before = shape_values(scene, "mouthSmileLeft", frames)
    scene.frame_set(11 + 75)  # 3 s into the audio
    assert bpy.ops.captalk.section_add() == {"FINISHED"}
    scene.captalk.sections[0].emotion = HAPPY
    assert generate() == {"FINISHED"}
    after = shape_values(scene, "mouthSmileLeft", frames)
    change = 75
    np.testing.assert_allclose(after[:change], before[:change], atol=1e-6)
    assert after[change + 10:].mean() > before[change + 10:].mean() + 0.1, "the smile comes with the section"


def test_the_artists_action_stays_and_regenerating_replaces_only_ours(scene):
    from captalk.captalk_addon.sequencer import add_sound_strip

    mesh, armature = rig(scene)
    artist_keys, artist_bones = add_artist_actions(mesh, armature)
    artist = (describe_action(artist_keys), describe_action(artist_bones))
    other = add_sound_strip(scene, str(SPEECH), 400, channel=2, name="other")
    for strip in (scene.sequence_editor.active_strip, other):
        strip.select = True
    assert generate() == {"FINISHED"}
    assert captalk_actions() == ["CapTalk line bones", "CapTalk line shape keys", "CapTalk other bones",
                                 "CapTalk other shape keys"]
    other_before = action_keys(bpy.data.actions["CapTalk other shape keys"])
    other.select = False
    scene.captalk.seed = 7
    assert generate() == {"FINISHED"}  # only "line" again, another take
    assert captalk_actions() == ["CapTalk line bones", "CapTalk line shape keys", "CapTalk other bones",
                                 "CapTalk other shape keys"]
    after = action_keys(bpy.data.actions["CapTalk other shape keys"])
    assert all(np.array_equal(after[k], other_before[k]) for k in other_before)
    assert (describe_action(artist_keys), describe_action(artist_bones)) == artist
    assert mesh.data.shape_keys.animation_data.action == artist_keys, "still the active action"


def test_undo_removes_the_result_in_one_step(scene):
    bpy.ops.ed.undo_push(message="before")
    assert generate() == {"FINISHED"}
    bpy.ops.ed.undo_push(message="Generate from Audio Strip")
    assert captalk_actions()
    bpy.ops.ed.undo()
    assert captalk_actions() == []
    bpy.ops.ed.redo()
    assert len(captalk_actions()) == 2


def test_cancel_mid_run_leaves_the_scene_as_it_was(scene, scene_fingerprint):
    from captalk.captalk_addon.generation import GenerationRun, plan_jobs
    from captalk.captalk_addon.worker import worker_spec

    before = scene_fingerprint()
    run = GenerationRun(worker_spec(), plan_jobs(scene)).start()
    deadline = time.monotonic() + 120
    while "window" not in run.message and time.monotonic() < deadline:
        assert run.step() == "running"  # the main thread is free while the worker works
        time.sleep(0.02)
    assert "window" in run.message and 0 < run.fraction < 1
    run.cancel()
    assert run.step() == "cancelled"
    assert scene_fingerprint() == before
    assert captalk_actions() == []


def test_the_modal_run_reports_progress_and_finishes(scene):
    from captalk.captalk_addon.generation import GenerationRun, apply_results, plan_jobs
    from captalk.captalk_addon.worker import worker_spec

    run = GenerationRun(worker_spec(), plan_jobs(scene)).start()
    fractions = []
    while run.step() == "running":
        fractions.append(run.fraction)
        time.sleep(0.02)
    assert run.state == "done" and run.backend.startswith("Back end: cpu")
    assert fractions == sorted(fractions)
    assert apply_results(run.jobs, run.results) == 2


def test_several_strips_drive_their_own_rigs(scene):
    from captalk.captalk_addon.rig_builder import find_rig
    from captalk.captalk_addon.sequencer import add_sound_strip

    first_mesh, _ = rig(scene)
    assert bpy.ops.captalk.add_open_head() == {"FINISHED"}
    second_mesh, second_armature = find_rig(bpy.context.active_object)
    assert second_mesh != first_mesh
    other = add_sound_strip(scene, str(SPEECH), 300, channel=2, name="second character")
    other.captalk_rig = second_armature
    scene.sequence_editor.active_strip.select = True
    other.select = True
    assert generate() == {"FINISHED"}
    for mesh, strip_name, start in ((first_mesh, "line", 11), (second_mesh, "second character", 300)):
        strips = mesh.data.shape_keys.animation_data.nla_tracks["CapTalk"].strips
        assert [s.action.name for s in strips] == [f"CapTalk {strip_name} shape keys"]
        assert strips[0].frame_start == start


def test_takes_are_kept_muted_beside_the_result(scene):
    scene.captalk.takes = 3
    assert generate() == {"FINISHED"}
    key = rig(scene)[0].data.shape_keys
    strips = {s.action.name: s for t in key.animation_data.nla_tracks for s in t.strips}
    assert sorted(strips) == ["CapTalk line shape keys", "CapTalk line take 2 shape keys",
                              "CapTalk line take 3 shape keys"]
    assert [strips[n].mute for n in sorted(strips)] == [False, True, True]
    scene.captalk.takes = 1
    assert generate() == {"FINISHED"}
    assert captalk_actions() == ["CapTalk line bones", "CapTalk line shape keys"], "older takes go too"


def test_bad_setups_are_refused_clearly_and_change_nothing(scene, scene_fingerprint, tmp_path):
    before = scene_fingerprint()
    strip = scene.sequence_editor.active_strip
    scene.sequence_editor.active_strip = None
    strip.select = False
    with pytest.raises(RuntimeError, match="Select the sound strip"):
        generate()
    scene.sequence_editor.active_strip = strip
    scene.captalk.target_rig = None
    with pytest.raises(RuntimeError, match="No rig for 'line'"):
        generate()
    scene.captalk.target_rig = next(o for o in bpy.data.objects if o.type == "MESH")
    Path(bpy.path.abspath(strip.sound.filepath)).unlink()
    with pytest.raises(RuntimeError, match="The sound of 'line' is missing"):
        generate()
    assert scene_fingerprint() == before


def test_a_worker_killed_mid_job_is_restarted_and_the_job_sent_again(scene, tmp_path):
    import os
    import signal
    import wave

    from captalk.captalk_addon.generation import GenerationRun, plan_jobs
    from captalk.captalk_addon.sequencer import add_sound_strip
    from captalk.captalk_addon.worker import get_worker, worker_spec

    long_audio = tmp_path / "long.wav"
    with wave.open(str(SPEECH)) as source, wave.open(str(long_audio), "wb") as target:
        target.setparams(source.getparams())
        target.writeframes(source.readframes(source.getnframes()) * 8)  # a minute: still running when killed
    strip = scene.sequence_editor.active_strip
    strip.select = False
    long_strip = add_sound_strip(scene, str(long_audio), 1, channel=2, name="long")
    long_strip.select = True
    spec = worker_spec()
    first_pid = get_worker(spec).session.pid
    run = GenerationRun(spec, plan_jobs(scene)).start()
    deadline = time.monotonic() + 120
    while "encoding" not in run.message and "window" not in run.message and time.monotonic() < deadline:
        assert run.step() == "running"
        time.sleep(0.01)
    os.kill(first_pid, signal.SIGKILL)
    messages = set()
    while run.step() == "running" and time.monotonic() < deadline:
        messages.add(run.message)
        time.sleep(0.02)
    assert run.state == "done", run.error
    assert "the back end stopped; restarting it" in messages
    assert get_worker(spec).session.pid != first_pid
    assert len(run.results[0][0].motion) > 1000
