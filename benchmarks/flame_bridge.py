"""FLAME bridge figures: import time of a FLAME-sized file, mapping speed, and the bundled
model's output on the open head vs the open head written as a FLAME file.

    CAPTALK_DATA_DIR=... OMP_NUM_THREADS=1 .venv/bin/python benchmarks/flame_bridge.py [--picture docs/flame_bridge.png]

1. Import: a FLAME 2020-format pickle of 5,023 vertices (the open head with 485 triangles
   split and warped, 300 identity + 100 expression components) through *Import FLAME*'s
   two steps: `import_flame` and the adapter build (`python -m model flame-adapter`).
2. Same audio, same seed (samples/speech_sample.wav, seed 0, the bundled model): the open
   head's clip, and the same clip mapped onto the same-mesh FLAME file (full basis):
   lip vertices' distance per frame; inner-lip openings on the frames and lip pairs where
   the open head's lips are closed (opening < 0.5 mm).
3. Mapping 60 s of motion (1,500 frames).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "scripts")]

from flame_fixtures import open_head_as_flame, write_flame_2020_pickle  # noqa: E402
from model.core.flame_adapter import map_to_rig  # noqa: E402
from model.core.flame_import import import_flame  # noqa: E402
from model.core.head_model import HeadModel  # noqa: E402
from model.core.motion_file import MotionClip  # noqa: E402
from model.core.paths import default_open_head_file  # noqa: E402
from model.flame_bridge.build import build_adapter  # noqa: E402

SPEECH = ROOT / "samples" / "speech_sample.wav"


def import_benchmark(source: HeadModel, folder: Path) -> dict:
    fixture = open_head_as_flame(source, shuffle=True, split=485, warp=True, seed=5)
    path = write_flame_2020_pickle(folder / "generic_model.pkl", flame=fixture.flame)
    started = time.perf_counter()
    target = import_flame(path)
    converted = time.perf_counter()
    build_adapter(source, target)
    built = time.perf_counter()
    return {"vertices": target.num_vertices, "import_s": converted - started, "adapter_s": built - converted}


def generated_clip(source: HeadModel) -> MotionClip:
    from model.core.audio import load_audio
    from model.generate import GenerationOptions, Generator

    generator = Generator.load(None, device="cpu")
    result = generator.generate(load_audio(str(SPEECH)), None, GenerationOptions(seed=0))
    return result.to_clip()


def compare(source: HeadModel, clip: MotionClip, folder: Path) -> tuple[dict, HeadModel, MotionClip]:
    fixture = open_head_as_flame(source)
    target = import_flame(write_flame_2020_pickle(folder / "same.pkl", flame=fixture.flame))
    adapter = build_adapter(source, target)
    mapped = map_to_rig(clip, adapter)
    open_verts = source.vertices(clip.motion)
    flame_verts = target.vertices(mapped.motion)  # same mesh, same vertex order
    lips = source.regions["lips"]
    lip_distance = 1000 * np.linalg.norm(flame_verts[:, lips] - open_verts[:, lips], axis=2)
    pairs = source.regions["lip_pairs"]
    opening = lambda v: 1000 * np.linalg.norm(v[:, pairs[:, 0]] - v[:, pairs[:, 1]], axis=2)
    open_gap, flame_gap = opening(open_verts), opening(flame_verts)
    closed = open_gap < 0.5  # (frame, pair) entries where the open head's lips touch
    figures = {"frames": clip.num_frames, "lip_mean_mm": lip_distance.mean(), "lip_max_mm": lip_distance.max(),
               "closed_frames": int(closed.any(axis=1).sum()),
               "closed_gap_error_mm": np.abs(flame_gap - open_gap)[closed].mean() if closed.any() else float("nan"),
               "closed_open_head_gap_mm": open_gap[closed].mean() if closed.any() else float("nan")}
    return figures, target, mapped, adapter


def mapping_speed(clip: MotionClip, adapter) -> float:
    reps = int(np.ceil(1500 / clip.num_frames))
    long = MotionClip(np.tile(clip.motion, (reps, 1))[:1500], clip.channels)
    map_to_rig(long, adapter)
    started = time.perf_counter()
    map_to_rig(long, adapter)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--picture", help="also write the side-by-side picture (needs bpy)")
    args = parser.parse_args()
    source = HeadModel.load(default_open_head_file())
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        imp = import_benchmark(source, folder)
        print(f"import of a {imp['vertices']}-vertex FLAME 2020 pickle (300 identity + 100 expression): "
              f"read + convert {imp['import_s']:.2f} s, adapter {imp['adapter_s']:.2f} s, "
              f"total {imp['import_s'] + imp['adapter_s']:.2f} s")
        clip = generated_clip(source)
        figures, target, mapped, adapter = compare(source, clip, folder)
        print(f"same audio, same seed, {figures['frames']} frames: lip vertices {figures['lip_mean_mm']:.3f} mm apart "
              f"on average (max {figures['lip_max_mm']:.3f}); closed-lip frames {figures['closed_frames']} "
              f"(open head's opening there {figures['closed_open_head_gap_mm']:.3f} mm): inner-lip gap error "
              f"{figures['closed_gap_error_mm']:.3f} mm")
        print(f"mapping 60 s (1500 frames): {mapping_speed(clip, adapter):.3f} s")
        if args.picture:
            from render_flame_bridge import render

            render(source, clip, target, mapped, Path(args.picture))
            print(f"picture: {args.picture}")


if __name__ == "__main__":
    main()
