"""Render stills of the open head's rig (rest, jaw open, smile, brows up) for the README.

    python scripts/render_rig_stills.py docs/open_head_rig.png

Shape keys set by hand: this shows the rig's controls, not generated motion.
"""
from __future__ import annotations

import sys
from pathlib import Path

import bpy
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from source_addon import register_from_source  # noqa: E402
from stills import render_pixels, save_png, setup_scene  # noqa: E402

POSES = {
    "rest": {},
    "jawOpen 0.7": {"jawOpen": 0.7},
    "smile": {"mouthSmileLeft": 0.8, "mouthSmileRight": 0.8, "cheekSquintLeft": 0.4, "cheekSquintRight": 0.4},
    "brows up, eyes wide": {"browInnerUp": 0.9, "browOuterUpLeft": 0.7, "browOuterUpRight": 0.7,
                            "eyeWideLeft": 0.8, "eyeWideRight": 0.8},
}


def main(out: Path) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    register_from_source()
    bpy.ops.captalk.add_open_head()
    mesh_object = bpy.context.active_object
    setup_scene(mesh_object)
    keys = mesh_object.data.shape_keys.key_blocks
    tiles = []
    for label, values in POSES.items():
        for key in keys[1:]:
            key.value = values.get(key.name, 0.0)
        tiles.append(render_pixels())
        print(f"rendered {label}")
    save_png(np.concatenate(tiles, axis=1), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[-1]).resolve())
