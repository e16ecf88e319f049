"""Render stills of the open head's rig (rest, jaw open, smile, brows up) for the README.

    python scripts/render_rig_stills.py docs/open_head_rig.png

Shape keys set by hand: this shows the rig's controls, not generated motion.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import bpy
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from source_addon import register_from_source  # noqa: E402

POSES = {
    "rest": {},
    "jawOpen 0.7": {"jawOpen": 0.7},
    "smile": {"mouthSmileLeft": 0.8, "mouthSmileRight": 0.8, "cheekSquintLeft": 0.4, "cheekSquintRight": 0.4},
    "brows up, eyes wide": {"browInnerUp": 0.9, "browOuterUpLeft": 0.7, "browOuterUpRight": 0.7,
                            "eyeWideLeft": 0.8, "eyeWideRight": 0.8},
}


def setup_scene(mesh_object) -> None:
    scene = bpy.context.scene
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "MATERIAL"
    scene.render.resolution_x = scene.render.resolution_y = 384
    scene.render.film_transparent = False
    camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    verts = np.array([v.co for v in mesh_object.data.vertices])
    centre = (verts.min(0) + verts.max(0)) / 2 + np.array([0, 0, 0.02])
    camera.location = (centre[0], centre[1] - 0.62, centre[2])
    camera.rotation_euler = (np.pi / 2, 0, 0)
    camera.data.lens = 85


def main(out: Path) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    register_from_source()
    bpy.ops.captalk.add_open_head()
    mesh_object = bpy.context.active_object
    setup_scene(mesh_object)
    keys = mesh_object.data.shape_keys.key_blocks
    tiles = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, values) in enumerate(POSES.items()):
            for key in keys[1:]:
                key.value = values.get(key.name, 0.0)
            bpy.context.scene.render.filepath = f"{tmp}/{i}.png"
            bpy.ops.render.render(write_still=True)
            image = bpy.data.images.load(f"{tmp}/{i}.png")
            w, h = image.size
            pixels = np.array(image.pixels[:]).reshape(h, w, 4)
            tiles.append(pixels)
            print(f"rendered {label}")
    strip = np.concatenate(tiles, axis=1)
    image = bpy.data.images.new("stills", strip.shape[1], strip.shape[0], alpha=True)
    image.pixels.foreach_set(strip.ravel().astype(np.float32))
    image.filepath_raw = str(out)
    image.file_format = "PNG"
    image.save()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[-1]).resolve())
