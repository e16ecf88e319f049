"""Benchmark: writing 60 s of CapTalk animation into Blender, and baking it.

    .venv/bin/python benchmarks/blender_write.py [--repeat 5] [--out benchmarks/blender_write.md]

On the open head (52 expression shape keys + the head bone's quaternion, 55 motion
channels) at 25 and 30 fps:
- write: `captalk_addon.animation.animate_rig` (resample the 25 fps motion onto the scene's
  frames, two new actions keyed in bulk, NLA strips), on a fresh rig each run;
- bake: `captalk_addon.bake.bake` onto the rig itself (read the NLA results, flatten, map,
  write two actions; each run replaces the previous bake), without and with keyframe
  reduction (tolerance 0.002 shape-key weight, 0.1 degree).
The motion is synthetic and speech-like: each expression a sine of 0.2-1.5 Hz in
[0.05, 0.75] plus 0.002 noise, the head turning by up to 6 degrees; how many keys the
reduction drops depends on that content. Reports the median of --repeat runs.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
from pathlib import Path

import bpy
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
from rig_import import timed  # noqa: E402  (this folder's benchmark helper)
from source_addon import register_from_source  # noqa: E402

from model.machine import cpu_name  # noqa: E402

SECONDS = 60
RATES = (25, 30)


def speech_like_motion(head, frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / 25
    motion = head.neutral_motion(frames)
    count = head.num_expressions
    motion[:, :count] = (0.4 + 0.35 * np.sin(2 * np.pi * rng.uniform(0.2, 1.5, count) * t + rng.uniform(0, 6, count))
                         + 0.002 * rng.normal(size=(frames, count)))
    motion[:, head.rotation_slice("head")] = 0.1 * np.sin(2 * np.pi * 0.4 * t + rng.uniform(0, 6, 3))
    return motion


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "blender_write.md"))
    args = parser.parse_args()

    register_from_source()
    from captalk.captalk_addon.animation import action_fcurves, animate_rig, is_captalk_result
    from captalk.captalk_addon.bake import bake
    from captalk.captalk_addon.paths import find_cached_file
    from captalk.captalk_addon.rig_builder import find_rig
    from captalk.model.core.head_model import HeadModel
    from captalk.model.core.paths import OPEN_HEAD_RELATIVE
    from captalk.model.core.retarget import BakeConfig

    open_head_file = find_cached_file(OPEN_HEAD_RELATIVE)
    if open_head_file is None:
        sys.exit("build the open head first: ./captalk.sh setup")
    head = HeadModel.load(open_head_file)
    motion = speech_like_motion(head, SECONDS * 25)
    rig = {}

    def fresh_rig(fps: int):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.context.scene.render.fps, bpy.context.scene.render.fps_base = fps, 1.0
        assert bpy.ops.captalk.add_open_head() == {"FINISHED"}
        rig["mesh"], rig["armature"] = find_rig(bpy.context.active_object)

    def write():
        animate_rig(bpy.context.scene, rig["mesh"], rig["armature"], motion, head.channel_names, "speech", 1)

    def bake_rig(config):
        return lambda: rig.setdefault("reports", []).append(
            bake(rig["mesh"], rig["armature"], rig["mesh"], rig["armature"], config))

    def written_keys() -> str:
        curves = [fc for a in bpy.data.actions if is_captalk_result(a) for fc in action_fcurves(a)]
        return f"{sum(len(fc.keyframe_points) for fc in curves):,} on {len(curves)} curves"

    def baked_keys() -> str:
        report = rig["reports"][-1]
        return f"{report.keys_written:,} of {report.keys_sampled:,}"

    load = os.getloadavg()[0]  # other jobs on the machine slow every figure down
    rows = []
    reduced_config = BakeConfig(reduce=True, tolerance=0.002, rotation_tolerance=math.radians(0.1))
    for fps in RATES:
        seconds = timed(args.repeat, lambda: fresh_rig(fps), write)
        rows.append((f"{fps} fps: write (`animate_rig`)", seconds, written_keys()))
        for label, config in (("bake onto the rig", BakeConfig()),
                              ("bake onto the rig, keyframe reduction", reduced_config)):
            rig["reports"] = []
            seconds = timed(args.repeat, lambda: None, bake_rig(config))
            rows.append((f"{fps} fps: {label}", seconds, baked_keys()))

    lines = [
        "# Writing and baking 60 s of animation in Blender",
        "",
        f"Command: `.venv/bin/python benchmarks/blender_write.py --repeat {args.repeat}`",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"Blender {bpy.app.version_string} (PyPI bpy); median of {args.repeat} runs; load average {load:.1f} "
        "at the start.",
        "",
        f"{SECONDS} s of motion on the open head ({head.num_expressions} expression shape keys + the head bone's "
        "quaternion). Write: resample onto the scene's frames and key two new actions in bulk on NLA strips. "
        "Bake: read the NLA results, flatten, map by name and write two new actions (the rig as target; "
        "each run replaces the previous bake). Reduction: tolerance 0.002 shape-key weight, 0.1 degree.",
        "",
        "| step | seconds | keys written (bake: of sampled) |",
        "|---|---|---|",
        *[f"| {name} | {seconds:.3f} | {keys} |" for name, seconds, keys in rows],
        "",
        "The reduction keeps most keys here because the synthetic motion carries noise (0.002) of the "
        "tolerance's size; smooth curves lose far more (see tests/test_retarget.py).",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
