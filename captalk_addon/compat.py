"""Every difference between the Blender versions CapTalk supports (4.2 LTS to 5.2 LTS), in one place.

Code elsewhere asks here instead of testing ``bpy.app.version`` or ``hasattr`` itself, so
when a version is dropped its shims go with one edit.

- 4.4 made actions "slotted" (layers, strips, channel bags; 5.0 removed ``action.fcurves``).
- 4.4 renamed the sequencer's ``Sequence`` type to ``Strip``; 5.0 renamed
  ``sequence_editor.sequences`` to ``strips``.
- 5.2 deprecates ``Strip.frame_start`` / ``frame_duration`` / ``frame_final_start`` /
  ``frame_final_end`` (removal announced for 6.0) for ``content_start`` /
  ``content_duration`` and the handle properties.
- 5.0 renamed the EEVEE engine ``BLENDER_EEVEE_NEXT`` back to ``BLENDER_EEVEE``, and the
  video file formats moved under ``image_settings.media_type = 'VIDEO'``.
"""
from __future__ import annotations

from dataclasses import dataclass

import bpy

SLOTTED_ACTIONS = bpy.app.version >= (4, 4, 0)
EEVEE_ENGINE = "BLENDER_EEVEE" if bpy.app.version >= (5, 0, 0) else "BLENDER_EEVEE_NEXT"


def strip_type():
    """Blender's sequencer strip type: ``Strip`` from 4.4 on, ``Sequence`` before."""
    return getattr(bpy.types, "Strip", None) or bpy.types.Sequence


def strip_collection(scene):
    """The editable top-level strips of ``scene``'s sequencer (created if needed)."""
    editor = scene.sequence_editor or scene.sequence_editor_create()
    return editor.strips if hasattr(editor, "strips") else editor.sequences


@dataclass(frozen=True)
class StripFrames:
    """Where a strip sits on the timeline, in scene frames."""

    content_start: float  # where its content (the sound's time 0) would begin, trims ignored
    content_duration: int  # the content's length in whole frames, before trimming
    left: int  # the first frame it plays (left handle)
    right: int  # one past the last frame it plays (right handle)


def strip_frames(strip) -> StripFrames:
    """The strip's frames, read through the properties this Blender does not deprecate."""
    if hasattr(strip, "content_start"):  # 5.2+
        left = strip.left_handle if hasattr(strip, "left_handle") else strip.frame_final_start
        right = strip.right_handle if hasattr(strip, "right_handle") else strip.frame_final_end
        return StripFrames(strip.content_start, strip.content_duration, left, right)
    return StripFrames(strip.frame_start, strip.frame_duration, strip.frame_final_start, strip.frame_final_end)


def action_slot(animation_data):
    """The slot an ID's animation data uses (None before 4.4, or when none is assigned)."""
    return getattr(animation_data, "action_slot", None)


def use_video_output(image_settings) -> None:
    """Let ``image_settings.file_format`` take a video format ('FFMPEG')."""
    if hasattr(image_settings, "media_type"):  # 5.0: the video formats only exist under VIDEO
        image_settings.media_type = "VIDEO"
