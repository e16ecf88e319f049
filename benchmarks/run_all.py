"""Run every benchmark of the add-on and its back end, and write the summary benchmarks/README.md.

    .venv/bin/python benchmarks/run_all.py [--repeat N] [--all]

Runs, each as its own process (so each one's timings are cold where they should be), and
each rewriting its own detailed report next to this file:

1. `rig_import.py`: importing the open head and a FLAME-sized head into Blender;
2. `blender_write.py`: writing 60 s of motion onto a rig as F-curves, and baking it;
3. `generation.py`: real-time factor of generation for 10 s and 60 s of speech in the
   back-end process, the split (speech encoder, text encoder, AR, codec decoder), model
   load time and memory; CPU with 1 and all threads, CUDA too when torch sees a GPU;
4. `worker.py`: the same through the real worker the add-on starts (start time, latency
   on the client, memory of the worker process);
5. `streaming.py`: where a start goes (imports, weights, each encoder's warm-up; wall and
   user CPU time), the worker's spawn until ready / first job done, and long audio (1, 10,
   30 minutes): first progress event, first window, RTF, split, peak memory.

With --all also `encoders.py`, `speech_rate.py` and `data_synth.py` (training-side
figures, a few more minutes). --repeat N passes ``--repeat N`` to every benchmark that
takes it (default: each one's own). About 2-4 minutes on a 2-core CPU without --all.
Nothing here asserts on a time: the figures are reported, never checked.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from model.machine import cpu_name  # noqa: E402

REPEATABLE = {"rig_import", "blender_write", "generation", "worker", "encoders", "speech_rate"}
CORE = ("rig_import", "blender_write", "generation", "worker", "streaming")
EXTRA = ("encoders", "speech_rate", "data_synth")
WHAT = {
    "rig_import": "rig import into Blender",
    "blender_write": "writing and baking 60 s of animation in Blender",
    "generation": "generation speed, split, model load and memory (back end in process)",
    "worker": "the worker the add-on starts: start, latency, memory",
    "streaming": "start-up split, worker ready / first job, long audio: first window, RTF, peak RSS",
    "encoders": "frozen speech and text encoders",
    "speech_rate": "speech synthesis voices of the data engine and their phone timings",
    "data_synth": "the data engine (`python -m model data synth`)",
}


# ----------------------------------------------------------------------------- reading reports


def md_tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table of ``text`` as a list of rows, each {header: cell}."""
    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
            continue
        if len(block) > 2:
            header = block[0]
            tables.append([dict(zip(header, row)) for row in block[2:]])
        block = []
    return tables


def table_with(tables: list[list[dict[str, str]]], column: str) -> list[dict[str, str]]:
    for table in tables:
        if table and column in table[0]:
            return table
    raise KeyError(f"no table with a column {column!r}")


def row_starting(table: list[dict[str, str]], column: str, prefix: str) -> dict[str, str]:
    for row in table:
        if row[column].startswith(prefix):
            return row
    raise KeyError(f"no row whose {column!r} starts with {prefix!r}")


def median_of(cell: str) -> float:
    """'0.60 (0.50-0.61)' -> 0.60; '0.012' -> 0.012."""
    return float(cell.split()[0])


# ----------------------------------------------------------------------------- machine


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (Linux /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def memory_gb() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 2**20:.0f} GB RAM"
    return "RAM unknown"


def package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine_line() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu_name()}, {os.cpu_count()} cores, {memory_gb()}, {gpu}; {platform.system()} "
            f"{platform.release()}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"bpy {package('bpy')} (Blender as a Python module), ctranslate2 {package('ctranslate2')}; "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")


# ----------------------------------------------------------------------------- running


def run(name: str, repeat: int | None, extra: list[str]) -> dict:
    command = [sys.executable, str(HERE / f"{name}.py"), *extra]
    if repeat is not None and name in REPEATABLE:
        command += ["--repeat", str(repeat)]
    print(f"== {name}: {' '.join(command[1:])}", flush=True)
    load = os.getloadavg()[0]
    began = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"{name} failed (exit status {done.returncode})")
    print(f"   {wall:.0f} s (load average {load:.1f} at its start)", flush=True)
    return {"wall": wall, "load": load}


def f2(value: float) -> str:
    return f"{value:.2f}"


def summary(runs: dict, generation: list[dict], args, wall: float, others: float, loads: tuple) -> str:
    read = {name: md_tables((HERE / f"{name}.md").read_text()) for name in ("rig_import", "blender_write", "worker")}
    cores = os.cpu_count()
    env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    flags = (f" --repeat {args.repeat}" if args.repeat is not None else "") + (" --all" if args.all else "")
    lines = [
        "# Benchmarks",
        "",
        f"Command: `{env}.venv/bin/python benchmarks/run_all.py{flags}` "
        f"({datetime.date.today().isoformat()}, {wall / 60:.1f} min). It runs each benchmark below in its own "
        "process; each rewrites its detailed report (linked), and this page sums them up.",
        "",
        f"Machine: {machine_line()}.",
        "",
        f"Load average (1 min) before / after: {loads[0]:.1f} / {loads[1]:.1f}; other processes kept "
        f"{others:.2f} of the {cores} cores busy on average during the run"
        + (" (they shared the cores with the benchmarks: the figures are slower than on an idle machine, and "
           "the min in the detailed reports is the better estimate)." if others > 0.2 else "."),
        "Timings on this shared virtual machine vary by 10-30 % from run to run; no test asserts on them.",
        "",
        "## Generation",
        "",
        "Real-time factor (RTF) = generation seconds / seconds of speech; below 1 is faster than real time. "
        "In process: `Generator.generate` on a loaded model, median of the runs; the split is the generator's "
        "own timings (speech encoder = Whisper tiny.en, streamed 30 s chunk by chunk as windows need them, text encoder = MiniLM over the "
        "captions, AR = sampling the codes window by window, codec decoder = codes to motion). Through the "
        "worker: what the add-on waits for, submit to motion decoded on the client (HTTP, audio decoding, "
        "polling included). Details: [generation.md](generation.md), [worker.md](worker.md).",
        "",
        "| device | threads | speech | RTF in process | wall s | speech encoder s | text encoder s | AR s "
        "| codec decoder s | RTF through the worker | latency s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    latency = table_with(read["worker"], "latency s")
    for result in generation:
        for timed in result["runs"]:
            t = timed["timings"]
            worker_row = [row for row in latency if row["device"] == result["device"].split(":")[0]
                          and row["threads"] == str(result["threads"])
                          and row["audio s"] == f"{timed['audio_s']:.0f}"]
            worker_cells = (f"{median_of(worker_row[0]['RTF']):.3f} | {median_of(worker_row[0]['latency s']):.2f}"
                            if worker_row else "- | -")
            lines.append(f"| {result['device']} | {result['threads']} | {timed['audio_s']:.0f} s "
                         f"| **{timed['rtf']:.3f}** | {f2(timed['wall_s'])} | {f2(t['speech_encoder_s'])} "
                         f"| {f2(t['text_encoder_s'])} | {f2(t['ar_s'])} | {f2(t['decoder_s'])} | {worker_cells} |")

    start = table_with(read["worker"], "start s")
    lines += [
        "",
        "## Model load and back-end memory",
        "",
        "In process: importing torch and the back end, then `Generator.load` (weights, Whisper, MiniLM, their "
        "warm-up); cold start = spawning the interpreter until the model is loaded. Worker: `ensure_worker` "
        "until the worker answers (what the first *Generate* in Blender waits for before its job starts). "
        "Memory: resident set of the process (MB).",
        "",
        "| process | device | threads | load s | RSS loaded MB | RSS after 60 s of speech MB | peak RSS MB "
        "| CUDA peak MB |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for result in generation:
        cuda = result.get("cuda_peak_mb", {}).get("60", "-")
        lines.append(f"| back end in process | {result['device']} | {result['threads']} | {f2(result['import_s'])} "
                     f"imports + {f2(result['load_s'])} `Generator.load`; cold start {f2(result['cold_start_s'])} "
                     f"| {result['memory_loaded']['rss_mb']} | {result['memory_end']['rss_mb']} "
                     f"| {result['memory_end']['peak_rss_mb']} | {cuda} |")
    for row in start:
        lines.append(f"| worker (`python -m model serve`) | {row['device']} | {row['threads']} | start "
                     f"{median_of(row['start s']):.2f} | {row['RSS ready MB']} | {row['RSS after 60 s MB']} "
                     f"| {row['peak RSS MB']} | {row['CUDA peak MB']} |")

    write = table_with(read["blender_write"], "step")
    rigs = table_with(read["rig_import"], "step")
    def step(table, prefix: str) -> str:
        return row_starting(table, "step", prefix)["seconds"]

    seconds = {
        "write 60 s of motion onto the open head (25 fps)": step(write, "25 fps: write"),
        "bake those 60 s to plain shape-key and bone keys (25 fps)": step(write, "25 fps: bake onto the rig"),
        "bake, with keyframe reduction (25 fps)": step(write, "25 fps: bake onto the rig, keyframe"),
        "write 60 s (30 fps)": step(write, "30 fps: write"),
        "bake 60 s (30 fps)": step(write, "30 fps: bake onto the rig"),
        "import the open head (*Add Open Head* operator)": step(rigs, "open head: `captalk.add_open_head`"),
        "import a FLAME-sized head (*Import FLAME* operator: read, convert, cache, build)":
            step(rigs, "FLAME-sized: `captalk.import_flame`"),
    }
    lines += [
        "",
        "## In Blender",
        "",
        f"Blender {package('bpy')} (PyPI bpy), median of the runs. The open head: 4,538 vertices, 52 shape keys; "
        "FLAME-sized: a FLAME-format fake of FLAME 2020's size (5,023 vertices, 100 expression shape keys, "
        "300 identity components), as FLAME itself cannot ship. Details: [blender_write.md](blender_write.md), "
        "[rig_import.md](rig_import.md).",
        "",
        "| step | seconds |",
        "|---|---:|",
        *[f"| {step} | {value} |" for step, value in seconds.items()],
    ]

    streaming = (HERE / "streaming.md").read_text().split("\n## ", 1)
    if len(streaming) == 2:  # its tables as they are, one heading level down
        lines += ["", "## Start-up and long audio", "",
                  "From [streaming.md](streaming.md) (fresh processes, 1 thread; user CPU time is the figure the "
                  "machine's load moves least).", ""]
        lines += [("#" + line if line.startswith("## ") else line) for line in ("## " + streaming[1]).splitlines()]

    lines += [
        "",
        "## Every benchmark",
        "",
        "| report | what | command | last run by this command |",
        "|---|---|---|---|",
    ]
    for name in (*CORE, *EXTRA):
        report = HERE / f"{name}.md"
        command_line = next((line for line in report.read_text().splitlines() if line.startswith("Command:")),
                            "") if report.exists() else ""
        command = command_line.removeprefix("Command:").strip().split(" (")[0] or f"`.venv/bin/python benchmarks/{name}.py`"
        if name in runs:
            when = f"yes, {runs[name]['wall']:.0f} s, load average {runs[name]['load']:.1f} at its start"
        else:
            when = "no (run with `--all`, or its own command)"
        lines.append(f"| [{name}.md]({name}.md) | {WHAT[name]} | {command} | {when} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, help="timed runs per figure, passed to every benchmark that takes it")
    parser.add_argument("--all", action="store_true", help="also the training-side benchmarks (encoders, speech "
                        "synthesis, data engine)")
    parser.add_argument("--out", default=str(HERE / "README.md"))
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    busy_before, ours_before = busy_cpu_seconds(), sum(os.times()[:4])
    began = time.perf_counter()
    runs = {}
    with tempfile.TemporaryDirectory(prefix="captalk-bench-") as tmp:
        generation_json = Path(tmp) / "generation.json"
        for name in (*CORE, *(EXTRA if args.all else ())):
            extra = ["--json", str(generation_json)] if name == "generation" else []
            runs[name] = run(name, args.repeat, extra)
        generation = json.loads(generation_json.read_text())
    wall = time.perf_counter() - began
    # CPU time of everything else: the machine's busy time less this process and its (reaped) children
    others = max(0.0, busy_cpu_seconds() - busy_before - (sum(os.times()[:4]) - ours_before)) / wall
    text = summary(runs, generation, args, wall, others, (load_before, os.getloadavg()[0]))
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
