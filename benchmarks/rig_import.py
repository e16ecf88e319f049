"""Benchmark: rig import into Blender for the open head and a FLAME-sized head.

    .venv/bin/python benchmarks/rig_import.py [--repeat 5] [--out benchmarks/rig_import.md]

The FLAME-sized head is a FLAME-format fake (5,023 vertices, 300 shape + 100 expression
components, as FLAME 2020) written by tests/flame_fixtures.py: FLAME itself is never used.
Reports the median of --repeat runs of each step, on a fresh empty scene each time.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bpy

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "tests")]
import flame_fixtures  # noqa: E402
from source_addon import register_from_source  # noqa: E402

from model.machine import cpu_name  # noqa: E402


def timed(repeat: int, setup, step) -> float:
    """Median seconds of ``step()`` over ``repeat`` runs, ``setup()`` before each (untimed)."""
    times = []
    for _ in range(repeat):
        setup()
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "rig_import.md"))
    args = parser.parse_args()

    register_from_source()
    from captalk.captalk_addon.paths import find_cached_file
    from captalk.captalk_addon.rig_builder import create_rig
    from captalk.model.core.flame_import import import_flame
    from captalk.model.core.head_model import HeadModel
    from captalk.model.core.paths import OPEN_HEAD_RELATIVE

    def fresh_scene():
        bpy.ops.wm.read_factory_settings(use_empty=True)

    open_head_file = find_cached_file(OPEN_HEAD_RELATIVE)
    if open_head_file is None:
        sys.exit("build the open head first: ./captalk.sh setup")
    rows = []
    open_head = HeadModel.load(open_head_file)
    rows.append(("open head: load head-model file", timed(args.repeat, lambda: None, lambda: HeadModel.load(open_head_file))))
    rows.append(("open head: build rig in Blender", timed(args.repeat, fresh_scene, lambda: create_rig(open_head, open_head_file, bpy.context))))
    rows.append(("open head: `captalk.add_open_head` operator", timed(args.repeat, fresh_scene, bpy.ops.captalk.add_open_head)))

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CAPTALK_DATA_DIR"] = tmp
        pkl = flame_fixtures.write_flame_2020_pickle(Path(tmp) / "generic_model.pkl")
        rows.append(("FLAME-sized: read + convert pickle", timed(args.repeat, lambda: None, lambda: import_flame(pkl))))
        flame = import_flame(pkl)
        flame_file = flame.save(Path(tmp) / "flame.npz")
        rows.append(("FLAME-sized: build rig in Blender", timed(args.repeat, fresh_scene, lambda: create_rig(flame, flame_file, bpy.context))))
        rows.append(("FLAME-sized: `captalk.import_flame` operator (all of the above + cache)",
                     timed(args.repeat, fresh_scene, lambda: bpy.ops.captalk.import_flame(filepath=str(pkl)))))

    lines = [
        "# Rig import benchmark",
        "",
        f"Command: `.venv/bin/python benchmarks/rig_import.py --repeat {args.repeat}`",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"Blender {bpy.app.version_string} (PyPI bpy); median of {args.repeat} runs.",
        "",
        "| step | seconds |",
        "|---|---|",
        *[f"| {name} | {seconds:.3f} |" for name, seconds in rows],
        "",
        f"Open head: {open_head.num_vertices} vertices, {open_head.num_expressions} shape keys. "
        f"FLAME-sized: {flame.num_vertices} vertices, {flame.num_expressions} expression shape keys, "
        f"{len(flame.shape_names)} identity components.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
