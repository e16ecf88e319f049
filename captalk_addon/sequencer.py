"""Sequencer access that works on Blender 4.2 to 5.2: 5.0 renamed `sequences` to `strips`;
5.2 names a strip's timing `content_start`, `left_handle`, `right_handle` and
`content_duration` and deprecates `frame_start`, `frame_final_start`, `frame_final_end` and
`frame_duration` (removal announced for 6.0), so the newer names are used where they exist."""
from __future__ import annotations

import os

import bpy


def strip_collection(scene):
    """The editable top-level strips of ``scene``'s sequencer (created if needed)."""
    editor = scene.sequence_editor or scene.sequence_editor_create()
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def _timing(strip, new: str, old: str) -> float:
    return getattr(strip, new) if new in strip.bl_rna.properties else getattr(strip, old)


def content_start(strip) -> float:
    """Frame where the strip's source (the whole sound) begins, before trims."""
    return _timing(strip, "content_start", "frame_start")


def left_handle(strip) -> int:
    """First frame that plays (after the start trim)."""
    return _timing(strip, "left_handle", "frame_final_start")


def right_handle(strip) -> int:
    """Frame after the last one that plays (after the end trim)."""
    return _timing(strip, "right_handle", "frame_final_end")


def content_duration(strip) -> int:
    """Length of the strip's source in whole frames, before trims."""
    return _timing(strip, "content_duration", "frame_duration")


class AudioError(RuntimeError):
    """Sound cannot go on the timeline; the message says why and what to do."""


class NoAudioSupport(AudioError):
    """This Blender build cannot load sound (PyPI bpy 4.2 is built without Audaspace)."""


def _aud():
    """Blender's audio module, or None: Debian's Blender 4.3 has Audaspace but not `aud`."""
    try:
        import aud
    except ImportError:
        return None
    return aud


def check_audio(filepath: str) -> None:
    """Raise AudioError unless this Blender can decode ``filepath`` into some sound.

    Blender adds a strip even for a file it cannot decode, so we ask its audio library first
    (without `aud`, `add_sound_strip` checks the strip it made instead).
    """
    if not bpy.app.build_options.audaspace:
        raise NoAudioSupport(
            f"This Blender build ({bpy.app.version_string}) has no audio support (Audaspace), so it "
            "cannot put sound on the timeline. Use Blender from blender.org or PyPI bpy 4.5 or newer."
        )
    aud = _aud()
    if aud is None:
        if not os.path.isfile(filepath):
            raise AudioError(f"'{filepath}' is not audio this Blender can read (missing)")
        return
    try:
        length = aud.Sound(filepath).length
    except aud.error:
        raise AudioError(f"'{filepath}' is not audio this Blender can read (missing, corrupt or unknown format)") from None
    if length <= 0:
        raise AudioError(f"'{filepath}' holds no sound (zero length)")


def sound_seconds(filepath: str) -> float | None:
    """Length of the sound in ``filepath`` in seconds (None when this Blender has no `aud`
    to tell); raises AudioError as `check_audio` does."""
    check_audio(filepath)
    aud = _aud()
    if aud is None:
        return None
    sound = aud.Sound(filepath)
    return sound.length / sound.specs[0]  # length counts samples


def add_sound_strip(scene, filepath: str, frame_start: int, channel: int = 1, name: str | None = None):
    """Add a sound strip; extends the scene's frame range to cover it (never its frame rate).

    The file is checked before the scene is touched: bad audio leaves it as it was.
    """
    check_audio(filepath)
    strips = strip_collection(scene)
    strip = strips.new_sound(name or bpy.path.display_name_from_filepath(filepath), filepath, channel, frame_start)
    if content_duration(strip) <= 0:  # not decodable (only reached without `aud`): take it out again
        sound = strip.sound
        strips.remove(strip)
        if sound is not None and sound.users == 0:
            bpy.data.sounds.remove(sound)
        raise AudioError(f"'{filepath}' is not audio this Blender can read (corrupt or unknown format)")
    scene.frame_end = max(scene.frame_end, right_handle(strip) - 1)
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
