"""Render generated motion on the open head at a few moments, one strip per motion file.

    python scripts/render_caption_stills.py --out DIR --times 1.0,2.4,3.8 A.npz B.npz ...

Writes DIR/<name of each motion file>.png: the head at each time, left to right. The
motion files are `model.core.motion_file` npz files on the open head (ARKit channels drive
the shape keys of the same name, ``<joint>.rx/ry/rz`` the joint's pose bone), e.g. from
``python -m model generate``. The evaluation report puts the strips side by side.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import bpy
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from source_addon import register_from_source, script_args  # noqa: E402
from stills import render_pixels, save_png, setup_scene  # noqa: E402


def pose(mesh_object, armature, channels: tuple[str, ...], frame: np.ndarray) -> None:
    """Set shape keys and pose bones to one frame of motion (C,)."""
    from captalk.model.core.rig_layout import bone_local_quaternions

    keys = mesh_object.data.shape_keys.key_blocks
    for name, value in zip(channels, frame):
        if name in keys:
            keys[name].value = float(value)
    joints = {name.rsplit(".", 1)[0] for name in channels if name.endswith(".rx")}
    for joint in joints:
        rotvec = np.array([[frame[channels.index(f"{joint}.{axis}")] for axis in ("rx", "ry", "rz")]])
        rest = np.array(armature.data.bones[joint].matrix_local)[:3, :3]
        bone = armature.pose.bones[joint]
        bone.rotation_mode = "QUATERNION"
        bone.rotation_quaternion = bone_local_quaternions(rotvec, rest)[0]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="render_caption_stills", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--times", required=True, type=lambda text: [float(t) for t in text.split(",")],
                        help="seconds into each clip, comma-separated")
    parser.add_argument("--size", type=int, default=320, help="pixels per still (square)")
    parser.add_argument("motions", nargs="+", type=Path)
    args = parser.parse_args(argv)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    register_from_source()
    from captalk.model.core.motion_file import load_motion

    bpy.ops.captalk.add_open_head()
    mesh_object = bpy.context.active_object
    armature = mesh_object.find_armature()
    setup_scene(mesh_object, args.size)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.motions:
        clip = load_motion(path)
        tiles = []
        for seconds in args.times:
            frame = min(int(round(seconds * clip.fps)), len(clip.motion) - 1)
            pose(mesh_object, armature, tuple(clip.channels), clip.motion[frame])
            bpy.context.view_layer.update()
            tiles.append(render_pixels())
        save_png(np.concatenate(tiles, axis=1), args.out / f"{path.stem}.png")
        print(f"rendered {path.name} at {', '.join(f'{t:g} s' for t in args.times)}")


if __name__ == "__main__":
    main(script_args())
