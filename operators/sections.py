"""Operators for caption sections on timeline markers (add, remove, move, jump to) and
caption presets; what they do is `captalk_addon.sections`."""
from __future__ import annotations

import bpy

from ..captalk_addon.sections import (PRESETS, active_section, add_section, find_marker, move_section,
                                      remove_section)

def _poll_active_section(cls, context) -> bool:
    if context.scene is None or active_section(context.scene) is None:
        cls.poll_message_set("No caption section selected")
        return False
    return True


class CAPTALK_OT_section_add(bpy.types.Operator):
    bl_idname = "captalk.section_add"
    bl_label = "Add Section at Playhead"
    bl_description = ("Add a caption section starting at the current frame: a timeline marker whose own style "
                      "and emotion take over from there")
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return context.scene is not None

    def execute(self, context):
        scene = context.scene
        frame = scene.frame_current
        index, created = add_section(scene, frame)
        name = scene.captalk.sections[index].marker_name
        if not created:
            self.report({"INFO"}, f"Section '{name}' already starts at frame {frame}; edit it or move the playhead")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Added section '{name}' at frame {frame}")
        return {"FINISHED"}


class CAPTALK_OT_section_remove(bpy.types.Operator):
    bl_idname = "captalk.section_remove"
    bl_label = "Remove Section"
    bl_description = "Remove the caption section and its timeline marker (no other marker is touched)"
    bl_options = {"REGISTER", "UNDO"}

    index: bpy.props.IntProperty(name="Index", description="Section to remove; -1: the active one", default=-1,
                                 options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        if context.scene is None or not context.scene.captalk.sections:
            cls.poll_message_set("There are no caption sections")
            return False
        return True

    def execute(self, context):
        scene = context.scene
        settings = scene.captalk
        index = settings.active_section if self.index < 0 else self.index
        if not 0 <= index < len(settings.sections):
            self.report({"ERROR"}, f"There is no caption section {index}")
            return {"CANCELLED"}
        remove_section(scene, index)
        return {"FINISHED"}


class CAPTALK_OT_section_to_playhead(bpy.types.Operator):
    bl_idname = "captalk.section_to_playhead"
    bl_label = "Move Section to Playhead"
    bl_description = "Move the active section's marker to the current frame (re-creating it if it was deleted)"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _poll_active_section(cls, context)

    def execute(self, context):
        scene = context.scene
        move_section(scene, active_section(scene), scene.frame_current)
        return {"FINISHED"}


class CAPTALK_OT_section_jump(bpy.types.Operator):
    bl_idname = "captalk.section_jump"
    bl_label = "Jump to Section"
    bl_description = "Move the playhead to the active section's marker"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        if not _poll_active_section(cls, context):
            return False
        if find_marker(context.scene, active_section(context.scene).marker_name) is None:
            cls.poll_message_set("The section's marker was deleted")
            return False
        return True

    def execute(self, context):
        scene = context.scene
        scene.frame_set(find_marker(scene, active_section(scene).marker_name).frame)
        return {"FINISHED"}


class CAPTALK_OT_caption_preset(bpy.types.Operator):
    bl_idname = "captalk.caption_preset"
    bl_label = "Caption Preset"
    bl_description = "Put an example caption into the field, to use as it is or edit"
    bl_options = {"REGISTER", "UNDO"}

    field: bpy.props.EnumProperty(
        name="Field",
        items=(("STYLE", "Style", "The style caption"), ("EMOTION", "Emotion", "The emotion caption")),
        default="STYLE",
    )
    section: bpy.props.IntProperty(name="Section", description="Caption section; -1: the default captions",
                                   default=-1, min=-1)
    preset: bpy.props.IntProperty(name="Preset", description="Index of the example; -1: choose from a menu",
                                  default=-1, min=-1, options={"SKIP_SAVE"})

    def _owner(self, scene):
        """The property group holding the caption (the scene's defaults or a section), or None."""
        settings = scene.captalk
        if self.section < 0:
            return settings
        return settings.sections[self.section] if self.section < len(settings.sections) else None

    def invoke(self, context, event):
        if self.preset >= 0:
            return self.execute(context)
        field, section, idname = self.field, self.section, self.bl_idname

        def draw_menu(menu, _context):
            for index, text in enumerate(PRESETS[field]):
                props = menu.layout.operator(idname, text=text)
                props.field, props.section, props.preset = field, section, index

        title = "Style Examples" if field == "STYLE" else "Emotion Examples"
        context.window_manager.popup_menu(draw_menu, title=title, icon="PRESET")
        return {"CANCELLED"}  # the menu's item runs the operator again, with a preset

    def execute(self, context):
        presets = PRESETS[self.field]
        owner = self._owner(context.scene)
        if owner is None or not 0 <= self.preset < len(presets):
            self.report({"ERROR"}, "No such caption section or example")
            return {"CANCELLED"}
        setattr(owner, self.field.lower(), presets[self.preset])
        return {"FINISHED"}


classes = (
    CAPTALK_OT_section_add,
    CAPTALK_OT_section_remove,
    CAPTALK_OT_section_to_playhead,
    CAPTALK_OT_section_jump,
    CAPTALK_OT_caption_preset,
)
