"""Both heads saying the same line: the open head (left) and the open head written as a
FLAME file, driven through its adapter (right), at a few frames (Workbench, PyPI bpy).

Called by ``benchmarks/flame_bridge.py --picture FILE`` with the clips it made.
"""
from __future__ import annotations

import sys
from pathlib import Path

import bpy
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stills import render_pixels, save_png, use_workbench  # noqa: E402

FRAMES_AT = (0.8, 1.6, 2.4, 3.2)  # seconds


def _mesh(name: str, verts: np.ndarray, faces: np.ndarray, offset: float):
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata((verts + [offset, 0, 0]).tolist(), [], faces.tolist())
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    for polygon in mesh.polygons:
        polygon.use_smooth = True
    return obj


def render(source, clip, target, mapped, out: Path, size: int = 320) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    use_workbench(scene, size)
    scene.render.resolution_x = 2 * size
    open_verts, flame_verts = source.vertices(clip.motion), target.vertices(mapped.motion)
    # centre the FLAME copy beside the open head (the fixture shares its position)
    width = 0.2
    left = _mesh("open head", open_verts[0], source.faces, -width / 2)
    right = _mesh("FLAME", flame_verts[0], target.faces, width / 2)
    camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    centre = source.template.mean(axis=0)
    camera.data.type = "ORTHO"
    camera.data.ortho_scale = 2.1 * width
    camera.location = (centre[0], centre[1] - 1.0, centre[2] - 0.01)
    camera.rotation_euler = (np.pi / 2, 0, 0)
    tiles = []
    for seconds in FRAMES_AT:
        frame = min(int(round(seconds * clip.fps)), clip.num_frames - 1)
        for obj, verts, offset in ((left, open_verts, -width / 2), (right, flame_verts, width / 2)):
            obj.data.vertices.foreach_set("co", (verts[frame] + [offset, 0, 0]).astype(np.float32).ravel())
            obj.data.update()
        tiles.append(render_pixels())
    save_png(np.concatenate(tiles, axis=0), out)
