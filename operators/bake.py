"""Bake to shape keys: CapTalk's results as plain keys on any character, for export."""
from __future__ import annotations

import math

import bpy

from ..captalk_addon.bake import BakeError, bake, choose_targets, find_source, mapping_from_text
from ..model.core.retarget import BakeConfig, RetargetError


def _strength(region: str, what: str):
    return bpy.props.FloatProperty(name=region.capitalize(), description=f"Factor on the {what}", default=1.0,
                                   min=0.0, soft_max=2.0, step=10)


class CAPTALK_OT_bake(bpy.types.Operator):
    """Bake CapTalk's results into plain shape-key and bone keys on a mesh and armature (this rig or another
    character with ARKit-named shape keys), ready to export without the add-on"""

    bl_idname = "captalk.bake"
    bl_label = "Bake to Shape Keys"
    bl_options = {"REGISTER", "UNDO"}

    source_rig: bpy.props.StringProperty(
        name="CapTalk rig", description="Object of the CapTalk rig to bake from; empty: the selected rig, "
                                        "or the scene's only rig with results", options={"SKIP_SAVE"})
    target_mesh: bpy.props.StringProperty(
        name="Mesh", description="Mesh whose shape keys receive the expressions (ARKit names, any case); "
                                 "empty: the selected character, else the CapTalk rig itself",
        options={"SKIP_SAVE"})
    target_armature: bpy.props.StringProperty(
        name="Armature", description="Armature whose bones receive the head rotation (same bone names); "
                                     "empty: the target mesh's armature",
        options={"SKIP_SAVE"})
    mouth: _strength("mouth", "mouth, jaw, cheek-puff, nose and tongue shape keys and the jaw bone")
    brows: _strength("brows", "brow shape keys")
    eyes: _strength("eyes", "eye and cheek-squint shape keys and the eye bones")
    head: _strength("head", "head and neck rotation angle")
    reduce_keys: bpy.props.BoolProperty(
        name="Reduce Keys", description="Drop keys that straight lines between the kept keys reproduce within "
                                        "the tolerance (first and last keys stay)", default=False)
    tolerance: bpy.props.FloatProperty(
        name="Tolerance", description="Largest shape-key value error a dropped key may leave", default=0.002,
        min=0.0, soft_max=0.05, precision=4, step=1)
    rotation_tolerance: bpy.props.FloatProperty(
        name="Rotation Tolerance", description="Largest bone rotation error a dropped key may leave",
        default=math.radians(0.1), min=0.0, soft_max=math.radians(5), subtype="ANGLE", precision=3)
    name_map: bpy.props.StringProperty(
        name="Name Mapping", description='CapTalk names to your names, as JSON ({"jawOpen": "Mouth_Open"}) or '
                                         "the name of a text holding it")
    replace_active_action: bpy.props.BoolProperty(
        name="Replace Active Action", description="Make the bake the active action even when the target has "
                                                  "one (yours is kept, stashed on a muted NLA track); off: the "
                                                  "bake goes on an NLA track under your action", default=False)

    def invoke(self, context, event):
        try:
            source = find_source(context, self.source_rig)
            mesh, armature = choose_targets(context, *source, self.target_mesh, self.target_armature)
        except BakeError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.target_mesh = self.target_mesh or (mesh.name if mesh else "")
        self.target_armature = self.target_armature or (armature.name if armature else "")
        return context.window_manager.invoke_props_dialog(self, width=360)

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.prop_search(self, "target_mesh", context.scene, "objects", icon="MESH_DATA")
        layout.prop_search(self, "target_armature", context.scene, "objects", icon="ARMATURE_DATA")
        layout.prop(self, "name_map")
        column = layout.column(align=True, heading="Strength")
        for region in ("mouth", "brows", "eyes", "head"):
            column.prop(self, region)
        layout.prop(self, "reduce_keys")
        column = layout.column(align=True)
        column.enabled = self.reduce_keys
        column.prop(self, "tolerance")
        column.prop(self, "rotation_tolerance")
        layout.prop(self, "replace_active_action")

    def execute(self, context):
        try:
            source = find_source(context, self.source_rig)
            mesh, armature = choose_targets(context, *source, self.target_mesh, self.target_armature)
            config = BakeConfig(mouth=self.mouth, brows=self.brows, eyes=self.eyes, head=self.head,
                                reduce=self.reduce_keys, tolerance=self.tolerance,
                                rotation_tolerance=self.rotation_tolerance, mapping=mapping_from_text(self.name_map))
            report = bake(*source, mesh, armature, config, self.replace_active_action)
        except (BakeError, RetargetError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, report.summary())
        for warning in report.warnings():  # last, so the status bar shows what was left out
            self.report({"WARNING"}, warning)
        return {"FINISHED"}


classes = (CAPTALK_OT_bake,)
