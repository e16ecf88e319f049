"""Small helpers shared by tests (Blender side)."""
from __future__ import annotations

import numpy as np


def evaluated_vertices(obj) -> np.ndarray:
    """(V, 3) world-space vertices of ``obj`` after shape keys and modifiers."""
    import bpy

    depsgraph = bpy.context.evaluated_depsgraph_get()
    depsgraph.update()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        coords = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", coords)
    finally:
        evaluated.to_mesh_clear()
    matrix = np.array(obj.matrix_world)
    coords = coords.reshape(-1, 3)
    return coords @ matrix[:3, :3].T + matrix[:3, 3]


def add_artist_actions(mesh_object, armature):
    """An artist's own keys on the rig's shape keys and neck bone; returns their active actions
    (shape keys, armature), slotted or classic as this Blender makes them."""
    key = mesh_object.data.shape_keys
    for frame, value in ((1, 0.2), (40, 0.9)):
        key.key_blocks["browInnerUp"].value = value
        key.key_blocks["browInnerUp"].keyframe_insert("value", frame=frame)
    bone = armature.pose.bones["neck"]
    bone.rotation_quaternion = (0.99, 0.1, 0.0, 0.0)
    bone.keyframe_insert("rotation_quaternion", frame=5)
    return key.animation_data.action, armature.animation_data.action


def describe_action(action) -> list:
    """An action's name and keys, per F-curve: compare before and after to show it is untouched."""
    from captalk.captalk_addon.animation import action_fcurves

    return [(action.name, fc.data_path, fc.array_index, [tuple(k.co) for k in fc.keyframe_points])
            for fc in action_fcurves(action)]


def action_keys(action) -> dict:
    """{(data_path, index): (K, 2) float32 keyframe (frame, value)} of every F-curve of ``action``."""
    from captalk.captalk_addon.animation import action_fcurves

    result = {}
    for fc in action_fcurves(action):
        co = np.empty(2 * len(fc.keyframe_points), dtype=np.float32)
        fc.keyframe_points.foreach_get("co", co)
        result[(fc.data_path, fc.array_index)] = co.reshape(-1, 2)
    return result
