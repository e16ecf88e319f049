import bpy

classes: tuple = ()

register, unregister = bpy.utils.register_classes_factory(classes)
