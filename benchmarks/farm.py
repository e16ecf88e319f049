"""Benchmark: the batch on Ray (`./captalk.sh farm`) against one batch process per line.

    .venv/bin/python benchmarks/farm.py [--lines 6] [--seconds 3] [--resolution 240] [--checkpoint DIR]
                                        [--out benchmarks/farm.md]

A job list of --lines lines (each --seconds of the bundled speech sample, from different
offsets), run on this machine:

- the farm (`python -m farm`, an embedded Ray instance on 127.0.0.1) with 1 and 2
  generation workers, without and with rendering (Workbench, --resolution pixels);
- the batch script once per line (`scripts/captalk_batch.py --audio ...`, no render): each
  process starts its own back-end worker and loads the model again, which is what the
  farm's actors save.

Reported: wall time of the whole command (Ray's start included), lines per minute, and
the mean per-line generation and Blender-step times from the manifest. Uses
$CAPTALK_DATA_DIR (the open head must be built there: `./captalk.sh setup`). Nothing here
asserts on a time.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from model.machine import cpu_name  # noqa: E402


def make_lines(folder: Path, count: int, seconds: float) -> Path:
    with wave.open(str(ROOT / "samples" / "speech_sample.wav")) as source:
        params = source.getparams()
        total = source.getnframes() / params.framerate
        entries = []
        for i in range(count):
            source.setpos(int(((i * 1.7) % max(0.1, total - seconds)) * params.framerate))
            frames = source.readframes(int(seconds * params.framerate))
            with wave.open(str(folder / f"line{i:02d}.wav"), "wb") as target:
                target.setparams(params)
                target.writeframes(frames)
            entries.append({"name": f"line{i:02d}", "audio": f"line{i:02d}.wav", "seed": i})
    jobs = folder / "jobs.json"
    jobs.write_text(json.dumps({"jobs": entries}))
    return jobs


def env() -> dict:
    environment = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    environment.pop("XDG_RUNTIME_DIR", None)
    environment.setdefault("CAPTALK_BACKEND_PYTHON", sys.executable)
    return environment


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env(), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def manifest_means(out: Path) -> tuple[float, float]:
    entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    done = [e for e in entries if e["status"] == "done"]
    mean = lambda key: sum(e["timings"].get(key, 0.0) for e in done) / max(1, len(done))  # noqa: E731
    return mean("generate_s"), mean("blender_s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--resolution", type=int, default=240)
    parser.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "default"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "farm.md"))
    args = parser.parse_args()
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory(prefix="captalk-farm-bench-") as folder:
        folder = Path(folder)
        jobs = make_lines(folder, args.lines, args.seconds)
        for render in (False, True):
            for workers in (1, 2):
                out = folder / f"farm-{workers}-{render}"
                command = [sys.executable, "-m", "farm", str(jobs), "--out", str(out), "--workers", str(workers),
                           "--checkpoint", args.checkpoint, "--cpus", str(2 * workers),
                           "--resolution", str(args.resolution), "--render" if render else "--no-render"]
                seconds = timed(command)
                generate, blender = manifest_means(out)
                rows.append((f"farm, {workers} worker(s)", render, seconds, generate, blender))
                print(rows[-1], flush=True)
        out = folder / "per-line"
        seconds = 0.0
        for i in range(args.lines):
            seconds += timed([sys.executable, str(ROOT / "scripts" / "captalk_batch.py"), "--audio",
                              str(folder / f"line{i:02d}.wav"), "--name", f"line{i:02d}", "--seed", str(i),
                              "--out", str(out), "--checkpoint", args.checkpoint, "--no-render"])
        rows.append(("batch, one process per line", False, seconds, float("nan"), float("nan")))
        print(rows[-1], flush=True)
    farm_one = next(r for r in rows if r[0].startswith("farm, 1") and not r[1])
    saved = (rows[-1][2] - farm_one[2]) / args.lines
    minutes = (time.time() - started) / 60
    lines = [
        "# Farm benchmark", "",
        f"Command: `.venv/bin/python benchmarks/farm.py --lines {args.lines} --seconds {args.seconds:g} "
        f"--resolution {args.resolution}` ({datetime.date.today()}, {minutes:.1f} min)", "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores; Ray on 127.0.0.1 (embedded, `--cpus` = 2 x workers); "
        f"checkpoint `{Path(args.checkpoint).name}`. {args.lines} lines of {args.seconds:g} s of speech.", "",
        "*wall*: the whole command, Ray's start and the model loads included. *generate*: per line, from its "
        "submission to an actor until its motion is back (queueing and, for the first lines, the actors' model "
        "load included). *Blender step*: per line, the batch subprocess with --motion (start, scene, "
        "write, render).", "",
        "| run | render | wall s | lines / min | generate s / line | Blender step s / line |",
        "|---|---|---|---|---|---|",
    ]
    for name, render, seconds, generate, blender in rows:
        cells = "- | -" if generate != generate else f"{generate:.2f} | {blender:.2f}"
        lines.append(f"| {name} | {'yes' if render else 'no'} | {seconds:.1f} | {60 * args.lines / seconds:.1f} "
                     f"| {cells} |")
    lines += ["", f"Time per line saved by the farm (1 worker, no render) against one batch process per line (each "
              f"starts a worker and loads the model): {saved:+.1f} s (negative: the farm was slower).", ""]
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
