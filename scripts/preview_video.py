"""An MP4 preview of the scene: H.264 video with the sequencer's sound as an AAC track.

`render_mp4` renders the scene camera over a frame range with the render engine and
resolution already set (see `stills.use_workbench`), on Blender 4.2 to 5.0.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import bpy


def render_mp4(scene, out: Path, frame_start: int, frame_end: int,
               before_frame: Callable[[int], None] | None = None) -> Path:
    """Render frames [frame_start, frame_end] to ``out`` (.mp4, written as it renders:
    give a temporary name and rename it when this returns, see
    `model.core.batch_jobs.StagedOutputs`). Changes the scene's output settings and frame
    range (save the .blend before if they matter).

    before_frame(frame) is called before each frame is rendered, on the main thread: the
    one place Python runs during a render, so where an interrupt can act (an exception
    raised there is only printed by Blender; to stop, the caller ends the process)."""
    from captalk.captalk_addon.compat import use_video_output

    render = scene.render
    settings = render.image_settings
    use_video_output(settings)
    settings.file_format = "FFMPEG"
    render.ffmpeg.format = "MPEG4"
    render.ffmpeg.codec = "H264"
    render.ffmpeg.constant_rate_factor = "MEDIUM"
    render.ffmpeg.ffmpeg_preset = "REALTIME"  # a preview: fastest encoder settings
    render.ffmpeg.audio_codec = "AAC"
    render.ffmpeg.audio_channels = "MONO"
    render.ffmpeg.audio_mixrate = 48000
    render.use_sequencer = True  # without it the AAC track is silent; with only sound strips the camera renders
    render.use_file_extension = True
    scene.frame_start, scene.frame_end = frame_start, frame_end

    out = Path(out)
    render.filepath = str(out)  # with an extension Blender adds no frame numbers

    def hook(rendered_scene, *_):
        if rendered_scene == scene:
            before_frame(rendered_scene.frame_current)

    if before_frame is not None:
        bpy.app.handlers.render_pre.append(hook)
    try:
        bpy.ops.render.render(animation=True, scene=scene.name)
    finally:
        if hook in bpy.app.handlers.render_pre:
            bpy.app.handlers.render_pre.remove(hook)
    return out
