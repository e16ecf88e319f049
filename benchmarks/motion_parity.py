"""Motion parity across a change of the back end: generate fixed inputs with the default
model and save them (``--save``), or compare against a saved run (``--compare``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/motion_parity.py --save /tmp/before.npz   # old code
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/motion_parity.py --compare /tmp/before.npz  # new code

Inputs: real speech (`speech_source`) of 3, 10, 37 and 70 s (one, several and overlapping
30 s Whisper chunks), with and without captions, one with a caption change and two takes.
Prints the max |difference| per case (0.0 = bit-identical).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CASES = {  # name: (seconds, schedule text or None, takes)
    "3s-plain": (3.0, None, 1),
    "10s-style": (10.0, ("a calm old man", "happy"), 1),
    "37s-change": (37.0, "change", 2),
    "70s-plain": (70.0, None, 1),
}


def run_cases() -> dict[str, np.ndarray]:
    import torch

    from benchmarks.speech_source import speech
    from model.core.contract import GenerationOptions
    from model.core.schedule import parse_schedule
    from model.generate import Generator

    torch.set_num_threads(1)
    generator = Generator.load(None, device="cpu")
    out = {}
    for name, (seconds, captions, takes) in CASES.items():
        audio, _ = speech(seconds)
        if captions is None:
            schedule = None
        elif captions == "change":
            schedule = parse_schedule([
                {"start": 0.0, "style": "a calm old man", "emotion": ""},
                {"start": 13.3, "style": "an excited young woman", "emotion": "angry"}])
        else:
            schedule = parse_schedule(None, *captions)
        takes_out = generator.generate(audio, schedule, GenerationOptions(seed=3, takes=takes))
        out[name] = np.stack([take.motion for take in takes_out])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", type=Path)
    group.add_argument("--compare", type=Path)
    args = parser.parse_args()
    motions = run_cases()
    if args.save:
        np.savez(args.save, **motions)
        print(f"saved {', '.join(motions)} to {args.save}")
        return
    before = np.load(args.compare)
    worst = 0.0
    for name, motion in motions.items():
        diff = float(np.abs(motion - before[name]).max()) if motion.shape == before[name].shape else float("inf")
        worst = max(worst, diff)
        print(f"{name}: shape {motion.shape}, max |difference| {diff:.3g}")
    print("bit-identical" if worst == 0.0 else f"max |difference| over all cases: {worst:.3g}")


if __name__ == "__main__":
    main()
