"""An MP4 preview of the scene: H.264 video with the sequencer's sound as an AAC track.

`render_mp4` renders the scene camera over a frame range with the render engine and
resolution already set (see `stills.use_workbench`), on Blender 4.2 to 5.0.
"""
from __future__ import annotations

import os
from pathlib import Path

import bpy


def render_mp4(scene, out: Path, frame_start: int, frame_end: int) -> Path:
    """Render frames [frame_start, frame_end] to ``out`` (.mp4). Changes the scene's output
    settings and frame range (save the .blend before if they matter). The file appears
    whole or not at all: Blender writes it under a temporary name first."""
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
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")  # an extension: Blender adds no frame numbers
    render.filepath = str(partial)
    try:
        bpy.ops.render.render(animation=True, scene=scene.name)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out
