"""Caption sections on timeline markers: what a section is and every edit of one.

A section is tied to its timeline marker by the marker's name (Blender markers have no
other identity; `captalk_addon.properties` holds the data). Every edit here goes through
the marker too, so the section list and the timeline agree; the operators in
`operators.sections` only call these and report.
"""
from __future__ import annotations

SECTION_BASE_NAME = "CapTalk"

# Examples in words the bundled model learned (docs/captions.md); the user edits them freely.
STYLE_PRESETS = (
    "a calm teacher, subtle head movements",
    "an energetic presenter, lively head, wide mouth",
    "a serious news anchor, still head, even pace",
    "a cheerful young woman speaking quickly, animated head movement",
    "a relaxed narrator, gentle nodding, unhurried pace",
    "an older man, restrained mouth, steady head, slow speech",
)
EMOTION_PRESETS = (
    "neutral",
    "a strong delighted expression",
    "slightly happy",
    "very sad",
    "mildly annoyed",
    "furious",
    "surprised",
    "a bit scared",
    "a hint of contempt",
    "disgusted",
)
PRESETS = {"STYLE": STYLE_PRESETS, "EMOTION": EMOTION_PRESETS}


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


def section_at(scene, frame: int):
    """Index of a section whose marker sits on ``frame``, or None."""
    for index, section in enumerate(scene.captalk.sections):
        marker = find_marker(scene, section.marker_name)
        if marker is not None and marker.frame == frame:
            return index
    return None


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


def add_section(scene, frame: int) -> tuple[int, bool]:
    """A section starting at ``frame`` with a new marker: (its index, True), or the section
    already starting there: (its index, False). It becomes the active section."""
    settings = scene.captalk
    existing = section_at(scene, frame)
    if existing is not None:
        settings.active_section = existing
        return existing, False
    number = len(settings.sections) + 1
    while marker_name_taken(scene, f"{SECTION_BASE_NAME} {number}"):
        number += 1
    name = f"{SECTION_BASE_NAME} {number}"
    scene.timeline_markers.new(name, frame=frame)
    section = settings.sections.add()
    section.marker_name = name
    settings.active_section = len(settings.sections) - 1
    return settings.active_section, True


def remove_section(scene, index: int) -> None:
    """Remove section ``index`` and its marker (no other marker is touched)."""
    settings = scene.captalk
    marker = find_marker(scene, settings.sections[index].marker_name)
    if marker is not None:
        scene.timeline_markers.remove(marker)
    settings.sections.remove(index)
    if settings.active_section >= index:
        settings.active_section = max(0, settings.active_section - 1)


def move_section(scene, section, frame: int) -> None:
    """Move ``section``'s marker to ``frame``, re-creating it if it was deleted."""
    marker = find_marker(scene, section.marker_name)
    if marker is None:  # no marker has the section's name (else it would be found): reuse it
        scene.timeline_markers.new(section.marker_name, frame=frame)
    else:
        marker.frame = frame
