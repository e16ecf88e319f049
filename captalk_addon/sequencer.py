"""Sound on the sequencer: checking that Blender can play a file, adding and finding sound strips."""
from __future__ import annotations

import os

import bpy

from ..model.core.audio import AudioError
from ..model.core.errors import MissingPart
from .compat import strip_collection, strip_frames


class NoAudioSupport(MissingPart):
    """This Blender build cannot load sound (PyPI bpy 4.2 is built without Audaspace)."""


def check_audio(filepath: str) -> None:
    """Raise `AudioError` (or `NoAudioSupport`) unless this Blender can decode ``filepath`` into some sound.

    Blender adds a strip even for a file it cannot decode, so we ask its audio library first.
    """
    if not bpy.app.build_options.audaspace:
        raise NoAudioSupport(
            f"This Blender build ({bpy.app.version_string}) has no audio support (Audaspace), so it "
            "cannot put sound on the timeline. Use Blender from blender.org or PyPI bpy 4.5 or newer."
        )
    import aud

    try:
        length = aud.Sound(filepath).length
    except aud.error:
        raise AudioError(f"'{filepath}' is not audio this Blender can read (missing, corrupt or unknown format)") from None
    if length <= 0:
        raise AudioError(f"'{filepath}' holds no sound (zero length)")


def add_sound_strip(scene, filepath: str, frame_start: int, channel: int = 1, name: str | None = None):
    """Add a sound strip; extends the scene's frame range to cover it (never its frame rate).

    The file is checked before the scene is touched: bad audio leaves it as it was.
    """
    check_audio(filepath)
    strips = strip_collection(scene)
    strip = strips.new_sound(name or bpy.path.display_name_from_filepath(filepath), filepath, channel, frame_start)
    scene.frame_end = max(scene.frame_end, strip_frames(strip).right - 1)
    return strip


def find_sound_strip(scene, filepath: str):
    """The first sound strip of ``scene`` playing ``filepath`` (paths compared resolved), or None."""
    if scene.sequence_editor is None:
        return None
    wanted = os.path.realpath(filepath)
    for strip in strip_collection(scene):
        sound = getattr(strip, "sound", None)
        if strip.type == "SOUND" and sound and os.path.realpath(bpy.path.abspath(sound.filepath)) == wanted:
            return strip
    return None
