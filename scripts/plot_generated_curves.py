"""Plot the curves of a generated clip: jawOpen, a smile, a blink and head pitch over time.

    .venv/bin/python scripts/plot_generated_curves.py [--out docs/generated_curves.png]
        [--audio samples/speech_sample.wav] [--checkpoint DIR] [--switch 3.5] [--seed 0]

Generates motion with the default model (CPU, one take, default options) for the bundled
speech sample twice with the same seed: once with the emotion caption changing from
"Neutral" to "extremely happy" at --switch seconds (the style caption held), and once
with "Neutral" throughout. Plots the speech waveform and four channels of the open head's
motion (mouthSmile and eyeBlink are the mean of left and right; head pitch is the head
bone's rotation about the left-right axis, nodding down positive) with the caption change
marked. The unswitched run is drawn in grey: before the change the two are the same.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STYLE = "A woman speaking with lively head movements."
BEFORE, AFTER = "Neutral", "extremely happy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "generated_curves.png"))
    parser.add_argument("--audio", default=str(ROOT / "samples" / "speech_sample.wav"))
    parser.add_argument("--checkpoint", help="checkpoint folder (default: checkpoints/default)")
    parser.add_argument("--switch", type=float, default=3.5, help="seconds at which the emotion caption changes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    from model.core.audio import MOTION_FPS, SAMPLE_RATE, load_audio
    from model.core.contract import GenerationOptions
    from model.generate import Generator
    from model.core.schedule import parse_schedule

    audio = load_audio(args.audio)
    generator = Generator.load(args.checkpoint, device="cpu")
    options = GenerationOptions(seed=args.seed)
    switched = generator.generate(audio, parse_schedule([{"start": args.switch, "emotion": AFTER}], STYLE, BEFORE),
                                  options)[0]
    held = generator.generate(audio, parse_schedule(None, STYLE, BEFORE), options)[0]
    channels = list(switched.channels)

    def curve(motion: np.ndarray, names: tuple[str, ...], scale: float = 1.0) -> np.ndarray:
        return motion[:, [channels.index(n) for n in names]].mean(axis=1) * scale

    rows = [
        ("jawOpen", ("jawOpen",), 1.0, "weight"),
        ("mouthSmile (L+R)/2", ("mouthSmileLeft", "mouthSmileRight"), 1.0, "weight"),
        ("eyeBlink (L+R)/2", ("eyeBlinkLeft", "eyeBlinkRight"), 1.0, "weight"),
        ("head pitch (nod down +)", ("head.rx",), 180 / math.pi, "degrees"),
    ]
    figure, axes = plt.subplots(len(rows) + 1, 1, figsize=(9, 1.55 * (len(rows) + 1)), sharex=True,
                                gridspec_kw={"height_ratios": [0.7] + [1] * len(rows)})
    t_audio = np.arange(audio.size) / SAMPLE_RATE
    axes[0].plot(t_audio, audio, color="0.35", lw=0.4)
    axes[0].set_ylabel("speech", fontsize=8)
    axes[0].set_yticks([])
    axes[0].set_title(f"style \"{STYLE}\"; emotion \"{BEFORE}\" -> \"{AFTER}\" at {args.switch:g} s "
                      f"(grey: \"{BEFORE}\" throughout)", fontsize=9)
    t = np.arange(len(switched.motion)) / MOTION_FPS
    for axis, (label, names, scale, unit) in zip(axes[1:], rows):
        axis.plot(t, curve(held.motion, names, scale), color="0.65", lw=1.1)
        axis.plot(t, curve(switched.motion, names, scale), color="tab:blue", lw=1.5)
        axis.set_ylabel(f"{label}\n({unit})", fontsize=8)
        axis.tick_params(labelsize=8)
    for axis in axes:
        axis.axvline(args.switch, color="tab:red", ls="--", lw=0.9)
        axis.axvspan(args.switch, t[-1], color="tab:orange", alpha=0.07, lw=0)
    axes[-1].set_xlabel("seconds", fontsize=8)
    axes[-1].set_xlim(0, max(t[-1], t_audio[-1]))
    figure.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    plt.close(figure)
    print(f"curves: {args.out} ({len(t)} frames at {MOTION_FPS:g} fps, seed {args.seed}, "
          f"{Path(generator.folder).name} model)")


if __name__ == "__main__":
    main()
