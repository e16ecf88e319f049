"""Add Speech: put an audio file on the sound strips Generate reads, those of the scene
that holds the CapTalk settings and rig (the window's scene).

Why an operator: in Blender 5.x the Sequencer edits a workspace's *sequencer scene*, which
the default Layout leaves empty (Add > Sound there fails with "Context missing sequencer
scene") and whose *New* button makes an empty scene without the rig. This puts the strip
where Generate looks, whatever the Sequencer shows, and points an empty Sequencer at it.
"""
from __future__ import annotations

import math
import os

import bpy
from bpy_extras.io_utils import ImportHelper

from ..captalk_addon.compat import show_in_sequencer, strip_collection
from ..captalk_addon.sequencer import AudioError, NoAudioSupport, add_sound_strip, first_free_channel, sound_seconds


class CAPTALK_OT_add_speech(bpy.types.Operator, ImportHelper):
    """Put a speech recording on this scene's sound strips (the ones Generate reads) at the playhead"""

    bl_idname = "captalk.add_speech"
    bl_label = "Add Speech"
    bl_options = {"REGISTER", "UNDO"}

    filter_glob: bpy.props.StringProperty(default="*.wav;*.flac;*.mp3;*.ogg;*.aac;*.m4a;*.opus", options={"HIDDEN"})
    frame_start: bpy.props.IntProperty(name="Start Frame", description="Frame the speech starts at; 0: the playhead",
                                       default=0, options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        return context.scene is not None

    def execute(self, context):
        scene = context.scene
        path = bpy.path.abspath(self.filepath)
        frame = self.frame_start or scene.frame_current
        if not os.path.isfile(path):
            self.report({"ERROR"}, f"No audio file at '{path}'")
            return {"CANCELLED"}
        try:
            seconds = sound_seconds(path) or 0.0  # unknown without `aud`: the first frame decides
            frames = max(1, math.ceil(seconds * scene.render.fps / scene.render.fps_base))
            strip = add_sound_strip(scene, path, frame, first_free_channel(scene, frame, frame + frames))
        except (AudioError, NoAudioSupport) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        for other in strip_collection(scene):  # Generate animates the selected strips: this one
            other.select = other == strip
        scene.sequence_editor.active_strip = strip
        show_in_sequencer(context, scene)
        self.report({"INFO"}, f"Added '{strip.name}' to the strips of scene '{scene.name}' at frame {frame}")
        return {"FINISHED"}


classes = (CAPTALK_OT_add_speech,)
