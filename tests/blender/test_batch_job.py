"""The headless main job, run as a real process the way the README runs it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

BATCH = Path(__file__).resolve().parents[2] / "scripts" / "captalk_batch.py"


def run_batch(*args, data_dir) -> subprocess.CompletedProcess:
    env = dict(os.environ, CAPTALK_DATA_DIR=str(data_dir))
    return subprocess.run([sys.executable, str(BATCH), *args], env=env, capture_output=True, text=True, timeout=600)


def test_main_job_imports_rig_places_audio_and_stops_before_motion(tmp_path, data_dir, open_head_file):
    result = run_batch("--out", str(tmp_path / "out"), data_dir=data_dir)
    if not bpy.app.build_options.audaspace:  # PyPI bpy 4.2: no sound in this build
        assert result.returncode == 3
        assert "has no audio support" in result.stderr and "Traceback" not in result.stderr
        return
    assert result.returncode == 3, result.stderr
    assert "no CapTalk motion model is bundled yet" in result.stderr
    blend = tmp_path / "out" / "captalk_demo.blend"
    assert blend.is_file()
    assert not list((tmp_path / "out").glob("*.mp4"))  # never a fake preview

    check = (
        "import bpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); s = bpy.context.scene;"
        "ed = s.sequence_editor; strips = ed.strips if hasattr(ed, 'strips') else ed.sequences;"
        "mesh = [o for o in s.objects if o.get('captalk_rig_part') == 'mesh'][0];"
        "print(len(strips), strips[0].type, mesh.data.shape_keys is not None, mesh.animation_data is None)"
    )
    out = subprocess.run([sys.executable, "-c", check, str(blend)], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "1 SOUND True True"


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
    """Rig import in Blender's process uses numpy only: torch stays in the back end."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import sys, bpy\n"
        f"sys.path[:0] = [{str(BATCH.parent)!r}, {str(BATCH.parents[1] / 'tests')!r}]\n"
        "import source_addon, flame_fixtures\n"
        "source_addon.register_from_source()\n"
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
