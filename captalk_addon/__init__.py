"""Blender-side logic: preferences, scene properties, paths, rig building, animation
writing, baking and the back-end client.

Uses only Blender's bundled modules and numpy; torch stays in the back-end process.
"""
import bpy

from . import preferences, properties, worker

classes = (*preferences.classes, *properties.classes)

_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    properties.attach()


def unregister() -> None:
    worker.release_workers()  # a worker no other Blender uses exits now, not at quit
    properties.detach()
    _unregister_classes()
