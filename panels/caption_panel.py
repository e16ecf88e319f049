"""The CapTalk panel, in the 3D View and Sequencer sidebars: the rig, captions, caption
sections on timeline markers, sampling options, Generate / Cancel / Bake and the job's state.

Panels only draw and call operators. The same panels exist once per editor (Blender ties
a panel class to one space), made by `_panels_for`.
"""
from __future__ import annotations

import textwrap

import bpy

from ..captalk_addon.properties import SECTION_EMPTY_RULE
from ..captalk_addon.sections import active_section, find_marker

GENERATE = "captalk.generate_from_strip"
CANCEL = "captalk.cancel_generation"
BAKE = "captalk.bake"

# A text field shows about this many pixels per character (Blender's UI font at scale 1).
_PIXELS_PER_CHAR = 7.0
_MIN_WRAP_CHARS = 20
_DEFAULT_WRAP_CHARS = 40  # when there is no region to measure (e.g. drawn into a popup)


def operator_exists(idname: str) -> bool:
    """Whether an operator ``module.name`` is registered (others' operators may not be yet)."""
    module, _, name = idname.partition(".")
    try:
        getattr(getattr(bpy.ops, module), name).get_rna_type()
    except (AttributeError, KeyError):
        return False
    return True


def draw_operator(layout, idname: str, text: str, icon: str = "NONE"):
    """``layout.operator``, or a greyed-out label when the operator is not registered
    (Blender would print an error on every redraw). Returns the operator's properties or None."""
    if operator_exists(idname):
        return layout.operator(idname, text=text, icon=icon)
    row = layout.row()
    row.enabled = False
    row.label(text=f"{text} (not available)", icon=icon)
    return None


def wrap_width(context) -> int:
    """How many characters of caption fit on one line of the sidebar."""
    region = context.region
    if region is None or region.width <= 1:
        return _DEFAULT_WRAP_CHARS
    scale = getattr(context.preferences.system, "ui_scale", 1.0) or 1.0
    return max(_MIN_WRAP_CHARS, int(region.width / (_PIXELS_PER_CHAR * scale)))


def draw_caption(layout, context, owner, field: str, section: int, label: str) -> None:
    """One caption: an editable field with an examples button, and the whole text wrapped
    below when it is too long for the field (Blender has no multi-line text field)."""
    layout.label(text=label)
    row = layout.row(align=True)
    row.prop(owner, field, text="")
    props = row.operator("captalk.caption_preset", text="", icon="PRESET")
    props.field, props.section = field.upper(), section
    text = getattr(owner, field)
    width = wrap_width(context)
    if len(text) > width:
        column = layout.column(align=True)
        column.scale_y = 0.7
        for line in textwrap.wrap(text, width):
            column.label(text=line)


class CAPTALK_UL_sections(bpy.types.UIList):
    """Caption sections in timeline order; a section whose marker is gone is shown as such."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        marker = find_marker(item.id_data, item.marker_name)
        row = layout.row(align=True)
        row.prop(item, "label", text="", emboss=False, icon="MARKER_HLT" if marker else "ERROR")
        row.label(text=f"{marker.frame}" if marker else "no marker")

    def filter_items(self, context, data, propname):
        sections = getattr(data, propname)
        flags = bpy.types.UI_UL_list.filter_items_by_name(self.filter_name, self.bitflag_filter_item, sections,
                                                          "marker_name")
        scene = data.id_data
        frames = []
        for index, section in enumerate(sections):
            marker = find_marker(scene, section.marker_name)
            frames.append((index, marker.frame if marker else float("inf")))  # missing markers last
        return flags, bpy.types.UI_UL_list.sort_items_helper(frames, key=lambda item: item[1])


class _CapTalkPanel:
    bl_region_type = "UI"
    bl_category = "CapTalk"

    @classmethod
    def poll(cls, context):
        return context.scene is not None and hasattr(context.scene, "captalk")


class _MainPanel(_CapTalkPanel):
    """The rig, the actions (Generate or progress and Cancel, Bake) and the back end's state."""

    bl_label = "CapTalk"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.captalk
        job = context.window_manager.captalk_job
        layout.prop(settings, "target_rig")
        editor = context.scene.sequence_editor
        strip = editor.active_strip if editor else None
        if strip is not None and strip.type == "SOUND":
            layout.prop(strip, "captalk_rig", text=f"Rig for '{strip.name}'")
        if job.running:
            row = layout.row(align=True)
            row.progress(factor=job.progress, type="BAR", text=job.message or f"{job.progress:.0%}")
            draw_operator(row, CANCEL, text="Cancel", icon="CANCEL")
        else:
            draw_operator(layout, GENERATE, text="Generate", icon="PLAY")
            if job.message:
                layout.label(text=job.message, icon="INFO")
        row = layout.row()
        row.enabled = not job.running
        draw_operator(row, BAKE, text="Bake to Shape Keys", icon="SHAPEKEY_DATA")
        if job.backend_status:
            layout.label(text=job.backend_status, icon="CONSOLE")


class _CaptionsPanel(_CapTalkPanel):
    """The default captions, in force until the first section."""

    bl_label = "Captions"

    def draw(self, context):
        settings = context.scene.captalk
        column = self.layout.column()
        draw_caption(column, context, settings, "style", -1, "Style")
        draw_caption(column, context, settings, "emotion", -1, "Emotion")


class _SectionsPanel(_CapTalkPanel):
    """Caption sections on timeline markers, and the active section's captions."""

    bl_label = "Sections"

    def draw(self, context):
        layout = self.layout
        scene = context.scene
        settings = scene.captalk
        row = layout.row()
        row.template_list("CAPTALK_UL_sections", "", settings, "sections", settings, "active_section", rows=3)
        column = row.column(align=True)
        column.operator("captalk.section_add", text="", icon="ADD")
        column.operator("captalk.section_remove", text="", icon="REMOVE")
        column.separator()
        column.operator("captalk.section_jump", text="", icon="MARKER_HLT")
        column.operator("captalk.section_to_playhead", text="", icon="TIME")

        section = active_section(scene)
        if section is None:
            layout.label(text="Add a section to change captions at a marker", icon="INFO")
            return
        marker = find_marker(scene, section.marker_name)
        if marker is None:
            box = layout.box()
            box.label(text=f"Marker '{section.marker_name}' was deleted or renamed", icon="ERROR")
            box.label(text="This section is skipped until it has one")
            box.operator("captalk.section_to_playhead", text="New Marker at Playhead", icon="MARKER_HLT")
        else:
            layout.label(text=f"From frame {marker.frame}", icon="MARKER_HLT")
        column = layout.column()
        draw_caption(column, context, section, "style", settings.active_section, "Style")
        draw_caption(column, context, section, "emotion", settings.active_section, "Emotion")
        hint = column.column(align=True)
        hint.scale_y = 0.7
        for line in textwrap.wrap(SECTION_EMPTY_RULE, wrap_width(context)):
            hint.label(text=line)


class _SamplingPanel(_CapTalkPanel):
    """Seed, caption guidance, temperature and the number of takes."""

    bl_label = "Sampling"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        settings = context.scene.captalk
        column = self.layout.column(align=True)
        for name in ("seed", "guidance", "temperature", "takes"):
            column.prop(settings, name)


def _panels_for(space_type: str, suffix: str) -> tuple[type, ...]:
    """The main panel and its sub-panels for one editor, e.g. CAPTALK_PT_main_view3d."""
    main_idname = f"CAPTALK_PT_main_{suffix}"
    panels = []
    for base, name in ((_MainPanel, "main"), (_CaptionsPanel, "captions"), (_SectionsPanel, "sections"),
                       (_SamplingPanel, "sampling")):
        idname = f"CAPTALK_PT_{name}_{suffix}"
        namespace = {"bl_idname": idname, "bl_space_type": space_type, "__doc__": base.__doc__}
        if base is not _MainPanel:
            namespace["bl_parent_id"] = main_idname
        panels.append(type(idname, (base, bpy.types.Panel), namespace))
    return tuple(panels)


VIEW3D_PANELS = _panels_for("VIEW_3D", "view3d")
SEQUENCER_PANELS = _panels_for("SEQUENCE_EDITOR", "sequencer")

classes = (CAPTALK_UL_sections, *VIEW3D_PANELS, *SEQUENCER_PANELS)
