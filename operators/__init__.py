"""Operators: thin wrappers that call captalk_addon and report to the user."""
import bpy

from . import rig_import

classes = (*rig_import.classes,)

register, unregister = bpy.utils.register_classes_factory(classes)
