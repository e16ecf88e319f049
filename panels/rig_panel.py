"""The CapTalk sidebar panel: the rig and how to get one."""
from __future__ import annotations

import bpy

from ..captalk_addon.rig_builder import PROP_MODEL_ID, find_rig


class CAPTALK_PT_rig(bpy.types.Panel):
    bl_label = "Rig"
    bl_idname = "CAPTALK_PT_rig"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "CapTalk"

    def draw(self, context):
        layout = self.layout
        mesh_object, armature = find_rig(context.active_object)
        box = layout.box()
        if mesh_object is None:
            box.label(text="No CapTalk rig selected", icon="INFO")
        else:
            box.label(text=mesh_object.name, icon="MESH_DATA")
            box.label(text=f"Head model: {mesh_object[PROP_MODEL_ID]}")
            keys = mesh_object.data.shape_keys
            box.label(text=f"{len(keys.key_blocks) - 1 if keys else 0} expression shape keys")
            box.label(text=f"Armature: {armature.name if armature else 'missing'}", icon="ARMATURE_DATA")
        col = layout.column(align=True)
        col.operator("captalk.add_open_head", icon="USER")
        col.operator("captalk.import_flame", icon="IMPORT")


classes = (CAPTALK_PT_rig,)
