"""How fast the data engine makes training data: `python -m model data synth` timed end to end.

    .venv/bin/python benchmarks/data_synth.py [--hours 0.25] [--workers 2]

Runs the real command in a fresh temporary folder (voices, teacher, captions, files) and
writes benchmarks/data_synth.md: hours made per hour of wall time and the projected time
for 10 hours. The machine's load average is recorded because other jobs skew the figure.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from model.machine import cpu_name  # noqa: E402



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=0.25)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "model", "data", "synth", "--out", folder, "--hours", str(args.hours),
                   "--workers", str(args.workers)]
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - started
        load_after = os.getloadavg()[0]
        summary = json.loads(result.stdout)
        size_mb = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 1e6

    rate = summary["hours"] * 3600 / wall
    report = f"""# Data engine speed

Command: `.venv/bin/python benchmarks/data_synth.py --hours {args.hours} --workers {args.workers}`
(runs `python -m model data synth --hours {args.hours} --workers {args.workers}` in a fresh folder)

Machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()};
load average {load_before:.1f} before, {load_after:.1f} after (other jobs on the machine slow it).

| made | clips | wall time | hours of data per hour | 10 h would take | disk |
|---|---|---|---|---|---|
| {summary['hours']:.3f} h | {summary['clips']} | {wall:.1f} s | **{rate:.1f}x** | {10 * 3600 / rate / 60:.0f} min | {size_mb / summary['hours']:.0f} MB per hour |

Splits: {summary['splits']}; clips with a mid-clip emotion change: {summary['emotion_changes']};
voices: {', '.join(summary['voices'])} (test voice held out: {', '.join(summary['test_voices'])}).
Each clip: speech synthesis with engine phone timings, the teacher animator, captions,
a 16-bit WAV and a motion file; the figure includes process start-up and model loads.
"""
    (ROOT / "benchmarks" / "data_synth.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
