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
