"""Operators: thin wrappers that call captalk_addon and report to the user."""
import bpy

from . import bake, generate, rig_import, sections, speech

classes = (*rig_import.classes, *sections.classes, *speech.classes, *generate.classes, *bake.classes)

register, unregister = bpy.utils.register_classes_factory(classes)
