"""Stills of the open head for the README, the evaluation report and the batch preview:
Workbench (a fraction of a second per frame on a CPU) showing the rig's colours (skin,
lips, eyes with iris and pupil, mouth interior: `model.core.appearance`) under a key, a
fill and a rim light, from a 3/4 view framed on the head, against a neutral grey.

`setup_scene` frames the head (`add_front_camera`) and selects Workbench
(`use_workbench`); `render_pixels` renders the current pose to an (H, W, 4) float array;
`save_png` writes such an array. Workbench's lights are the Preferences' studio lights:
`use_workbench` edits them in this (batch) session, it does not save them.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import bpy
import numpy as np


def setup_scene(mesh_object, size: int = 384) -> None:
    use_workbench(bpy.context.scene, size)
    add_front_camera(bpy.context.scene, mesh_object)


BACKDROP = (0.30, 0.31, 0.33)  # neutral grey, a little cool
# Studio lights in view space (x right, y up, z towards the viewer): (direction, diffuse, specular)
LIGHTS = (
    ((-0.55, 0.45, 0.70), 0.95, 0.30),  # key: upper left, in front
    ((0.75, 0.05, 0.55), 0.35, 0.05),  # fill: right, softer
    ((0.35, 0.55, -0.75), 0.30, 0.20),  # rim: behind, separates the head from the backdrop
)
YAW = np.radians(35.0)  # the 3/4 view: the camera this far round the head, to its right
PITCH = np.radians(6.0)  # and a little above the eyes


def use_workbench(scene, size: int) -> None:
    """Workbench with the rig's colour attribute, key/fill/rim lights and a neutral
    backdrop, square ``size`` pixels."""
    scene.render.engine = "BLENDER_WORKBENCH"
    shading = scene.display.shading
    shading.light = "STUDIO"
    shading.studio_light = "Default"  # the Preferences' lights, set below
    shading.color_type = "VERTEX"  # the active colour attribute (the rig's colours)
    shading.show_specular_highlight = True
    system = bpy.context.preferences.system
    system.use_studio_light_edit = True
    for light, (direction, diffuse, specular) in zip(system.solid_lights, LIGHTS + ((None, 0.0, 0.0),)):
        light.use = direction is not None
        if direction is not None:
            light.direction = tuple(np.asarray(direction) / np.linalg.norm(direction))
            light.diffuse_color = (diffuse,) * 3
            light.specular_color = (specular,) * 3
            light.smooth = 0.4
    if scene.world is None:
        scene.world = bpy.data.worlds.new("CapTalk backdrop")
    scene.world.color = BACKDROP  # Workbench renders the world colour behind the head
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = False


def add_front_camera(scene, mesh_object):
    """An 85 mm camera framing ``mesh_object``'s rest shape (the head) from a 3/4 view,
    a little above; made the scene's camera."""
    camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    matrix = np.array(mesh_object.matrix_world)
    verts = np.array([v.co for v in mesh_object.data.vertices]) @ matrix[:3, :3].T + matrix[:3, 3]
    centre = (verts.min(0) + verts.max(0)) / 2 + np.array([0, 0, 0.01])
    radius = np.linalg.norm(verts.max(0) - verts.min(0)) / 2
    camera.data.lens = 85
    # close enough that the face fills the frame (the bounding sphere holds the back of the head too)
    half_view = np.arctan(camera.data.sensor_width / 2 / camera.data.lens)
    distance = radius / np.tan(half_view) / 1.1
    # the face looks along -Y: turn the camera round the head (Z) by YAW, up by PITCH
    offset = distance * np.array([-np.sin(YAW) * np.cos(PITCH), -np.cos(YAW) * np.cos(PITCH), np.sin(PITCH)])
    camera.location = tuple(centre + offset)
    camera.rotation_euler = (np.pi / 2 - PITCH, 0, -YAW)
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
