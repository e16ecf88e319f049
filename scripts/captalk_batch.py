"""Headless CapTalk: animate speech on a head, save the .blend, render an MP4 with the audio.

Runs the same both ways:
    blender -b [scene.blend] --python scripts/captalk_batch.py -- [options]
    python scripts/captalk_batch.py [--blend scene.blend] [options]          (PyPI bpy)

Three kinds of run:
- one job (default): --audio, --style, --emotion, optional caption sections (--schedule,
  placed as timeline markers), --rig (the scene's CapTalk rig, the open head, or your
  FLAME file), or --motion FILE.npz (motion made earlier: no generation); writes
  OUT/NAME.blend, OUT/NAME_motion.npz (raw 25 fps) and OUT/NAME.mp4;
- --all-strips: every sound strip of the opened .blend, with the scene's CapTalk captions,
  sections and each strip's rig, as the panel's Generate would; writes OUT/NAME.blend,
  OUT/NAME_motion_<strip>.npz per strip (+ .mp4);
- --jobs FILE.json: a list of jobs (format: `model/core/batch_jobs.py`), each from the same
  starting scene, each written as OUT/<job name>.* ; every job is checked before the first
  one runs:

      {"jobs": [{"name": "line01", "audio": "line01.wav", "style": "a calm teacher",
                 "emotion": "neutral", "schedule": [{"start": 2.5, "emotion": "happy"}],
                 "rig": "open", "start_frame": 1, "seed": 0}, ...]}

  (relative paths are relative to the JSON file; keys left out take the command line's
  values). --shard I/N runs the I-th of N parts (split by a hash of the job names, so N
  machines can share one list).

Files. Nothing the run reads (the starting scene, audio, rig or motion files) is ever
written. Each output is written under a hidden temporary name in OUT and a job's files are
renamed onto their real names together when all are whole. Outputs of an earlier run are
never replaced silently: the run stops before the first job unless --overwrite (replace
them) or --skip-existing (keep a job whose files are all there and were made from the same
inputs: audio, captions, schedule, rig, model, seed, scene, render settings; the record is
in the motion file) is given. OUT/manifest.jsonl (or --manifest) gets one JSON line per
job as it finishes (job, status, outputs, timings, error). SIGINT / SIGTERM stop within a
window or a frame, leave only whole files, and say how to resume (--skip-existing).

The motion comes from the back-end worker in its own process (torch never loads here), or
with --in-process from the model in this process. Results are CapTalk's own actions on NLA
strips (`captalk_addon.animation`): an artist's actions are never changed, and running again
replaces only CapTalk's earlier result for that strip. The render (Workbench, EEVEE or
Cycles) covers the animated strips' frames with the sequencer's sound.

Exit status (`model.core.errors`): 0 done; 1 the back end failed unexpectedly; 2 bad input
(checked before the first job: nothing is written; a job that fails later on its input is
reported, the others go on, and the run exits 2); 3 a required part (the motion model,
audio support in this Blender build, the back end's Python) is missing (nothing is
written); 130 stopped by SIGINT / SIGTERM (finished jobs are kept).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import bpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from source_addon import REPO_ROOT, register_from_source, script_args  # noqa: E402

DEFAULT_AUDIO = REPO_ROOT / "samples" / "speech_sample.wav"
ENGINES = ("workbench", "eevee", "cycles")
CANCEL_WAIT_S = 10.0  # an interrupted batch waits this long for the worker to hear the cancel


def errors():
    """`model.core.errors` of the add-on package (imported once the add-on is registered)."""
    from captalk.model.core import errors as module

    return module


def jobs_module():
    from captalk.model.core import batch_jobs

    return batch_jobs


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="captalk_batch", description=__doc__.split("\n")[0])
    parser.add_argument("--blend", help="scene to start from (under `blender -b FILE`, the open file)")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--all-strips", action="store_true", help="animate every sound strip of the scene")
    kind.add_argument("--jobs", help="JSON list of jobs (see above)")
    parser.add_argument("--audio", default=str(DEFAULT_AUDIO), help="speech file to animate")
    parser.add_argument("--out", default="out", help="folder for the .blend, the motion and the preview")
    parser.add_argument("--name", default="captalk_demo", help="base name of the files written")
    parser.add_argument("--style", default="a calm teacher, subtle head movements", help="style caption")
    parser.add_argument("--emotion", default="neutral", help="emotion caption")
    parser.add_argument("--schedule", help="JSON caption schedule (see model/core/schedule.py): captions that change "
                        "at given seconds, placed as caption sections on timeline markers")
    parser.add_argument("--rig", default="", help="'open' (the open head) or a FLAME file (.pkl/.npz); "
                        "default: the scene's CapTalk rig, else the open head")
    parser.add_argument("--motion", help="motion made earlier (a _motion.npz) to key instead of generating "
                              "(one job only; in a job list: the job's \"motion\")")
    parser.add_argument("--checkpoint", help="motion model checkpoint folder (default: <repo>/checkpoints/default)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--in-process", action="store_true", help="run the model in this process (torch loads "
                        "into Blender's Python) instead of the back-end worker")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same motion)")
    parser.add_argument("--start-frame", type=int, default=1, help="where a new sound strip starts")
    parser.add_argument("--render", action=argparse.BooleanOptionalAction, default=True,
                        help="render OUT/NAME.mp4 (default: on)")
    parser.add_argument("--engine", choices=ENGINES, default="workbench", help="render engine")
    parser.add_argument("--resolution", type=int, default=480, help="square preview size in pixels")
    parser.add_argument("--samples", type=int, default=16, help="render samples for EEVEE / Cycles")
    parser.add_argument("--shard", help="I/N: run only the I-th of N parts of the job list (1 <= I <= N)")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier run")
    parser.add_argument("--skip-existing", action="store_true", help="skip jobs whose outputs are all there and "
                        "were made from the same inputs (resume an interrupted run)")
    parser.add_argument("--manifest", help="results manifest to append to (default: OUT/manifest.jsonl)")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- interrupts
class Stopper:
    """SIGINT / SIGTERM -> `Cancelled` at the next Python line (generation polls in Python,
    so it stops within a poll), or, during a render (one long C call), at the next frame:
    there the clean-ups registered with `on_abort` run and the process ends (an exception
    raised in a render handler would only be printed by Blender)."""

    def __init__(self):
        self.signal_name = ""
        self.raising = True
        self.cleanups = []

    def install(self) -> None:
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self._handle)

    def _handle(self, number, frame) -> None:
        first = not self.signal_name
        self.signal_name = signal.Signals(number).name
        if first and self.raising:
            if "captalk" not in sys.modules:  # before the add-on is loaded: nothing to clean up yet
                raise KeyboardInterrupt
            raise errors().Cancelled(f"stopped by {self.signal_name}")

    def check(self) -> None:
        if self.signal_name:
            raise errors().Cancelled(f"stopped by {self.signal_name}")

    def before_frame(self, frame: int) -> None:
        """The render's per-frame hook: end the process cleanly once a signal came."""
        if self.signal_name:
            for cleanup in reversed(self.cleanups):
                cleanup()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(errors().EXIT_CANCELLED)


STOPPER = Stopper()


def resume_hint(args) -> str:
    return ("Finished jobs are kept, no partial file was left. To resume, run the same command with "
            "--skip-existing.")


# ----------------------------------------------------------------------------- checks (scene untouched)
def check_arguments(args) -> None:
    """What can be checked before Blender opens anything: a .blend that is one, an --out
    that can be written, --shard, --motion."""
    BadInput = errors().BadInput
    if args.blend:
        path = Path(args.blend)
        if path.suffix.lower() != ".blend":
            raise BadInput(f"--blend {path}: not a .blend file (the scene to start from). Nothing was written.")
        if not path.is_file():
            raise BadInput(f"scene not found: {path.resolve()}")
    if args.shard:
        if not args.jobs:
            raise BadInput("--shard splits a job list: use it with --jobs")
        jobs_module().parse_shard(args.shard)
    if args.motion and (args.jobs or args.all_strips):
        raise BadInput("--motion is for one job; in a job list give each job its own \"motion\"")
    if args.skip_existing and args.all_strips:
        raise BadInput("--skip-existing is for job runs (one job or --jobs), not --all-strips")
    for option in ("resolution", "samples"):
        if getattr(args, option) < 1:
            raise BadInput(f"--{option} must be at least 1, got {getattr(args, option)}")
    jobs_module().check_writable_folder(Path(args.out).resolve())


def checkpoint_of(args) -> Path:
    from captalk.model.core.paths import default_checkpoint_dir

    checkpoint = Path(args.checkpoint).resolve() if args.checkpoint else default_checkpoint_dir()
    if not (checkpoint / "captalk.json").is_file():
        raise errors().MissingPart(f"no motion model at {checkpoint}. Pass --checkpoint DIR (README, 'Training'). "
                                   "Nothing was animated or written.")
    return checkpoint


def check_audio_file(audio: Path, where: str = "") -> None:
    from captalk.captalk_addon.sequencer import AudioError, NoAudioSupport, check_audio

    prefix = f"{where}: " if where else ""
    if not audio.is_file():
        raise errors().BadInput(f"{prefix}audio file not found: {audio}")
    try:
        check_audio(str(audio))
    except (AudioError, NoAudioSupport) as exc:
        kind = errors().MissingPart if isinstance(exc, NoAudioSupport) else errors().BadInput
        raise kind(f"{prefix}{exc}") from None


def load_schedule_entries(source, where: str) -> tuple:
    """A schedule (a JSON file's path, or its list) -> its entries as written, once
    `model.core.schedule` has accepted them."""
    from captalk.model.core.schedule import ScheduleError, parse_schedule

    entries = source
    try:
        if isinstance(source, (str, Path)):
            data = json.loads(Path(source).read_text(encoding="utf-8"))
            entries = data.get("segments") if isinstance(data, dict) else data
        if not isinstance(entries, (list, tuple)):
            raise ScheduleError("expected a list of {start, style, emotion} entries (or {\"segments\": [...]})")
        parse_schedule(list(entries))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, ScheduleError):
            raise ScheduleError(f"{where}: {exc}") from None
        raise errors().BadInput(f"{where}: cannot read the schedule {source} ({exc})") from None
    return tuple(entries)


def command_line_job(args):
    batch_jobs = jobs_module()
    schedule = load_schedule_entries(args.schedule, "--schedule") if args.schedule else ()
    from captalk.model.core.contract import SEED_MAX

    if not 0 <= args.seed <= SEED_MAX:
        raise errors().BadInput(f"--seed must be from 0 to {SEED_MAX}, got {args.seed}")
    return batch_jobs.Job(batch_jobs.normalise_name(args.name, "--name"), Path(args.audio).resolve(), args.style,
                          args.emotion, schedule, args.rig, args.start_frame, args.seed,
                          str(Path(args.motion).resolve()) if args.motion else "")


def check_files_exist(job, where: str) -> None:
    prefix = f"{where}: " if where else ""
    for kind, path in (("audio", str(job.audio)), ("FLAME", job.rig if job.rig not in ("", "open") else ""),
                       ("motion", job.motion)):
        if path and not Path(path).is_file():
            raise errors().BadInput(f"{prefix}{kind} file not found: {path}")


def check_job(job, where: str) -> None:
    check_audio_file(job.audio, where)
    load_schedule_entries(list(job.schedule), where)
    if job.rig not in ("", "open") and not Path(job.rig).is_file():
        raise errors().BadInput(f"{where}: FLAME file not found: {job.rig}")
    if job.motion:
        from captalk.model.core.motion_file import load_motion

        if not Path(job.motion).is_file():
            raise errors().BadInput(f"{where}: motion file not found: {job.motion}")
        try:
            load_motion(job.motion)
        except errors().BadInput as exc:
            raise errors().BadInput(f"{where}: {exc}") from None


# ----------------------------------------------------------------------------- the scene
def find_or_add_rig(context, rig: str):
    """(mesh, armature) of the rig ``rig`` asks for (see `Job.rig`)."""
    from captalk.captalk_addon.rig_builder import PROP_PART, find_rig

    if not rig:
        for obj in context.scene.objects:
            if obj.get(PROP_PART) == "mesh":
                print(f"CapTalk: using the rig already in the scene: {obj.name}")
                return find_rig(obj)
    try:
        if rig in ("", "open"):
            bpy.ops.captalk.add_open_head()
        else:
            bpy.ops.captalk.import_flame(filepath=rig)
    except RuntimeError as exc:  # the operator's ERROR report; it already left the scene as it was
        kind = errors().BadInput if rig not in ("", "open") else errors().MissingPart
        raise kind(f"could not add the rig: {exc}") from None
    print(f"CapTalk: added the rig {context.active_object.name}")
    return find_rig(context.active_object)


def find_or_add_strip(scene, audio: Path, frame_start: int):
    from captalk.captalk_addon.compat import strip_frames
    from captalk.captalk_addon.sequencer import add_sound_strip, find_sound_strip

    strip = find_sound_strip(scene, str(audio))
    if strip is not None:
        print(f"CapTalk: using the sound strip already in the scene: '{strip.name}' at frame "
              f"{strip_frames(strip).content_start:g}")
        return strip
    strip = add_sound_strip(scene, str(audio), frame_start)
    print(f"CapTalk: sound strip '{strip.name}' at frame {frame_start}, frames up to {scene.frame_end}")
    return strip


def add_sections(scene, strip, schedule: tuple) -> None:
    """Schedule entries (seconds into the audio) -> caption sections on markers at the first
    scene frame at or after each, as an artist would place them (an entry at 0 s sets the
    scene's captions instead). A caption an entry leaves out keeps the one before it."""
    import math

    from captalk.captalk_addon.compat import strip_frames
    from captalk.model.core.timeline import SceneRate

    rate = SceneRate.from_blender(scene.render.fps, scene.render.fps_base)
    for entry in schedule:
        start = float(entry.get("start", 0.0))
        if start == 0:
            owner = scene.captalk
        else:
            scene.frame_current = math.ceil(strip_frames(strip).content_start + start * rate.frames_per_second - 1e-6)
            assert bpy.ops.captalk.section_add() == {"FINISHED"}
            owner = scene.captalk.sections[scene.captalk.active_section]
        for key in ("style", "emotion"):
            if key in entry:
                setattr(owner, key, entry[key])


def set_up_job(context, job):
    """The scene for ``job``: its rig, its strip (the only one selected), its captions. Returns the strip."""
    scene = context.scene
    mesh, armature = find_or_add_rig(context, job.rig)
    strip = find_or_add_strip(scene, job.audio, job.start_frame)
    for other in _sound_strips(scene):  # Generate acts on the selected sound strips
        other.select = False
    strip.select = True
    scene.sequence_editor.active_strip = strip
    strip.captalk_rig = mesh
    scene.captalk.target_rig = scene.captalk.target_rig or mesh
    scene.captalk.style, scene.captalk.emotion, scene.captalk.seed = job.style, job.emotion, job.seed
    add_sections(scene, strip, job.schedule)
    return strip


# ----------------------------------------------------------------------------- the model
def generate(args, checkpoint: Path, jobs):
    """Every planned strip job's takes, from the worker (default) or this process."""
    from captalk.captalk_addon.generation import GenerationRun, generate_in_process

    def report(fraction: float, message: str) -> None:
        print(f"CapTalk: {fraction:4.0%} {message}", flush=True)

    print(f"CapTalk: generating {len(jobs)} strip(s) with {checkpoint.name} "
          f"({'in this process' if args.in_process else 'back-end worker'})", flush=True)
    if args.in_process:
        return _in_process(generate_in_process, jobs, checkpoint, args.device, report)
    from captalk.captalk_addon.backend_process import backend_python
    from captalk.model.link.launch import WorkerSpec
    from captalk.model.link.protocol import JobState

    run = GenerationRun(WorkerSpec(python=backend_python(), checkpoint=checkpoint, device=args.device), jobs)
    try:
        state = run.run_here(report)
    except BaseException:  # an interrupt: the worker's job is cancelled, not left running
        run.cancel()
        run.wait_stopped(CANCEL_WAIT_S)
        raise
    if state != JobState.DONE:
        kinds = (errors().BadInput, errors().MissingPart, errors().Cancelled)  # what the user must do, as the run's
        kind = next((k for k in kinds if isinstance(run.failure, k)), errors().BackendFailure)
        raise kind(f"{run.error}. Nothing was animated or written.")
    print(f"CapTalk: {run.backend}")
    return run.results


def _in_process(generate_in_process, jobs, checkpoint, device, report):
    try:
        import torch  # noqa: F401
    except ImportError:
        raise errors().MissingPart("--in-process needs torch in Blender's Python; leave it out to use the back-end "
                                   "worker") from None
    return generate_in_process(jobs, checkpoint, device, report)


def precomputed(path: str, jobs) -> list:
    """The takes of a one-strip job from a motion file made earlier (--motion / "motion")."""
    from captalk.model.core.motion_file import load_motion

    print(f"CapTalk: using the motion in {path} (no generation)", flush=True)
    return [[load_motion(path)]]


def model_record(job, checkpoint_digest: str) -> str:
    """What made a job's motion, for its record: the checkpoint's digest, or for motion
    made earlier the digest its maker stamped in it (the farm's workers do), else the file's hash."""
    if not job.motion:
        return checkpoint_digest
    from captalk.model.core.motion_file import load_motion

    stamped = load_motion(job.motion).meta.get("model_digest")
    return stamped if isinstance(stamped, str) and stamped else "motion:" + jobs_module().file_sha256(job.motion)


# ----------------------------------------------------------------------------- output
def set_up_render(scene, args, mesh) -> None:
    import stills

    if scene.camera is None:
        stills.add_front_camera(scene, mesh)  # kept in the .blend: it shows what the preview shows
    if args.engine == "workbench":
        stills.use_workbench(scene, args.resolution)
        scene.display.render_aa = "5"  # anti-aliasing samples: a third faster than 8, plenty for a preview
        return
    from captalk.captalk_addon.compat import EEVEE_ENGINE

    scene.render.engine = {"eevee": EEVEE_ENGINE, "cycles": "CYCLES"}[args.engine]
    scene.render.resolution_x = scene.render.resolution_y = args.resolution
    scene.render.resolution_percentage = 100
    if args.engine == "cycles":
        scene.cycles.samples = args.samples
        scene.cycles.device = "CPU"
    else:
        scene.eevee.taa_render_samples = args.samples
    if scene.world is None:  # a plain grey world lights the head in EEVEE / Cycles
        scene.world = bpy.data.worlds.new("CapTalk preview")
        scene.world.color = (0.6, 0.6, 0.6)
        background = scene.world.node_tree.nodes.get("Background") if scene.world.node_tree else None
        if background is not None:  # 5.0: worlds always use nodes
            background.inputs["Color"].default_value = (0.6, 0.6, 0.6, 1.0)


def write_outputs(args, scene, jobs, results, motion_files: list[Path], outputs, record: dict | None) -> None:
    """Write the motion file(s), save the .blend and render the MP4, all under temporary
    names, then rename them onto ``outputs`` together (`StagedOutputs`)."""
    import preview_video

    from captalk.captalk_addon.compat import strip_frames
    from captalk.model.core.motion_file import save_motion

    batch_jobs = jobs_module()
    blend, video = outputs.blend, outputs.video
    stage = batch_jobs.StagedOutputs([p for p in (video, blend) if p is not None] + list(motion_files))
    STOPPER.cleanups.append(stage.discard)
    try:
        for job, takes, path in zip(jobs, results, motion_files):
            clip = takes[0]
            clip.meta.update({"strip": job.strip_name, "audio_start": job.timing.audio_start,
                              "start_frame": job.timing.start_frame})
            if record is not None:
                clip.meta[batch_jobs.RECORD_KEY] = record
            save_motion(stage.path(path), clip)
        mesh = bpy.data.objects[jobs[0].mesh_name]
        if args.render:
            set_up_render(scene, args, mesh)
        # copy=True: this session keeps its own file path (the next job reopens the starting scene)
        bpy.ops.wm.save_as_mainfile(filepath=str(stage.path(blend)), copy=True)
        STOPPER.check()
        if video is not None:
            strips = [s for s in _sound_strips(scene) if s.name in {j.strip_name for j in jobs}]
            first = int(min(strip_frames(s).left for s in strips))
            last = int(max(strip_frames(s).right for s in strips)) - 1
            print(f"CapTalk: rendering frames {first}-{last} ({args.engine})...", flush=True)
            STOPPER.raising = False  # during the render the per-frame hook acts on a signal
            try:
                preview_video.render_mp4(scene, stage.path(video), first, last, before_frame=STOPPER.before_frame)
            finally:
                STOPPER.raising = True
            STOPPER.check()
        stage.commit()
    except BaseException:
        stage.discard()
        raise
    finally:
        STOPPER.cleanups.remove(stage.discard)
    for path in stage.files:
        print(f"CapTalk: wrote {path}")


def _sound_strips(scene):
    from captalk.captalk_addon.compat import strip_collection

    return [s for s in strip_collection(scene) if s.type == "SOUND"]


# ----------------------------------------------------------------------------- runs
def animate(args, checkpoint: Path | None, outputs, motion_files=None, motion: str = "",
            record: dict | None = None) -> dict:
    """Plan the selected strips of the current scene, generate (or take ``motion``), write,
    save, render. Returns the steps' timings (seconds)."""
    from captalk.captalk_addon.generation import GenerationSetupError, apply_results, plan_jobs

    timings, clock = {}, time.perf_counter()
    scene = bpy.context.scene
    try:
        jobs = plan_jobs(scene)
    except GenerationSetupError as exc:
        raise GenerationSetupError(f"{exc}. Nothing was animated or written.") from None
    results = precomputed(motion, jobs) if motion else generate(args, checkpoint, jobs)
    STOPPER.check()
    if not motion and record is not None:
        for takes in results:
            takes[0].meta["model_digest"] = record["inputs"]["model"]
    timings["generate_s"], clock = time.perf_counter() - clock, time.perf_counter()
    try:
        written = apply_results(jobs, results)
    except GenerationSetupError as exc:
        raise GenerationSetupError(f"{exc}. Nothing was written.") from None
    fps = scene.render.fps / scene.render.fps_base
    print(f"CapTalk: {written} actions written for {', '.join(j.strip_name for j in jobs)} at {fps:.3f} fps")
    if motion_files is None:
        motion_files = [outputs.motion]
        if len(jobs) != 1:
            raise errors().BadInput(f"the job planned {len(jobs)} strips where one was expected")
    write_outputs(args, scene, jobs, results, motion_files, outputs, record)
    timings["write_s"] = time.perf_counter() - clock
    return timings


def start_scene(args) -> str:
    """Open the starting scene (--blend, or what `blender -b FILE` opened, or an empty one);
    returns its path ('' for an empty scene)."""
    if args.blend:
        bpy.ops.wm.open_mainfile(filepath=str(Path(args.blend).resolve()))
    elif not bpy.data.filepath:
        bpy.ops.wm.read_factory_settings(use_empty=True)
    register_from_source()
    return bpy.data.filepath


def reopen(base: str) -> None:
    if base:
        bpy.ops.wm.open_mainfile(filepath=base)
    else:
        bpy.ops.wm.read_factory_settings(use_empty=True)


def run_all_strips(args, base: str, out: Path) -> None:
    batch_jobs = jobs_module()
    scene = bpy.context.scene
    strips = _sound_strips(scene)
    if not strips:
        raise errors().BadInput("--all-strips: the scene has no sound strips")
    name = batch_jobs.normalise_name(args.name, "--name")
    outputs = batch_jobs.outputs_of(out, name, args.render)
    from captalk.captalk_addon.generation import plan_jobs

    for strip in strips:
        strip.select = True
    stems = batch_jobs.unique_stems([s.name for s in strips])
    planned = [job.strip_name for job in plan_jobs(scene)]
    if len(planned) == 1:
        motion_files = [outputs.motion]
    else:
        motion_files = [out / f"{name}_motion_{stems[strip]}.npz" for strip in planned]
    files = [p for p in (outputs.video, outputs.blend) if p is not None] + motion_files
    batch_jobs.check_not_inputs([(name, p) for p in files], [Path(base)] if base else [])
    existing = [p for p in files if p.exists()]
    if existing and not args.overwrite:
        raise batch_jobs.OutputConflict(f"{existing[0]} exists (from an earlier run): pass --overwrite to replace "
                                        "it. Nothing was written.")
    checkpoint = checkpoint_of(args)
    animate(args, checkpoint, outputs, motion_files=motion_files)


def plan_job_run(args, jobs, base: str, out: Path, checkpoint: Path | None):
    """(jobs to run with their outputs and records, jobs skipped): every output checked
    against the inputs and against an earlier run's files before anything is written."""
    batch_jobs = jobs_module()
    settings = batch_jobs.output_settings(args.render, args.engine, args.resolution, args.samples)
    scene_digest = batch_jobs.file_sha256(base) if base else "empty"
    checkpoint_digest = "checkpoint:" + batch_jobs.folder_digest(checkpoint) if checkpoint else ""
    planned = [(job, batch_jobs.outputs_of(out, job.name, args.render),
                batch_jobs.job_record(job, model_record(job, checkpoint_digest), scene_digest, settings))
               for job in jobs]
    return batch_jobs.plan_run(planned, out, args.overwrite, args.skip_existing)


def check_outputs_are_not_inputs(args, jobs, base: str, out: Path) -> None:
    batch_jobs = jobs_module()
    inputs = [Path(base)] if base else []
    inputs += [Path(p) for job in jobs for p in (job.audio, job.rig, job.motion) if p not in ("", "open")]
    if args.jobs:
        inputs.append(Path(args.jobs).resolve())
    outputs = [(job.name, p) for job in jobs for p in batch_jobs.outputs_of(out, job.name, args.render).files()]
    batch_jobs.check_not_inputs(outputs, inputs)


def run_jobs(args, base: str, out: Path) -> int:
    batch_jobs = jobs_module()
    defaults = command_line_job(args)
    jobs = batch_jobs.read_job_list(Path(args.jobs).resolve(), defaults) if args.jobs else [defaults]
    where = [f"job {number} ({job.name})" if args.jobs else "" for number, job in enumerate(jobs, start=1)]
    shard = batch_jobs.parse_shard(args.shard) if args.shard else None
    selected = batch_jobs.select_shard(jobs, shard)
    checkpoint = checkpoint_of(args) if any(not job.motion for job in selected) else None
    # all checked before the first one changes anything: the files first, then their content
    for job, place in zip(jobs, where):
        check_files_exist(job, place)
    check_outputs_are_not_inputs(args, jobs, base, out)
    for job, place in zip(jobs, where):
        check_job(job, place)
    to_run, skipped = plan_job_run(args, selected, base, out, checkpoint)
    manifest = Path(args.manifest).resolve() if args.manifest else out / batch_jobs.MANIFEST_NAME
    shard_text = f"{shard[0]}/{shard[1]}" if shard else ""
    if shard:
        print(f"CapTalk: shard {shard_text}: {len(selected)} of {len(jobs)} job(s)")
    for job, outputs, record in skipped:
        print(f"CapTalk: skipping {job.name}: its outputs are there, made from the same inputs")
        batch_jobs.append_manifest(manifest, batch_jobs.ManifestEntry(
            job.name, "skipped", outputs.relative(out), inputs_digest=record["digest"], shard=shard_text))
    failed = []
    for number, (job, outputs, record) in enumerate(to_run, start=1):
        if number > 1 or bpy.data.filepath != base:  # every job starts from the same scene
            reopen(base)
        print(f"CapTalk: job {number} of {len(to_run)}: {job.name}", flush=True)
        started = time.perf_counter()

        def entry(status, error=None, timings=None):
            return batch_jobs.ManifestEntry(job.name, status, outputs.relative(out) if status == "done" else {},
                                            dict(timings or {}, total_s=round(time.perf_counter() - started, 3)),
                                            error, record["digest"], shard_text)
        def stopped(message: str) -> str:
            batch_jobs.append_manifest(manifest, entry("cancelled", message))
            return f"{message} during job '{job.name}' ({number} of {len(to_run)}). {resume_hint(args)}"

        def abort() -> None:  # a signal during the render ends the process from its frame hook
            print(f"CapTalk: {stopped(f'stopped by {STOPPER.signal_name}')}", file=sys.stderr)

        STOPPER.cleanups.append(abort)
        try:
            set_up_job(bpy.context, job)
            timings = animate(args, checkpoint, outputs, motion=job.motion, record=record)
        except errors().Cancelled as exc:
            raise errors().Cancelled(stopped(str(exc))) from None
        except errors().CapTalkError as exc:
            batch_jobs.append_manifest(manifest, entry("failed", str(exc)))
            if not isinstance(exc, errors().BadInput):
                raise
            print(f"CapTalk: job '{job.name}' failed: {exc}", file=sys.stderr, flush=True)
            failed.append((job.name, exc))
            continue
        finally:
            STOPPER.cleanups.remove(abort)
        batch_jobs.append_manifest(manifest, entry("done", timings={k: round(v, 3) for k, v in timings.items()}))
    done = len(to_run) - len(failed)
    print(f"CapTalk: {done} done, {len(skipped)} skipped, {len(failed)} failed"
          + (f" ({', '.join(name for name, _ in failed)})" if failed else "") + f"; manifest: {manifest}")
    return failed[0][1].exit_code if failed else 0


def run(args) -> int:
    register_from_source()  # the add-on's modules (errors, job lists) for the checks
    check_arguments(args)
    base = start_scene(args)
    out = Path(args.out).resolve()
    if args.all_strips:
        run_all_strips(args, base, out)
        return 0
    return run_jobs(args, base, out)


def main() -> int:
    args = parse_args(script_args())
    STOPPER.install()
    try:
        return run(args)
    except KeyboardInterrupt:
        print(f"CapTalk: stopped. {resume_hint(args)}", file=sys.stderr)
        return 130
    except Exception as exc:
        from captalk.model.core.errors import CapTalkError, exit_status

        if not isinstance(exc, CapTalkError):
            raise
        print(f"CapTalk: {exc}", file=sys.stderr)
        return exit_status(exc)


if __name__ == "__main__":
    sys.exit(main())
