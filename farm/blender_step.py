"""The Blender step of one line on a farm node: the batch script as a subprocess, given the
line's motion (``--motion``), so Blender does no generation.

Blender runs in its own process (as `blender -b --python` or PyPI bpy's Python), bound to
the task's worker: if the node's worker is killed, Blender dies with it (Linux
PR_SET_PDEATHSIG) and the retry elsewhere clears what it left (`StagedOutputs`).
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from model.core.batch_jobs import Job, read_manifest
from model.core.errors import EXIT_CANCELLED

REPO_ROOT = Path(__file__).resolve().parents[1]
BATCH_SCRIPT = REPO_ROOT / "scripts" / "captalk_batch.py"


@dataclass(frozen=True)
class BlenderSettings:
    """How the Blender step runs: the program, the starting scene, the outputs."""

    program: str  # a Python with bpy, or a `blender` executable
    out: str
    blend: str = ""  # starting scene ("" : an empty one)
    render: bool = True
    engine: str = "workbench"
    resolution: int = 480
    samples: int = 16
    overwrite: bool = False

    def is_blender_executable(self) -> bool:
        return Path(self.program).name.startswith("blender")


def batch_command(settings: BlenderSettings, jobs_file: Path, manifest: Path) -> list[str]:
    """The batch script's command line for a one-job list (its job holds the motion)."""
    options = ["--jobs", str(jobs_file), "--out", settings.out, "--manifest", str(manifest), "--skip-existing",
               "--engine", settings.engine, "--resolution", str(settings.resolution), "--samples",
               str(settings.samples), "--render" if settings.render else "--no-render"]
    if settings.overwrite:
        options.append("--overwrite")
    if settings.blend:
        options += ["--blend", settings.blend]
    if settings.is_blender_executable():
        return [settings.program, "-b", "--factory-startup", "--python", str(BATCH_SCRIPT), "--", *options]
    return [settings.program, str(BATCH_SCRIPT), *options]


def check_program(program: str, timeout: float = 120) -> str:
    """'' if ``program`` can run Blender's Python (bpy imports), else why not."""
    if not program:
        return "no Blender given"
    if Path(program).name.startswith("blender"):
        command = [program, "-b", "--factory-startup", "--python-expr", "import sys; sys.exit(0)"]
    else:
        command = [program, "-c", "import bpy"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{program} cannot be run ({exc})"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        return f"{program} cannot import bpy ({last})"
    return ""


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the Ray worker that started it dies (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run_blender_step(job: Job, motion: bytes, settings: BlenderSettings) -> dict:
    """Key and write one line (and render it): -> {"status", "exit", "error", "timings",
    "outputs", "node"}. A failure is returned, not raised, so Ray retries only lost nodes."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="captalk-farm-") as folder:
        folder = Path(folder)
        motion_file = folder / "motion.npz"
        motion_file.write_bytes(motion)
        entry = {key: value for key, value in asdict(job).items()}
        entry.update(audio=str(job.audio), schedule=list(job.schedule), motion=str(motion_file))
        jobs_file = folder / "job.json"
        jobs_file.write_text(json.dumps([entry]), encoding="utf-8")
        manifest = folder / "manifest.jsonl"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        process = subprocess.run(batch_command(settings, jobs_file, manifest), capture_output=True, text=True,
                                 env=env, preexec_fn=_die_with_parent, cwd=str(REPO_ROOT))
        entries = read_manifest(manifest)
    report = entries[-1] if entries else {}
    error = ""
    if process.returncode != 0:
        lines = [line for line in process.stderr.splitlines() if line.startswith("CapTalk:")]
        error = lines[-1][len("CapTalk: "):] if lines else (process.stderr.strip().splitlines() or ["?"])[-1]
    status = report.get("status") or ("cancelled" if process.returncode == EXIT_CANCELLED else "failed")
    if process.returncode != 0 and status == "skipped":
        status = "failed"
    return {"status": status, "exit": process.returncode, "error": error or report.get("error"),
            "timings": dict(report.get("timings", {}), blender_s=round(time.perf_counter() - started, 3)),
            "outputs": report.get("outputs", {}), "node": os.uname().nodename, "pid": os.getpid()}


if __name__ == "__main__":
    sys.exit("farm.blender_step is used by the farm driver: ./captalk.sh farm JOBS.json --out DIR")
