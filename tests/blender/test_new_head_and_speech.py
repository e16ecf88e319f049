"""What a newcomer's first steps need (issue 15, findings 1, 5, 6, 7), in PyPI bpy; the same
steps in Blender's UI are in tests/ui."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

SPEECH = Path(__file__).resolve().parents[2] / "samples" / "speech_sample.wav"


def world_box(obj):
    corners = np.array([tuple(obj.matrix_world @ __import__("mathutils").Vector(c)) for c in obj.bound_box])
    return corners.min(0), corners.max(0)


@pytest.fixture
def default_scene(addon):
    """Blender's default scene: camera, light and the 2 m cube at the origin."""
    bpy.ops.wm.read_factory_settings(use_empty=False)
    assert "Cube" in bpy.data.objects
    return bpy.context.scene


def test_add_open_head_sets_the_rig_names_its_collection_once_and_stands_on_the_cube(default_scene,
                                                                                     open_head_file):
    assert bpy.ops.captalk.add_open_head() == {"FINISHED"}
    head = bpy.context.active_object
    assert default_scene.captalk.target_rig == head, "Generate works next without choosing the rig"
    assert head.users_collection[0].name == "CapTalk open head"
    bpy.context.view_layer.update()
    (head_low, _), (_, cube_high) = world_box(head), world_box(bpy.data.objects["Cube"])
    assert head_low[2] >= cube_high[2], "on top of the cube, not hidden inside it"
    first = head
    assert bpy.ops.captalk.add_open_head() == {"FINISHED"}
    bpy.context.view_layer.update()
    assert default_scene.captalk.target_rig == first, "a second head does not take the panel's rig"
    assert world_box(bpy.context.active_object)[0][2] >= world_box(first)[1][2], "nor the first one's place"


@pytest.mark.skipif(not bpy.app.build_options.audaspace, reason="this bpy build has no audio")
def test_add_speech_puts_the_strip_on_this_scene_selected_and_active(default_scene):
    default_scene.frame_current = 12
    assert bpy.ops.captalk.add_speech(filepath=str(SPEECH)) == {"FINISHED"}
    from captalk.captalk_addon.compat import strip_collection, strip_frames

    strips = list(strip_collection(default_scene))
    assert len(strips) == 1 and strip_frames(strips[0]).left == 12 and strips[0].select
    assert default_scene.sequence_editor.active_strip == strips[0]
    assert bpy.ops.captalk.add_speech(filepath=str(SPEECH), frame_start=100) == {"FINISHED"}
    assert sorted(s.channel for s in strip_collection(default_scene)) == [1, 2], "no overlap on one channel"


def test_add_speech_refuses_a_missing_file_and_leaves_the_scene(default_scene, tmp_path):
    had_editor = default_scene.sequence_editor is not None
    with pytest.raises(RuntimeError, match="No audio file"):
        bpy.ops.captalk.add_speech(filepath=str(tmp_path / "none.wav"))
    assert (default_scene.sequence_editor is not None) == had_editor and len(bpy.data.sounds) == 0
