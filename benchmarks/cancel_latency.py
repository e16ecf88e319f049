"""How long a cancel takes to stop a generation in each stage (in process, one thread).

    .venv/bin/python benchmarks/cancel_latency.py [--checkpoint DIR] [--minutes 30] [--sections 700]

Speech encoding: a --minutes clip, cancelled 2 s after "encoding speech" starts. Caption
encoding: a 60 s clip with --sections caption sections (each its own text), cancelled 2 s
after "encoding captions" starts. Reports the time from setting the cancel event to
`GenerationCancelled`. Nothing is asserted: figures are printed.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cancel_latency(generator, samples: np.ndarray, schedule, stage: str, delay: float = 2.0) -> tuple[float, str]:
    from model.generate import GenerationCancelled

    cancel, entered = threading.Event(), threading.Event()

    def progress(_fraction: float, message: str) -> None:
        if message == stage:
            entered.set()

    def canceller() -> None:
        entered.wait()
        time.sleep(delay)
        set_at[0] = time.perf_counter()
        cancel.set()

    set_at = [0.0]
    threading.Thread(target=canceller, daemon=True).start()
    try:
        generator.generate(samples, schedule, progress=progress, cancel=cancel)
    except GenerationCancelled as exc:
        return time.perf_counter() - set_at[0], str(exc)
    return float("nan"), "finished before the cancel"


def main() -> None:
    import soundfile
    import torch

    from model.core.audio import SAMPLE_RATE
    from model.generate import Generator

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint folder (default: the bundled model)")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sections", type=int, default=700)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = Generator.load(args.checkpoint, device="cpu")
    speech, rate = soundfile.read(ROOT / "samples" / "speech_sample.wav", dtype="float32")
    assert rate == SAMPLE_RATE

    def clip(seconds: float) -> np.ndarray:
        return np.tile(speech, int(np.ceil(seconds * rate / speech.size)))[: int(seconds * rate)]

    latency, message = cancel_latency(generator, clip(args.minutes * 60), None, "encoding speech")
    print(f"| speech encoding, {args.minutes:g} min clip ({generator.speech.encoder_id}) | {latency:.2f} s | {message} |")
    schedule = [{"start": round(60.0 * i / args.sections, 3), "emotion": f"mood number {i}"}
                for i in range(args.sections)]
    latency, message = cancel_latency(generator, clip(60.0), schedule, "encoding captions")
    print(f"| caption encoding, 60 s clip, {args.sections} sections ({generator.text.encoder_id}) | {latency:.2f} s "
          f"| {message} |")


if __name__ == "__main__":
    main()
