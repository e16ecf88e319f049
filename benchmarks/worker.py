"""Benchmark: the local back-end worker (`python -m model serve`) on the bundled model.

    .venv/bin/python benchmarks/worker.py [--repeat 5] [--starts 3] [--threads 1,2] [--out benchmarks/worker.md]

Starts real worker processes the way the add-on does (`model.link.launch.ensure_worker`,
on `checkpoints/default`), in a private CAPTALK_DATA_DIR with XDG_RUNTIME_DIR unset, so a
worker the user already runs is never touched. For each device (CPU; CUDA too when the
worker's interpreter sees a GPU) and each --threads value (the worker's `--threads`:
torch's CPU threads, which CTranslate2's Whisper follows) it measures:

- start: `ensure_worker` until the worker is ready (interpreter, imports and model load
  included), --starts times (the last worker then serves the requests);
- latency: submit -> motion received and decoded on the client, for 10 s and 60 s of real
  speech (LibriVox test recordings and the repository's sample, concatenated), with the
  time to the first "window" progress event (speech encoded, first window generated) and
  the worker's own generation time and its speech-encoder share from the result's meta
  (the rest is HTTP, request checks, audio decoding, polling), and how many cores the
  worker kept busy (its CPU time / latency). A worker's very first
  request is reported on its own; then 1 warm-up + --repeat timed runs per length;
- memory: the worker's /health `memory` after start, after the first request and after
  the 60 s requests (resident set, its peak, CUDA peak on a GPU).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.core.audio import SAMPLE_RATE  # noqa: E402
from model.machine import cpu_name  # noqa: E402
from model.serve.jobs import FINISHED  # noqa: E402
from model.link.launch import WorkerSpec, ensure_worker  # noqa: E402
from model.link.protocol import GenerationRequest  # noqa: E402

LENGTHS = (10.0, 60.0)
STYLE, EMOTION = "a calm teacher explaining something", "happy"


def speech_files(folder: Path) -> tuple[dict[float, Path], str]:
    """16 kHz 16-bit WAVs of each length in LENGTHS, and where their speech comes from."""
    from speech_source import speech

    files, source = {}, ""
    for seconds in LENGTHS:
        audio, source = speech(seconds)
        files[seconds] = folder / f"speech_{seconds:.0f}s.wav"
        soundfile.write(files[seconds], audio, SAMPLE_RATE, subtype="PCM_16")
    return files, source


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (Linux /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc; all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_sees_cuda(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True,
                           text=True, cwd=ROOT)
    return probe.stdout.strip() == "True"


def wait_for_exit(pid: int, timeout: float = 30.0) -> None:
    """Wait for a worker this process started (and reap it: `ensure_worker` forgets its Popen)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:  # not our child (or already reaped): wait for it to vanish
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.05)
    raise RuntimeError(f"the worker (pid {pid}) did not exit within {timeout:.0f} s")


def stop_worker(client) -> None:
    pid = client.session.pid
    client.shutdown()
    wait_for_exit(pid)


def timed_request(client, audio: Path, seed: int) -> dict:
    """One generation, timed on the client: submit -> result decoded."""
    request = GenerationRequest(audio_path=str(audio), style=STYLE, emotion=EMOTION, options={"seed": seed},
                                client="benchmarks/worker.py")
    cpu_before = process_cpu_seconds(client.session.pid)
    start = time.perf_counter()
    job, ahead = client.submit(request)
    if ahead:
        raise RuntimeError(f"{ahead} job(s) ahead of the benchmark's: someone else uses this worker")
    after, first_window = 0, None
    while True:
        events, state = client.events(job, after)
        for event in events:
            after = event["seq"]
            if first_window is None and event["message"].startswith("window"):
                first_window = time.perf_counter() - start
        if state in FINISHED:
            break
    clips = client.result(job)
    latency = time.perf_counter() - start
    cores = (process_cpu_seconds(client.session.pid) - cpu_before) / latency
    timings = clips[0].meta["timings"]
    return {"latency": latency, "first_window": first_window, "worker_s": timings["total_s"],
            "speech_s": timings["speech_encoder_s"], "cores": cores, "frames": clips[0].num_frames}


def run_config(python: str, device: str, threads: int, starts: int, repeat: int, files: dict[float, Path]) -> dict:
    spec = WorkerSpec(python=python, device=device, threads=threads)
    start_times = []
    for index in range(starts):
        begin = time.perf_counter()
        client = ensure_worker(spec)
        start_times.append(time.perf_counter() - begin)
        if index < starts - 1:
            stop_worker(client)
    try:
        health = client.health()
        if health["device"].split(":")[0] != device:
            raise RuntimeError(f"asked for a {device} worker, got {health['device']}")
        memory = {"ready": health["memory"]}
        seed = 0
        first = timed_request(client, files[LENGTHS[0]], seed)
        memory["first"] = client.health()["memory"]
        runs = {}
        for seconds in LENGTHS:
            seed += 1
            timed_request(client, files[seconds], seed)  # warm-up
            runs[seconds] = []
            for _ in range(repeat):
                seed += 1
                runs[seconds].append(timed_request(client, files[seconds], seed))
            latencies = ", ".join(f"{run['latency']:.2f}" for run in runs[seconds])
            print(f"  {device}, {threads} thread(s), {seconds:.0f} s: {latencies} s", flush=True)
        memory["end"] = client.health()["memory"]
    finally:
        stop_worker(client)
    return {"device": device, "threads": threads, "starts": start_times, "first": first, "runs": runs,
            "memory": memory}


def spread(values: list[float], digits: int = 2) -> str:
    """median (min-max)"""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5, help="timed requests per length (after 1 warm-up)")
    parser.add_argument("--starts", type=int, default=3, help="worker starts timed per configuration")
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}",
                        help="comma-separated worker --threads values (CPU); default 1 and all cores")
    parser.add_argument("--python", default=sys.executable, help="the worker's interpreter")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "worker.md"))
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]

    import torch

    load_before = os.getloadavg()[0]
    busy_before, ours_before = busy_cpu_seconds(), sum(os.times()[:4])
    began = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="captalk-worker-bench-") as tmp:
        # a private run folder: never the user's own worker or session file
        os.environ["CAPTALK_DATA_DIR"] = str(Path(tmp) / "data")
        os.environ.pop("XDG_RUNTIME_DIR", None)
        files, source = speech_files(Path(tmp))
        configs = [("cpu", t) for t in thread_counts]
        has_cuda = worker_sees_cuda(args.python)
        if has_cuda:
            configs.append(("cuda", max(thread_counts)))
        for device, threads in configs:
            print(f"{device}, {threads} thread(s) ...", flush=True)
            results.append(run_config(args.python, device, threads, args.starts, args.repeat, files))
    load_after = os.getloadavg()[0]
    wall = time.perf_counter() - began
    # CPU time of everything else: the machine's busy time less this process and its workers (reaped)
    others = max(0.0, busy_cpu_seconds() - busy_before - (sum(os.times()[:4]) - ours_before)) / wall

    gpu = torch.cuda.get_device_name(0) if has_cuda else "no GPU"
    command = "`.venv/bin/python benchmarks/worker.py" + (f" --repeat {args.repeat}" if args.repeat != 5 else "") + \
        (f" --starts {args.starts}" if args.starts != 3 else "") + f" --threads {args.threads}`"
    lines = [
        "# Worker benchmark",
        "",
        f"Command: {command} ({datetime.date.today().isoformat()}, {wall / 60:.1f} min)",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__}. Load average (1 min) before / after the run: {load_before:.1f} / "
        f"{load_after:.1f}; other processes kept {others:.2f} of the {os.cpu_count()} cores busy on average "
        "during the run" + (" (they shared these cores: the min is the better estimate of an idle machine)."
                            if others > 0.2 else "."),
        "",
        "Real worker processes on `checkpoints/default`, started as the add-on starts them "
        "(`model.link.launch.ensure_worker`) in a private run folder; requests as the add-on sends them "
        f"(`audio_path`, style and emotion captions, one take, default options). Speech: {source}.",
        "*threads*: the worker's `--threads` (torch, and CTranslate2 Whisper follows it).",
        "",
        "## Start and memory",
        "",
        f"*start*: `ensure_worker` until the worker is ready (interpreter, imports, model load; polled every "
        f"0.1 s), median (min-max) of {args.starts} starts. *first request*: latency of the worker's first job "
        "(10 s of speech; `Generator.load` already warmed the encoders up during the start). Memory from the "
        "worker's `/health`: resident set (RSS) when ready, after the first request, and after the "
        "60 s requests with the process's peak RSS.",
        "",
        "| device | threads | start s | first request s | RSS ready MB | RSS after first MB | RSS after 60 s MB "
        "| peak RSS MB | CUDA peak MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        mem = r["memory"]
        lines.append(f"| {r['device']} | {r['threads']} | {spread(r['starts'])} | {r['first']['latency']:.2f} "
                     f"| {mem['ready'].get('rss_mb', '?')} | {mem['first'].get('rss_mb', '?')} "
                     f"| {mem['end'].get('rss_mb', '?')} | {mem['end'].get('peak_rss_mb', '?')} "
                     f"| {mem['end'].get('cuda_peak_mb', '-')} |")
    lines += [
        "",
        "## Request latency",
        "",
        f"After the first request and 1 warm-up per length, {args.repeat} timed requests: median (min-max). "
        "*latency*: submit -> motion received and decoded on the client. *RTF*: latency / audio "
        "length (below 1: faster than real time). *first window*: submit -> the first `window 1 of N` "
        "progress event (speech encoded, captions encoded, first 4 s window generated). *in worker*: "
        "the generation's own time (result meta `timings.total_s`); the difference to latency is "
        "HTTP, request checks, audio decoding, the motion's base64 round trip and polling. *speech "
        "encoder*: the part of it spent encoding the whole clip's speech (Whisper, padded to 30 s "
        "chunks) before the first window starts. *worker cores*: the worker's CPU time / latency (how many "
        "cores it kept busy).",
        "",
        "| device | threads | audio s | latency s | RTF | first window s | in worker s | speech encoder s "
        "| worker cores |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for seconds, runs in r["runs"].items():
            latency = [x["latency"] for x in runs]
            lines.append(f"| {r['device']} | {r['threads']} | {seconds:.0f} | {spread(latency)} "
                         f"| {spread([x / seconds for x in latency], 3)} "
                         f"| {spread([x['first_window'] for x in runs])} "
                         f"| {spread([x['worker_s'] for x in runs])} "
                         f"| {spread([x['speech_s'] for x in runs])} "
                         f"| {statistics.median(x['cores'] for x in runs):.2f} |")
    for r in results:
        used = statistics.median(x["cores"] for runs in r["runs"].values() for x in runs)
        if r["device"] == "cpu" and r["threads"] > 1 and used < 0.75 * r["threads"]:
            lines += ["", f"With {r['threads']} threads the worker kept only {used:.2f} cores busy (median over "
                      "its requests): other processes held the rest of the CPU, or the work does not spread over "
                      "more threads, so this run does not show what more threads buy."]
    if not has_cuda:
        lines += ["", "No CUDA rows: torch in the worker's interpreter sees no GPU here (they are added "
                  "when it does)."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
