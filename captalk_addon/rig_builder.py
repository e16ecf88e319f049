"""Turn a head model into Blender data: a mesh with shape keys, skinned to an armature.

The structure, whatever the head came from (open head, FLAME):
- a collection "CapTalk <name>" holding an armature object and a mesh object parented
  to it;
- the mesh: the template, a "Basis" shape key and one shape key per expression channel
  (named as the channel), one vertex group per joint with the skinning weights, an
  Armature modifier;
- the armature: one bone per joint at the joint's rest position (see model.core.rig_layout);
- custom properties on both objects (``RIG_PROPERTIES``) naming the head model and its
  channel layout, so later steps can check that a motion model fits the rig.

Everything is computed before the first data-block is made, and a failure half-way
removes what was made, so the scene is left as it was.
"""
from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

from ..model.core.head_model import HeadModel
from ..model.core.rig_layout import bone_layout

PROP_MODEL_ID = "captalk_head_model"
PROP_SIGNATURE = "captalk_channel_signature"
PROP_HEAD_FILE = "captalk_head_file"
PROP_PART = "captalk_rig_part"
RIG_PROPERTIES = (PROP_MODEL_ID, PROP_SIGNATURE, PROP_HEAD_FILE, PROP_PART)
WEIGHT_EPSILON = 1e-4


def add_rig(context, head_file: Path):
    """Load the head-model file, build its rig in the scene and make it the scene's CapTalk
    rig when the panel has none yet (so the first Generate has a target). Returns
    (mesh_object, head). Raises `HeadModelError` / OSError with the scene untouched."""
    head = HeadModel.load(head_file)
    mesh_object, _ = create_rig(head, head_file, context)
    settings = getattr(context.scene, "captalk", None)
    if settings is not None and settings.target_rig is None:
        settings.target_rig = mesh_object
    return mesh_object, head


def create_rig(head: HeadModel, head_file: Path, context, name: str | None = None):
    """Create the rig for ``head`` in the active scene; return (mesh_object, armature_object)."""
    name = name or head.name.split(" (")[0]
    layout = bone_layout(head)
    created: list = []
    try:
        collection = _new(created, bpy.data.collections, f"CapTalk {name}")
        context.scene.collection.children.link(collection)
        armature = _create_armature(created, collection, layout, name, context)
        mesh_object = _create_mesh(created, collection, head, name)
        mesh_object.parent = armature
        modifier = mesh_object.modifiers.new("CapTalk Armature", "ARMATURE")
        modifier.object = armature
        for obj, part in ((mesh_object, "mesh"), (armature, "armature")):
            obj[PROP_MODEL_ID] = head.model_id
            obj[PROP_SIGNATURE] = head.channel_signature
            obj[PROP_HEAD_FILE] = str(head_file)
            obj[PROP_PART] = part
        for obj in context.view_layer.objects:
            obj.select_set(False)
        mesh_object.select_set(True)
        context.view_layer.objects.active = mesh_object
        return mesh_object, armature
    except Exception:
        _remove(created)
        raise


def _create_mesh(created: list, collection, head: HeadModel, name: str):
    mesh = _new(created, bpy.data.meshes, name)
    mesh.from_pydata(head.template.tolist(), [], head.faces.tolist())
    mesh.shade_smooth()
    material = _new(created, bpy.data.materials, f"{name} skin")
    material.diffuse_color = (0.80, 0.62, 0.52, 1.0)
    mesh.materials.append(material)
    obj = bpy.data.objects.new(name, mesh)
    created.append(obj)
    collection.objects.link(obj)

    obj.shape_key_add(name="Basis", from_mix=False)
    low, high = head.expression_range
    for channel, offsets in zip(head.expression_names, head.expression_basis):
        key = obj.shape_key_add(name=channel, from_mix=False)
        key.data.foreach_set("co", (head.template + offsets).astype(np.float32).ravel())
        key.slider_max = high
        key.slider_min = low
        key.value = 0.0  # Blender 5.0 starts new keys at 1.0: the rig must rest neutral

    for j, joint in enumerate(head.joint_names):
        group = obj.vertex_groups.new(name=joint)
        weights = head.lbs_weights[:, j]
        for index in np.flatnonzero(weights > WEIGHT_EPSILON):
            group.add([int(index)], float(weights[index]), "REPLACE")
    return obj


def _create_armature(created: list, collection, layout, name: str, context):
    data = _new(created, bpy.data.armatures, f"{name} rig")
    data.display_type = "STICK"
    armature = bpy.data.objects.new(f"{name} rig", data)
    created.append(armature)
    collection.objects.link(armature)
    armature.show_in_front = True

    previous_active = context.view_layer.objects.active
    context.view_layer.objects.active = armature
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        bones = []
        for bone_name, parent, head, tail in zip(layout.names, layout.parents, layout.heads, layout.tails):
            bone = data.edit_bones.new(bone_name)
            bone.head, bone.tail, bone.roll = head.tolist(), tail.tolist(), 0.0
            if parent >= 0:
                bone.parent = bones[parent]
            bones.append(bone)
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
        context.view_layer.objects.active = previous_active
    for pose_bone in armature.pose.bones:
        pose_bone.rotation_mode = "QUATERNION"
    return armature


def _new(created: list, collection, name: str):
    block = collection.new(name)
    created.append(block)
    return block


def _remove(created: list) -> None:
    """Undo a half-made rig: remove objects first, then the data they used."""
    for block in reversed(created):
        try:
            if isinstance(block, bpy.types.Object):
                bpy.data.objects.remove(block)
            elif isinstance(block, bpy.types.Mesh):
                bpy.data.meshes.remove(block)
            elif isinstance(block, bpy.types.Armature):
                bpy.data.armatures.remove(block)
            elif isinstance(block, bpy.types.Material):
                bpy.data.materials.remove(block)
            elif isinstance(block, bpy.types.Collection):
                bpy.data.collections.remove(block)
        except ReferenceError:
            pass  # already freed with its owner


def find_rig(obj):
    """(mesh_object, armature_object) of the CapTalk rig ``obj`` belongs to, or (None, None)."""
    if obj is None or PROP_PART not in obj:
        return None, None
    if obj[PROP_PART] == "armature":
        meshes = [c for c in obj.children if c.get(PROP_PART) == "mesh"]
        return (meshes[0] if meshes else None), obj
    return obj, (obj.parent if obj.parent and obj.parent.get(PROP_PART) == "armature" else None)
