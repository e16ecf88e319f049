"""Benchmark: where the worker's start goes, and streaming generation of long audio.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/streaming.py [--minutes 1,10,30] [--old-tree DIR]
                                                               [--out benchmarks/streaming.md]

Every figure comes from a fresh interpreter (a child process of this script), on the
bundled checkpoints/default, CPU, 1 torch thread:

- start-up split: interpreter, `import torch`, importing the generator, `Generator.load`
  without the encoders (checkpoint weights), then the text encoder's and the speech
  encoder's warm-up (transformers / CTranslate2 imports, weights, one call each), wall
  time and user CPU time of each step (CPU time counts this process only, so it moves
  less with the machine's load than the wall time does);
- worker: `python -m model serve` spawned until its ready line (it answers /health and
  queues jobs from then on), until /health answers, and until a first 10 s job is done
  (that job waits for the background warm-up). With --old-tree DIR (a checkout of an
  older commit, e.g. `git archive 4a969fa | tar -x -C DIR`) the same for that tree, so
  before / after are measured under the same load;
- long audio: for each --minutes length, real speech (`speech_source`) generated with
  `Generator.iter_windows`: seconds until the first progress event and the first window,
  the whole run's wall and user CPU time, and the process's resident set after loading,
  with the audio in memory, and its peak during generation (VmHWM, restarted once the
  audio is loaded: the audio's own temporary copies are not generation's).
Nothing here asserts on a time.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def cpu_s() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def child_startup() -> dict:
    """Start-up split in this (fresh) process."""
    import numpy as np

    steps, wall, cpu = {}, time.perf_counter(), cpu_s()

    def lap(name: str) -> None:
        nonlocal wall, cpu
        now, used = time.perf_counter(), cpu_s()
        steps[name] = {"wall_s": round(now - wall, 3), "cpu_s": round(used - cpu, 3)}
        wall, cpu = now, used

    import torch

    torch.set_num_threads(1)
    lap("import torch")
    sys.path.insert(0, str(ROOT))
    from model.generate import Generator

    lap("import model.generate")
    generator = Generator.load(None, device="cpu", warm_up=False)
    lap("Generator.load (weights, no encoders)")
    generator.text.encode(["warm-up"])
    lap("text encoder warm-up (transformers, MiniLM)")
    generator.speech.features(np.zeros(1600, np.float32))
    lap("speech encoder warm-up (CTranslate2, Whisper, one 30 s call)")
    generator.speech.features(np.zeros(1600, np.float32))
    lap("one more Whisper call (30 s chunk)")
    return steps


def child_long(minutes: float) -> dict:
    """One long clip through `iter_windows` in this (fresh) process."""
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    from model.core.contract import GenerationOptions
    from model.generate import Generator
    from model.machine import process_memory_mb
    from speech_source import speech

    generator = Generator.load(None, device="cpu")
    loaded = process_memory_mb()
    audio, source = speech(minutes * 60)
    with_audio = process_memory_mb()
    try:  # restart the peak (VmHWM) here: what generation adds, not the audio's temporary copies
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    first_progress = []
    began, began_cpu = time.perf_counter(), cpu_s()
    stream = generator.iter_windows(audio, None, GenerationOptions(seed=1),
                                    progress=lambda f, m: first_progress or first_progress.append(time.perf_counter()))
    first_window, frames = None, 0
    for chunk in stream:
        first_window = first_window or time.perf_counter()
        frames += chunk.motion.shape[1]
    wall, cpu = time.perf_counter() - began, cpu_s() - began_cpu
    end = process_memory_mb()
    t = stream.meta["timings"]
    return {"minutes": minutes, "frames": frames, "source": source,
            "first_progress_s": round(first_progress[0] - began, 3), "first_window_s": round(first_window - began, 3),
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "rtf": round(wall / (minutes * 60), 4),
            "rtf_cpu": round(cpu / (minutes * 60), 4), "speech_chunks": stream.meta.get("speech_chunks"),
            "split": {k: round(v, 2) for k, v in t.items()},
            "rss_loaded_mb": loaded["rss_mb"], "rss_with_audio_mb": with_audio["rss_mb"],
            "peak_rss_mb": end["peak_rss_mb"], "audio_mb": round(audio.nbytes / 2**20, 1)}


def worker_start(tree: Path, data_dir: Path, audio: Path) -> dict:
    """Spawn `python -m model serve` from ``tree`` until ready, /health, first 10 s job done."""
    sys.path.insert(0, str(ROOT))
    from model.link.client import WorkerClient
    from model.link.session import read_session
    from model.core.contract import GenerationRequest

    session = data_dir / f"bench-{tree.name}.json"
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONUNBUFFERED="1", CAPTALK_DATA_DIR=str(data_dir))
    began = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "model", "serve", "--checkpoint", str(ROOT / "checkpoints" /
                                "default"), "--device", "cpu", "--threads", "1", "--session-file", str(session)],
                               cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        ready = time.perf_counter() - began
        if not line:
            raise SystemExit(f"worker from {tree} did not start: {process.stderr.read()[-2000:]}")
        client = WorkerClient(read_session(session))
        client.health()
        health = time.perf_counter() - began
        client.generate(GenerationRequest(audio_path=str(audio)))
        first_job = time.perf_counter() - began
        cpu = _process_cpu_s(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {"tree": str(tree), "ready_s": round(ready, 2), "health_s": round(health, 2),
            "first_job_done_s": round(first_job, 2), "worker_cpu_s": round(cpu, 2)}


def _process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def in_child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(startup: dict, workers: list[dict], longs: list[dict], load: tuple, command: str) -> str:
    lines = ["# Start-up and streaming", "",
             f"Command: `{command}` ({datetime.date.today().isoformat()}); load average (1 min) at start / end "
             f"{load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} cores (other processes ran too: wall times are "
             "slower than on an idle machine, user CPU times much less so).", "",
             "## Where a start goes (fresh process, 1 thread)", "",
             "| step | wall s | user CPU s |", "|---|---:|---:|"]
    for name, step in startup.items():
        lines.append(f"| {name} | {step['wall_s']:.2f} | {step['cpu_s']:.2f} |")
    lines += ["", "## Worker start (`python -m model serve`, spawn until ...)", "",
              "| code | ready line s | /health answered s | first 10 s job done s | worker CPU s (to then) |",
              "|---|---:|---:|---:|---:|"]
    for row in workers:
        lines.append(f"| {row['label']} | {row['ready_s']:.2f} | {row['health_s']:.2f} | {row['first_job_done_s']:.2f} "
                     f"| {row['worker_cpu_s']:.2f} |")
    lines += ["", "## Long audio (in process, `iter_windows`, 1 thread)", "",
              "| speech | first progress s | first window s | wall s | RTF | user CPU s | RTF (CPU) | speech encoder s "
              "| AR s | decoder s | encoder chunks | RSS loaded MB | + audio MB | peak RSS while generating MB |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in longs:
        s = row["split"]
        lines.append(f"| {row['minutes']:g} min | {row['first_progress_s']:.3f} | {row['first_window_s']:.2f} "
                     f"| {row['wall_s']:.1f} | {row['rtf']:.4f} | {row['cpu_s']:.1f} | {row['rtf_cpu']:.4f} "
                     f"| {s['speech_encoder_s']:.2f} | {s['ar_s']:.2f} | {s['decoder_s']:.2f} | {row['speech_chunks']} "
                     f"| {row['rss_loaded_mb']:.0f} | {row['rss_with_audio_mb'] - row['rss_loaded_mb']:.0f} "
                     f"| {row['peak_rss_mb']:.0f} |")
    if longs:
        lines += ["", f"Speech: {longs[0]['source']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-startup":
        print(json.dumps(child_startup()))
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--child-long":
        print(json.dumps(child_long(float(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="1,10,30", help="long-audio lengths, comma-separated ('' for none)")
    parser.add_argument("--old-tree", type=Path, help="an older checkout whose worker start to measure as well")
    parser.add_argument("--out", type=Path, default=HERE / "streaming.md")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    startup = in_child("--child-startup")
    workers = []
    with tempfile.TemporaryDirectory(prefix="captalk-bench-") as tmp:
        sys.path.insert(0, str(HERE))
        sys.path.insert(0, str(ROOT))
        import soundfile
        from speech_source import speech

        audio = Path(tmp) / "speech_10s.wav"
        soundfile.write(audio, speech(10.0)[0], 16000, subtype="PCM_16")
        for label, tree in (("before (--old-tree)", args.old_tree), ("this tree", ROOT)):
            if tree is not None:
                workers.append({"label": label, **worker_start(tree.resolve(), Path(tmp), audio)})
    longs = [in_child("--child-long", m) for m in args.minutes.split(",") if m.strip()]
    env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    flags = f" --minutes {args.minutes}" + (" --old-tree DIR" if args.old_tree else "")
    text = report(startup, workers, longs, (load_before, os.getloadavg()[0]),
                  f"{env}.venv/bin/python benchmarks/streaming.py{flags}")
    args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"startup": startup, "workers": workers, "long": longs}))
    print(text)


if __name__ == "__main__":
    main()
