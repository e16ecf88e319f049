"""Memory of decoding audio (`model.core.audio.load_audio`): peak resident memory above the
interpreter's own, per file kind, each in a fresh process.

    .venv/bin/python benchmarks/audio_memory.py [--source DIR] [--limit-gb 4]

--source DIR: the checkout whose `model` is measured (default: this one), to compare
another version with this one. Each decode runs under an address-space limit
(--limit-gb, default 4 GB) so a decoder that would take the machine's memory stops with a
MemoryError instead; the report then says "over the limit". The files are sparse
(silence), so they cost no disk. Prints a table and writes benchmarks/audio_memory.md
(only when measuring this checkout). Nothing is asserted: figures are reported.
"""
from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, re, resource, sys, time
sys.path.insert(0, sys.argv[1])
import numpy, scipy.signal, soundfile
from model.core.audio import load_audio
hwm = lambda: int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1))  # kB, this process only
base = hwm()
limit = int(float(sys.argv[3]) * 2**30)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
start = time.perf_counter()
try:
    result = f"{load_audio(sys.argv[2], max_seconds=1800).size / 16000 / 60:.1f} min at 16 kHz"
except MemoryError:
    result = "MemoryError (over the limit)"
except Exception as exc:
    result = f"refused: {str(exc)[:90]}"
seconds = time.perf_counter() - start
peak = hwm()
print(json.dumps({"peak_mb": (peak - base) / 1024, "seconds": seconds, "result": result}))
"""


def wav_header(rate: int, channels: int, data_bytes: int, bits: int = 16) -> bytes:
    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", min(2**32 - 1, 36 + data_bytes)) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, bits)
            + b"data" + struct.pack("<I", min(2**32 - 1, data_bytes)))


def sparse_wav(path: Path, rate: int, channels: int, seconds: float) -> Path:
    data = int(rate * seconds) * channels * 2
    with open(path, "wb") as handle:
        handle.write(wav_header(rate, channels, data))
        handle.truncate(44 + data)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(HERE.parent), help="checkout whose model/ is measured")
    parser.add_argument("--limit-gb", type=float, default=4.0, help="address-space limit per decode")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        cases = {
            "30 min 16 kHz mono WAV (58 MB)": sparse_wav(folder / "a.wav", 16000, 1, 1800),
            "5 min 96 kHz 6-channel WAV (346 MB)": sparse_wav(folder / "b.wav", 96000, 6, 300),
            "29 min 96 kHz 6-channel WAV (2.0 GB)": sparse_wav(folder / "c.wav", 96000, 6, 1740),
            "6 s at 9,999,991 Hz (192 KB)": sparse_wav(folder / "d.wav", 9_999_991, 1, 96000 / 9_999_991),
        }
        rows = []
        for name, path in cases.items():
            out = subprocess.run([sys.executable, "-c", CHILD, args.source, str(path), str(args.limit_gb)],
                                 capture_output=True, text=True, timeout=1800)
            figures = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(f"| {name} | {figures['peak_mb']:.0f} MB | {figures['seconds']:.1f} s | {figures['result']} |")
            print(rows[-1], flush=True)
    table = "\n".join(["| file | peak memory above the interpreter | time | result |", "|---|---|---|---|", *rows])
    command = f"python benchmarks/audio_memory.py --limit-gb {args.limit_gb:g}"
    if Path(args.source).resolve() == HERE.parent:
        (HERE / "audio_memory.md").write_text(f"# Audio decoding memory\n\n`{command}`\n\n{table}\n")


if __name__ == "__main__":
    main()
