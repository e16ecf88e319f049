"""Operators: thin wrappers that call captalk_addon and report to the user."""
import bpy

from . import bake, generate, rig_import, sections

classes = (*rig_import.classes, *sections.classes, *generate.classes, *bake.classes)

register, unregister = bpy.utils.register_classes_factory(classes)
