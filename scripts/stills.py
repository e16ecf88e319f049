"""Stills of the open head for the README and the evaluation report (Workbench, one light).

`setup_scene` frames the head with an 85 mm camera from the front (`add_front_camera`)
and selects Workbench (`use_workbench`); `render_pixels` renders the current pose to an
(H, W, 4) float array; `save_png` writes such an array.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import bpy
import numpy as np


def setup_scene(mesh_object, size: int = 384) -> None:
    use_workbench(bpy.context.scene, size)
    add_front_camera(bpy.context.scene, mesh_object)


def use_workbench(scene, size: int) -> None:
    """Workbench with studio light and material colours, square ``size`` pixels."""
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "MATERIAL"
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = False


def add_front_camera(scene, mesh_object):
    """An 85 mm camera framing ``mesh_object``'s rest shape from the front; made the scene's camera."""
    camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    matrix = np.array(mesh_object.matrix_world)
    verts = np.array([v.co for v in mesh_object.data.vertices]) @ matrix[:3, :3].T + matrix[:3, 3]
    centre = (verts.min(0) + verts.max(0)) / 2 + np.array([0, 0, 0.02])
    camera.location = (centre[0], centre[1] - 0.62, centre[2])
    camera.rotation_euler = (np.pi / 2, 0, 0)
    camera.data.lens = 85
    return camera


def render_pixels() -> np.ndarray:
    """The scene's camera view now, (H, W, 4) float RGBA, bottom row first (Blender's order)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/still.png"
        bpy.context.scene.render.filepath = path
        bpy.ops.render.render(write_still=True)
        image = bpy.data.images.load(path)
        width, height = image.size
        pixels = np.array(image.pixels[:], dtype=np.float32).reshape(height, width, 4)
        bpy.data.images.remove(image)
    return pixels


def save_png(pixels: np.ndarray, out: Path) -> None:
    image = bpy.data.images.new(out.stem, pixels.shape[1], pixels.shape[0], alpha=True)
    image.pixels.foreach_set(pixels.ravel().astype(np.float32))
    image.filepath_raw = str(out)
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)
