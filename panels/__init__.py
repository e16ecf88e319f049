"""Panels: what the user sees in the sidebar; they only draw and call operators."""
import bpy

from . import rig_panel

classes = (*rig_panel.classes,)

register, unregister = bpy.utils.register_classes_factory(classes)
