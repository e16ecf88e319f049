"""Blender-side logic: preferences, paths, rig building, the back-end client.

Uses only Blender's bundled modules and numpy; torch stays in the back-end process.
"""
import bpy

from . import preferences

classes = (*preferences.classes,)

register, unregister = bpy.utils.register_classes_factory(classes)
