"""``./captalk.sh farm JOBS.json --out DIR``: a job list on Ray.

    python -m farm JOBS.json --out DIR [--address auto|HOST:PORT] [--workers N] [--no-render]

With no --address a Ray instance starts on this machine (127.0.0.1) for the run; with one
(``auto``: the cluster `ray start` made here; ``HOST:PORT``: a head node) it joins that
cluster. Every line goes through two steps: generation on a `farm.generation.LineGenerator`
actor (--workers of them; each loads the model once, on a GPU when the cluster has one per
worker), then the Blender step (`farm.blender_step`) as a Ray task that runs the batch
script with the line's motion. Lines whose outputs are all in --out, made from the same
inputs, are skipped (the batch's --skip-existing); outputs of other inputs are refused
unless --overwrite. Results are appended to OUT/manifest.jsonl as lines finish.

Everything the run needs is checked before Ray starts: the job list, the audio files, the
checkpoint, the Blender program (--blender; default $CAPTALK_BLENDER, else this Python,
which has PyPI bpy) and --out. A line that fails (bad audio) is reported and the others go
on; a node that dies has its lines re-run elsewhere (Ray restarts the actor and retries
the task; a line's files are renamed into place once, whole).

Exit status as the batch's: 0 all done or skipped, 2 bad input (a line, or the list), 3 a
missing part (checkpoint, Blender), 1 anything else.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from model.core import batch_jobs
from model.core.batch_jobs import Job, ManifestEntry
from model.core.errors import EXIT_FAILED, BadInput, CapTalkError, MissingPart, exit_status
from model.core.paths import default_checkpoint_dir

from .blender_step import REPO_ROOT, BlenderSettings, check_program, run_blender_step

DEFAULT_STYLE = "a calm teacher, subtle head movements"  # the batch script's defaults
DEFAULT_EMOTION = "neutral"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="captalk farm", description=__doc__.split("\n")[0])
    parser.add_argument("jobs", help="job list (JSON, the batch's format: model/core/batch_jobs.py)")
    parser.add_argument("--out", required=True, help="output folder, reachable from every node at the same path")
    parser.add_argument("--address", help="Ray cluster to join: 'auto' or HOST:PORT (default: start one here)")
    parser.add_argument("--workers", type=int, default=1, help="generation actors (each holds one model)")
    parser.add_argument("--render", action=argparse.BooleanOptionalAction, default=True, help="render the MP4s")
    parser.add_argument("--checkpoint", help="motion model checkpoint folder (default: <repo>/checkpoints/default)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--blender", default=os.environ.get("CAPTALK_BLENDER", sys.executable),
                        help="Blender for the Blender steps: a `blender` executable or a Python with bpy")
    parser.add_argument("--blend", help="scene every line starts from (default: an empty one)")
    parser.add_argument("--style", default=DEFAULT_STYLE)
    parser.add_argument("--emotion", default=DEFAULT_EMOTION)
    parser.add_argument("--engine", choices=("workbench", "eevee", "cycles"), default="workbench")
    parser.add_argument("--resolution", type=int, default=480)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--overwrite", action="store_true", help="replace outputs made from other inputs")
    parser.add_argument("--cpus", type=int, help="CPUs of the Ray instance started here (default: all)")
    return parser.parse_args(argv)


@dataclass
class Progress:
    """Counts for the whole list, printed as lines finish."""

    total: int
    skipped: int = 0
    done: int = 0
    failed: list = field(default_factory=list)  # (job name, message, exit status)
    times: list = field(default_factory=list)  # seconds per finished line
    started: float = field(default_factory=time.perf_counter)

    def line(self, running: int) -> str:
        left = self.total - self.skipped - self.done - len(self.failed)
        rate = (time.perf_counter() - self.started) / max(1, self.done + len(self.failed))
        eta = f"{rate * left:.0f} s" if self.done + len(self.failed) else "?"
        last = f"{self.times[-1]:.1f} s/line" if self.times else "-"
        return (f"done {self.done}, failed {len(self.failed)}, running {running}, skipped {self.skipped}, "
                f"left {left} of {self.total}; last {last}; time left about {eta}")


def load_jobs(args) -> list[Job]:
    defaults = Job("default", Path(), args.style, args.emotion)
    jobs = batch_jobs.read_job_list(Path(args.jobs).resolve(), defaults)
    for number, job in enumerate(jobs, start=1):
        where = f"job {number} ({job.name})"
        if not job.audio.is_file():
            raise BadInput(f"{where}: audio file not found: {job.audio}")
        if job.rig not in ("", "open") and not Path(job.rig).is_file():
            raise BadInput(f"{where}: FLAME file not found: {job.rig}")
        if job.motion:
            raise BadInput(f"{where}: \"motion\" is for the batch script; the farm generates every line")
    return jobs


def plan(args, jobs: list[Job], out: Path, checkpoint: Path):
    """(to run, skipped) as the batch plans them (`batch_jobs.plan_run`)."""
    settings = batch_jobs.output_settings(args.render, args.engine, args.resolution, args.samples)
    scene = batch_jobs.file_sha256(args.blend) if args.blend else "empty"
    model = "checkpoint:" + batch_jobs.folder_digest(checkpoint)
    planned = [(job, batch_jobs.outputs_of(out, job.name, args.render), batch_jobs.job_record(job, model, scene,
                                                                                                settings))
               for job in jobs]
    inputs = [Path(args.jobs).resolve()] + ([Path(args.blend)] if args.blend else [])
    inputs += [Path(p) for job in jobs for p in (job.audio, job.rig) if p not in ("", "open")]
    batch_jobs.check_not_inputs([(job.name, p) for job, outputs, _ in planned for p in outputs.files()], inputs)
    return batch_jobs.plan_run(planned, out, args.overwrite, skip_existing=True)


def check_before_start(args) -> tuple[list[Job], Path, Path]:
    """Everything that can fail before Ray starts: raises `BadInput` / `MissingPart`."""
    if args.workers < 1:
        raise BadInput(f"--workers must be at least 1, got {args.workers}")
    if args.blend and (Path(args.blend).suffix.lower() != ".blend" or not Path(args.blend).is_file()):
        raise BadInput(f"--blend {args.blend}: not a .blend file")
    jobs = load_jobs(args)
    checkpoint = Path(args.checkpoint).resolve() if args.checkpoint else default_checkpoint_dir()
    if not (checkpoint / "captalk.json").is_file():
        raise MissingPart(f"no motion model at {checkpoint}. Pass --checkpoint DIR. Nothing was started.")
    problem = check_program(args.blender)
    if problem:
        raise MissingPart(f"the Blender steps cannot run: {problem}. Pass --blender (a `blender` executable or a "
                          "Python with bpy). Nothing was started.")
    out = Path(args.out).resolve()
    batch_jobs.check_writable_folder(out)
    return jobs, checkpoint, out


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(address: str | None) -> bool:
    host = (address or "").rsplit(":", 1)[0].strip("[]")
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def start_ray(args):
    if not args.address or is_loopback(args.address):
        # Ray turns 127.0.0.1 into this machine's outward address (to be reachable from other
        # nodes) unless told it is not part of a multi-machine cluster: a cluster here stays
        # on loopback. Read when ray is imported.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    env = {"PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).strip(os.pathsep)}
    options = dict(runtime_env={"env_vars": env}, include_dashboard=False, log_to_driver=False,
                   logging_level="WARNING")
    if args.address:
        loopback = {"_node_ip_address": "127.0.0.1"} if is_loopback(args.address) else {}
        ray.init(address=args.address, **loopback, **options)
    else:  # on this machine only: loopback addresses
        ray.init(_node_ip_address="127.0.0.1", num_cpus=args.cpus, **options)
    return ray


def cause_of(error) -> BaseException:
    """The exception a Ray task raised (RayTaskError wraps it)."""
    return getattr(error, "cause", None) or error


def run(args) -> int:
    jobs, checkpoint, out = check_before_start(args)
    to_run, skipped = plan(args, jobs, out, checkpoint)
    manifest = out / batch_jobs.MANIFEST_NAME
    progress = Progress(total=len(jobs), skipped=len(skipped))
    for job, outputs, record in skipped:
        batch_jobs.append_manifest(manifest, ManifestEntry(job.name, "skipped", outputs.relative(out),
                                                           inputs_digest=record["digest"]))
    print(f"farm: {len(jobs)} line(s): {len(skipped)} already done, {len(to_run)} to run", flush=True)
    if to_run:
        out.mkdir(parents=True, exist_ok=True)
        ray = start_ray(args)
        try:
            run_lines(ray, args, to_run, checkpoint, out, manifest, progress)
        finally:
            ray.shutdown()
    failed = progress.failed
    print(f"farm: finished: {progress.done} done, {progress.skipped} skipped, {len(failed)} failed"
          + "".join(f"\n  failed: {name}: {message}" for name, message, _ in failed) + f"\nfarm: manifest {manifest}",
          flush=True)
    return failed[0][2] if failed else 0


def run_lines(ray, args, to_run, checkpoint: Path, out: Path, manifest: Path, progress: Progress) -> None:
    from .generation import LineGenerator

    gpus = 1 if args.device != "cpu" and ray.cluster_resources().get("GPU", 0) >= args.workers else 0
    device = args.device if args.device != "auto" or gpus else "cpu"
    actor = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=-1, max_task_retries=-1)(LineGenerator)
    workers = [actor.remote(str(checkpoint), device) for _ in range(args.workers)]
    step = ray.remote(num_cpus=1, max_retries=-1)(run_blender_step)
    settings = BlenderSettings(program=args.blender, out=str(out), blend=str(Path(args.blend).resolve())
                               if args.blend else "", render=args.render, engine=args.engine,
                               resolution=args.resolution, samples=args.samples, overwrite=args.overwrite)
    waiting = list(to_run)
    generating, writing = {}, {}  # ref -> (job, outputs, record, started, worker index)
    free = list(range(len(workers)))
    while waiting or generating or writing:
        while waiting and free:  # one line per worker at a time: a slow line never holds others back
            job, outputs, record = waiting.pop(0)
            index = free.pop(0)
            generating[workers[index].generate.remote(job)] = (job, outputs, record, time.perf_counter(), index)
        ready, _ = ray.wait(list(generating) + list(writing), num_returns=1, timeout=5.0)
        for ref in ready:
            if ref in generating:
                job, outputs, record, started, index = generating.pop(ref)
                free.append(index)
                try:
                    ray.get(ref)
                except Exception as error:  # the line's own problem (bad audio): report it, go on
                    finish(progress, manifest, job, record, started, "failed", error=cause_of(error))
                    continue
                generated = time.perf_counter() - started
                writing[step.remote(job, ref, settings)] = (job, outputs, record, started, generated)
            else:
                job, outputs, record, started, generated = writing.pop(ref)
                try:
                    report = ray.get(ref)
                except Exception as error:
                    finish(progress, manifest, job, record, started, "failed", error=cause_of(error))
                    continue
                status = "done" if report["status"] in ("done", "skipped") else "failed"
                error = None if status == "done" else BatchStepError(report["error"] or "the Blender step failed",
                                                                      report["exit"])
                timings = dict(report["timings"], generate_s=round(generated, 3))
                finish(progress, manifest, job, record, started, status, error=error, timings=timings,
                       outputs=outputs.relative(out) if status == "done" else {})
        if ready:
            print(f"farm: {progress.line(len(generating) + len(writing))}", flush=True)


class BatchStepError(CapTalkError):
    """The Blender step's batch exited with ``exit_code`` (its message is the batch's)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code if exit_code in (1, 2, 3, 130) else EXIT_FAILED


def finish(progress: Progress, manifest: Path, job: Job, record: dict, started: float, status: str,
           error: BaseException | None = None, timings: dict | None = None, outputs: dict | None = None) -> None:
    seconds = time.perf_counter() - started
    timings = dict(timings or {}, total_s=round(seconds, 3))
    if status == "done":
        progress.done += 1
        progress.times.append(seconds)
        print(f"farm: done {job.name} in {seconds:.1f} s", flush=True)
    else:
        message = str(error) if isinstance(error, CapTalkError) else f"{type(error).__name__}: {error}"
        progress.failed.append((job.name, message, exit_status(error) if error else EXIT_FAILED))
        print(f"farm: FAILED {job.name}: {message}", flush=True)
    batch_jobs.append_manifest(manifest, ManifestEntry(job.name, status, outputs or {}, timings,
                                                       None if status == "done" else progress.failed[-1][1],
                                                       record["digest"]))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except CapTalkError as error:
        print(f"farm: {error}", file=sys.stderr)
        return exit_status(error)
    except KeyboardInterrupt:
        print("farm: stopped. Finished lines are kept; run the same command again to do the rest.", file=sys.stderr)
        return 130
