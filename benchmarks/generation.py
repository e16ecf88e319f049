"""Benchmark: generation speed of the bundled model in the back-end process, where the time
goes, how long the model takes to load, and how much memory it holds.

    .venv/bin/python benchmarks/generation.py [--repeat 3] [--threads 1,2] [--out benchmarks/generation.md]

Each configuration (CPU with each --threads value; CUDA too when torch sees a GPU) runs in
a fresh process, so that load times are cold and the thread count is set before anything
loads (CTranslate2's Whisper takes its thread count when it loads). In that process:

- load: importing torch and the back end, then `Generator.load("checkpoints/default")`
  (weights, Whisper tiny.en, MiniLM, their warm-up); *cold start* is the whole span from
  spawning the interpreter to a loaded model, as the worker pays it once;
- speed: `model.evaluate.speed.measure_speed` on 10 s and 60 s of real speech (the
  LibriVox test recordings and the repository's sample, concatenated): the median of
  --repeat runs of `Generator.generate` after one warm-up run, with the generator's own
  split (`meta["timings"]`): speech encoder, text encoder (captions), AR sampling, codec
  decoding, and the rest (windowing, smoothing, copies);
- memory: resident set (VmRSS) after the load and after the 60 s runs, the process's peak
  (VmHWM), and CUDA's peak allocation on a GPU.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LENGTHS = (10.0, 60.0)
STYLE, EMOTION = "a calm teacher explaining something", "happy"  # as benchmarks/worker.py


def child(device: str, threads: int, repeat: int, spawned_at: float) -> dict:
    """One configuration, in its own process; returns what the report needs."""
    began = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    from model.evaluate.speed import measure_speed
    from model.core.contract import GenerationOptions
    from model.generate import Generator
    from model.machine import process_memory_mb
    from model.core.schedule import parse_schedule
    from speech_source import speech

    imported = time.perf_counter()
    generator = Generator.load(None, device=device)
    loaded = time.perf_counter()
    result = {"device": str(generator.device), "threads": torch.get_num_threads(),
              "import_s": imported - began, "load_s": loaded - imported, "cold_start_s": time.time() - spawned_at,
              "memory_loaded": process_memory_mb(), "runs": []}
    schedule, options = parse_schedule(None, STYLE, EMOTION), GenerationOptions(seed=1)
    for seconds in LENGTHS:
        audio, result["speech"] = speech(seconds)
        if generator.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(generator.device)
        run = measure_speed(generator, audio, schedule, options, repeats=repeat)
        result["runs"].append({"audio_s": run.audio_s, "wall_s": run.wall_s, "rtf": run.rtf,
                               "timings": run.timings})
        if generator.device.type == "cuda":
            result.setdefault("cuda_peak_mb", {})[f"{seconds:.0f}"] = round(
                torch.cuda.max_memory_allocated(generator.device) / 2**20, 1)
    result["memory_end"] = process_memory_mb()
    result["machine"] = run.machine
    result["gpu"] = torch.cuda.get_device_name(generator.device) if generator.device.type == "cuda" else None
    return result


def run_child(device: str, threads: int, repeat: int) -> dict:
    command = [sys.executable, __file__, "--child", device, "--threads", str(threads), "--repeat", str(repeat),
               "--spawned-at", repr(time.time())]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{device}, {threads} thread(s) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


PARTS = (("speech_encoder_s", "speech encoder"), ("text_encoder_s", "text encoder"), ("ar_s", "AR"),
         ("decoder_s", "codec decoder"))


def report(results: list[dict], args, wall: float, load: tuple[float, float]) -> str:
    import torch

    first = results[0]
    gpu = next((r["gpu"] for r in results if r["gpu"]), "no GPU")
    command = f"`.venv/bin/python benchmarks/generation.py --repeat {args.repeat} --threads {args.threads}`"
    lines = [
        "# Generation benchmark (back end, in process)",
        "",
        f"Command: {command} ({datetime.date.today().isoformat()}, {wall / 60:.1f} min)",
        "",
        f"Machine: {first['machine']}, {gpu}. Load average (1 min) before / after the run: {load[0]:.1f} / "
        f"{load[1]:.1f}" + (" (other jobs shared these cores: figures are slower than on an idle machine)."
                            if max(load) > 0.5 else "."),
        "",
        f"`checkpoints/default` loaded by `model.generate.Generator` in a fresh process per row; captions "
        f"\"{STYLE}\" / \"{EMOTION}\", one take, default options. Speech: {first['speech']}. "
        "*threads*: `torch.set_num_threads` before the load (CTranslate2's Whisper follows it).",
        "",
        "## Real-time factor and where the time goes",
        "",
        f"Median of {args.repeat} runs of `Generator.generate` after a warm-up run (`model.evaluate.speed`); "
        "RTF = wall / audio length (below 1: faster than real time). The split is the generator's own "
        "`meta[\"timings\"]` of the median run; *other*: windowing, smoothing, copies.",
        "",
        "| device | threads | audio | wall s | RTF | speech encoder s | text encoder s | AR s | codec decoder s "
        "| other s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for run in r["runs"]:
            parts = [run["timings"].get(key, 0.0) for key, _ in PARTS]
            other = max(run["wall_s"] - sum(parts), 0.0)
            cells = " | ".join(f"{v:.3f} ({100 * v / run['wall_s']:.0f}%)" for v in [*parts, other])
            lines.append(f"| {r['device']} | {r['threads']} | {run['audio_s']:.0f} s | {run['wall_s']:.3f} "
                         f"| {run['rtf']:.4f} | {cells} |")
    lines += [
        "",
        "## Model load and memory",
        "",
        "*imports*: torch and the back end's modules; *Generator.load*: weights, speech and text encoders "
        "and their warm-up; *cold start*: spawning the interpreter until the model is loaded. Memory: "
        "resident set after the load, after the 60 s runs, and the process's peak.",
        "",
        "| device | threads | imports s | Generator.load s | cold start s | RSS loaded MB | RSS after 60 s MB "
        "| peak RSS MB | CUDA peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        cuda = r.get("cuda_peak_mb", {}).get("60", "-")
        lines.append(f"| {r['device']} | {r['threads']} | {r['import_s']:.2f} | {r['load_s']:.2f} "
                     f"| {r['cold_start_s']:.2f} | {r['memory_loaded']['rss_mb']} | {r['memory_end']['rss_mb']} "
                     f"| {r['memory_end']['peak_rss_mb']} | {cuda} |")
    if not torch.cuda.is_available():
        lines += ["", "No CUDA rows: torch sees no GPU here (they are added when it does)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per length (after 1 warm-up)")
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}", help="comma-separated torch CPU thread counts")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "generation.md"))
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--child", choices=("cpu", "cuda"), help=argparse.SUPPRESS)
    parser.add_argument("--spawned-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, int(args.threads), args.repeat, args.spawned_at)))
        return

    import torch

    thread_counts = sorted({int(t) for t in args.threads.split(",") if t.strip()})
    configs = [("cpu", t) for t in thread_counts]
    if torch.cuda.is_available():
        configs.append(("cuda", max(thread_counts)))
    load_before, began = os.getloadavg()[0], time.perf_counter()
    results = []
    for device, threads in configs:
        print(f"{device}, {threads} thread(s) ...", flush=True)
        results.append(run_child(device, threads, args.repeat))
        for run in results[-1]["runs"]:
            print(f"  {run['audio_s']:.0f} s: {run['wall_s']:.2f} s (RTF {run['rtf']:.4f})", flush=True)
    text = report(results, args, time.perf_counter() - began, (load_before, os.getloadavg()[0]))
    Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(text)


if __name__ == "__main__":
    main()
