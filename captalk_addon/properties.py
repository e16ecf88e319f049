"""Scene properties: CapTalk's captions, sections and sampling options (saved with the .blend),
and the running job's state on the window manager (runtime only).

``scene.captalk`` (`CAPTALK_PG_scene`) holds what an artist directs: the target rig, the
default captions, the caption sections and the sampling options. Being scene data, it is
saved with the file and restored by undo like any other edit.

A caption section is tied to a timeline marker by the marker's name (Blender markers have
no other identity): moving the marker moves the section, deleting it (or renaming it in
the timeline) leaves the section without a marker, which the panel shows and
`section_entries` skips. Renaming the section in the panel renames its marker.

``window_manager.captalk_job`` (`CAPTALK_PG_job`) is what the panel shows of a
generation in progress; the generate operator writes it, nothing reads it back from a file.
"""
from __future__ import annotations

import bpy

from ..model.data.dataset import MAX_CAPTION_CHARS
from ..model.link.protocol import MAX_TAKES
from .rig_builder import PROP_PART

# Scene data may be edited on a library-overridden scene; collections also need insertion.
_OVERRIDABLE = {"LIBRARY_OVERRIDABLE"}

STYLE_DESCRIPTION = ("How the person speaks: who they are, mouth and head movement, pace, tone "
                     "(e.g. \"a calm teacher, subtle head movements\"). Empty: no style direction")
EMOTION_DESCRIPTION = ("The emotion on the face and how strong it is (e.g. \"a strong delighted "
                       "expression\"). Empty: no emotion direction")
SECTION_EMPTY_RULE = ("Empty keeps the caption in force before this section (write \"neutral\" "
                      "for no particular emotion)")


def is_target_candidate(obj) -> bool:
    """A CapTalk rig part (mesh or armature), or any mesh with shape keys (a user's own face)."""
    if obj is None:
        return False
    if PROP_PART in obj:
        return True
    return obj.type == "MESH" and obj.data is not None and obj.data.shape_keys is not None


def _poll_target_rig(_owner, obj) -> bool:
    return is_target_candidate(obj)


def find_marker(scene, name: str):
    """The timeline marker called ``name`` in ``scene``, or None (deleted or renamed)."""
    return scene.timeline_markers.get(name) if name else None


def marker_name_taken(scene, name: str, own: str = "") -> bool:
    """Whether a marker or a section of ``scene`` uses ``name`` (a section whose marker is
    gone still claims its name); ``own``, the current name of a section being renamed, is free."""
    if name == own:
        return False
    return name in scene.timeline_markers or any(s.marker_name == name for s in scene.captalk.sections)


def unique_marker_name(scene, base: str, own: str = "") -> str:
    """``base``, or ``base`` with the first free " 2", " 3"... suffix (see `marker_name_taken`)."""
    if not marker_name_taken(scene, base, own):
        return base
    number = 2
    while marker_name_taken(scene, f"{base} {number}", own):
        number += 1
    return f"{base} {number}"


def _get_section_name(section) -> str:
    return section.marker_name


def _set_section_name(section, value: str) -> None:
    """Rename the section and its marker together, keeping marker names unique so the tie
    stays unambiguous."""
    scene = section.id_data
    value = value.strip()
    if not value or value == section.marker_name:
        return
    marker = find_marker(scene, section.marker_name)
    value = unique_marker_name(scene, value, own=section.marker_name)
    if marker is not None:
        marker.name = value
    section.marker_name = value


class CAPTALK_PG_section(bpy.types.PropertyGroup):
    """Captions that take over from a timeline marker on (until the next section's marker)."""

    marker_name: bpy.props.StringProperty(
        name="Marker",
        description="Name of the timeline marker this section starts at (a marker given this name ties to it)",
        override=_OVERRIDABLE,
    )
    label: bpy.props.StringProperty(
        name="Name",
        description="The section's name, which is also its timeline marker's name",
        get=_get_section_name,
        set=_set_section_name,  # derived from marker_name: not overridable itself (set renames markers)
    )
    style: bpy.props.StringProperty(
        name="Style",
        description=f"Style caption from this marker on. {SECTION_EMPTY_RULE}",
        maxlen=MAX_CAPTION_CHARS,
        override=_OVERRIDABLE,
    )
    emotion: bpy.props.StringProperty(
        name="Emotion",
        description=f"Emotion caption from this marker on. {SECTION_EMPTY_RULE}",
        maxlen=MAX_CAPTION_CHARS,
        override=_OVERRIDABLE,
    )


class CAPTALK_PG_scene(bpy.types.PropertyGroup):
    """What the artist directs for the scene (``scene.captalk``)."""

    target_rig: bpy.props.PointerProperty(
        name="Rig",
        description="The CapTalk rig (or a mesh with shape keys) the motion drives; may be linked or overridden",
        type=bpy.types.Object,
        poll=_poll_target_rig,
        override=_OVERRIDABLE,
    )
    style: bpy.props.StringProperty(
        name="Style",
        description=f"Default style caption, in force until the first section. {STYLE_DESCRIPTION}",
        maxlen=MAX_CAPTION_CHARS,
        override=_OVERRIDABLE,
    )
    emotion: bpy.props.StringProperty(
        name="Emotion",
        description=f"Default emotion caption, in force until the first section. {EMOTION_DESCRIPTION}",
        maxlen=MAX_CAPTION_CHARS,
        override=_OVERRIDABLE,
    )
    sections: bpy.props.CollectionProperty(
        name="Sections",
        description="Captions that change at timeline markers",
        type=CAPTALK_PG_section,
        override={"LIBRARY_OVERRIDABLE", "USE_INSERTION"},
    )
    active_section: bpy.props.IntProperty(name="Active Section", default=0, min=0, override=_OVERRIDABLE)
    seed: bpy.props.IntProperty(
        name="Seed",
        description="Random seed: the same seed, captions and audio give the same motion (take i uses seed + i)",
        default=0,
        min=0,
        override=_OVERRIDABLE,
    )
    guidance: bpy.props.FloatProperty(
        name="Caption Guidance",
        description="How strongly the captions steer the motion (1: plain conditional, higher: stronger, "
                    "0: captions ignored)",
        default=2.0,
        min=0.0,
        soft_max=5.0,
        max=20.0,
        override=_OVERRIDABLE,
    )
    temperature: bpy.props.FloatProperty(
        name="Temperature",
        description="Sampling randomness (0: always the likeliest motion, 0.3: default, crisp lip closures, "
                    "1: as trained, looser lips, higher: wilder)",
        default=0.3,
        min=0.0,
        soft_max=2.0,
        max=5.0,
        override=_OVERRIDABLE,
    )
    takes: bpy.props.IntProperty(
        name="Takes",
        description="How many different takes to generate at once (each with its own seed)",
        default=1,
        min=1,
        max=MAX_TAKES,
        override=_OVERRIDABLE,
    )


class CAPTALK_PG_job(bpy.types.PropertyGroup):
    """A generation in progress, as the panel shows it (``window_manager.captalk_job``)."""

    running: bpy.props.BoolProperty(name="Running", description="A generation is running")
    progress: bpy.props.FloatProperty(name="Progress", subtype="FACTOR", min=0.0, max=1.0)
    message: bpy.props.StringProperty(name="Message", description="What the running generation is doing")
    backend_status: bpy.props.StringProperty(name="Back End", description="The back end's state, one line")


def active_section(scene):
    """The scene's active caption section, or None when there is none."""
    settings = scene.captalk
    if 0 <= settings.active_section < len(settings.sections):
        return settings.sections[settings.active_section]
    return None


def section_entries(scene) -> list[tuple[int, str, str]]:
    """(marker frame, style, emotion) per section of ``scene`` whose marker still exists, in
    the sections' list order (what `model.core.timeline.caption_schedule` takes: there, empty
    captions keep the previous ones and, on one frame, the later section wins)."""
    entries = []
    for section in scene.captalk.sections:
        marker = find_marker(scene, section.marker_name)
        if marker is not None:
            entries.append((marker.frame, section.style, section.emotion))
    return entries


classes = (CAPTALK_PG_section, CAPTALK_PG_scene, CAPTALK_PG_job)


def strip_type():
    """Blender's sequencer strip type: ``Strip`` from 4.4 on, ``Sequence`` before."""
    return getattr(bpy.types, "Strip", None) or bpy.types.Sequence


def attach() -> None:
    """Add CapTalk's pointer properties to Blender types (after `classes` are registered)."""
    bpy.types.Scene.captalk = bpy.props.PointerProperty(type=CAPTALK_PG_scene, override=_OVERRIDABLE)
    # Per sound strip, so several strips (several characters) each drive their own rig.
    strip_type().captalk_rig = bpy.props.PointerProperty(
        name="CapTalk Rig",
        description="The rig this sound strip drives; empty: the scene's CapTalk rig",
        type=bpy.types.Object,
        poll=_poll_target_rig,
    )
    # Window-manager properties are not written to the .blend: a job never "runs" after loading.
    bpy.types.WindowManager.captalk_job = bpy.props.PointerProperty(type=CAPTALK_PG_job)


def detach() -> None:
    """Remove what `attach` added (before `classes` are unregistered)."""
    del bpy.types.WindowManager.captalk_job
    del strip_type().captalk_rig
    del bpy.types.Scene.captalk
