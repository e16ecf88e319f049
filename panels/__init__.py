"""Panels: what the user sees in the sidebar; they only draw and call operators."""
import bpy

from . import caption_panel, rig_panel

classes = (*rig_panel.classes, *caption_panel.classes)

register, unregister = bpy.utils.register_classes_factory(classes)
