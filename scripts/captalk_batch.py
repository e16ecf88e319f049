"""Headless CapTalk: animate speech on a head, save the .blend, render an MP4 with the audio.

Runs the same both ways:
    blender -b [scene.blend] --python scripts/captalk_batch.py -- [options]
    python scripts/captalk_batch.py [--blend scene.blend] [options]          (PyPI bpy)

Three kinds of run:
- one job (default): --audio, --style, --emotion, optional caption sections (--schedule,
  placed as timeline markers), --rig (the scene's CapTalk rig, the open head, or your
  FLAME file); writes OUT/NAME.blend, OUT/NAME_motion.npz (raw 25 fps) and OUT/NAME.mp4;
- --all-strips: every sound strip of the opened .blend, with the scene's CapTalk captions,
  sections and each strip's rig, as the panel's Generate would; writes OUT/NAME.blend (+ .mp4);
- --jobs FILE.json: a list of jobs, each from the same starting scene, each written as
  OUT/<job name>.* ; every job is checked before the first one runs:

      {"jobs": [{"name": "line01", "audio": "line01.wav", "style": "a calm teacher",
                 "emotion": "neutral", "schedule": [{"start": 2.5, "emotion": "happy"}],
                 "rig": "open", "start_frame": 1, "seed": 0}, ...]}

  (relative paths are relative to the JSON file; keys left out take the command line's values).

The motion comes from the back-end worker in its own process (torch never loads here), or
with --in-process from the model in this process. Results are CapTalk's own actions on NLA
strips (`captalk_addon.animation`): an artist's actions are never changed, and running again
replaces only CapTalk's earlier result for that strip. The render (Workbench, EEVEE or
Cycles) covers the animated strips' frames with the sequencer's sound.

Exit status: 0 done; 1 the back end failed unexpectedly; 2 bad input (nothing is
written); 3 a required part (the motion model, audio support in this Blender build, the
back end's Python) is missing (nothing is written).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import bpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from source_addon import REPO_ROOT, register_from_source, script_args  # noqa: E402

DEFAULT_AUDIO = REPO_ROOT / "samples" / "speech_sample.wav"
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_MISSING_PART = 3
ENGINES = ("workbench", "eevee", "cycles")


class JobError(Exception):
    """Stops the run with ``status`` after printing the message."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Job:
    """One line to animate: what the command line (or one entry of --jobs) asks for."""

    name: str
    audio: Path
    style: str
    emotion: str
    schedule: tuple = ()  # caption changes: {"start": seconds into the audio, "style"?, "emotion"?}
    rig: str = ""  # "": the scene's rig, else the open head; "open"; or a FLAME .pkl / .npz
    start_frame: int = 1
    seed: int = 0


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
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- checks (scene untouched)
def checkpoint_of(args) -> Path:
    from captalk.model.core.paths import default_checkpoint_dir

    checkpoint = Path(args.checkpoint).resolve() if args.checkpoint else default_checkpoint_dir()
    if not (checkpoint / "captalk.json").is_file():
        raise JobError(f"no motion model at {checkpoint}. Pass --checkpoint DIR (README, 'Training'). Nothing was "
                       "animated or written.", EXIT_MISSING_PART)
    return checkpoint


def check_audio_file(audio: Path) -> None:
    from captalk.captalk_addon.sequencer import AudioError, NoAudioSupport, check_audio

    if not audio.is_file():
        raise JobError(f"audio file not found: {audio}", EXIT_BAD_INPUT)
    try:
        check_audio(str(audio))
    except (AudioError, NoAudioSupport) as exc:
        raise JobError(str(exc), exc.exit_code) from None


def load_schedule_entries(source, where: str) -> tuple:
    """A schedule (a JSON file's path, or its list) -> its entries as written, once
    `model.core.schedule` has accepted them."""
    from captalk.model.core.schedule import ScheduleError, parse_schedule

    entries = source
    try:
        if isinstance(source, (str, Path)):
            data = json.loads(Path(source).read_text(encoding="utf-8"))
            entries = data.get("segments") if isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise ScheduleError("expected a list of {start, style, emotion} entries (or {\"segments\": [...]})")
        parse_schedule(entries)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobError(f"{where}: cannot read the schedule {source} ({exc})", EXIT_BAD_INPUT) from None
    except ScheduleError as exc:
        raise JobError(f"{where}: {exc}", EXIT_BAD_INPUT) from None
    return tuple(entries)


def command_line_job(args) -> Job:
    schedule = load_schedule_entries(args.schedule, "--schedule") if args.schedule else ()
    return Job(args.name, Path(args.audio).resolve(), args.style, args.emotion, schedule, args.rig,
               args.start_frame, args.seed)


def read_job_list(path: Path, defaults: Job) -> list[Job]:
    """Every job of a --jobs file, each checked (audio readable, schedule valid, names unique)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobError(f"job list not found: {path}", EXIT_BAD_INPUT) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobError(f"job list {path} is not readable JSON ({exc})", EXIT_BAD_INPUT) from None
    entries = data.get("jobs") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise JobError(f"job list {path}: expected a non-empty list of jobs (or {{\"jobs\": [...]}})", EXIT_BAD_INPUT)
    jobs, fields = [], set(Job.__dataclass_fields__)
    for number, entry in enumerate(entries, start=1):
        where = f"job list {path.name}, job {number}"
        if not isinstance(entry, dict) or "audio" not in entry:
            raise JobError(f"{where}: each job is an object with at least \"audio\"", EXIT_BAD_INPUT)
        unknown = sorted(set(entry) - fields)
        if unknown:
            raise JobError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}",
                           EXIT_BAD_INPUT)
        audio = (path.parent / entry["audio"]).resolve()
        rig = entry.get("rig", defaults.rig)
        if rig not in ("", "open"):
            rig = str((path.parent / rig).resolve())
        try:
            job = replace(defaults, **{**entry, "audio": audio, "rig": rig,
                                       "name": str(entry.get("name", audio.stem)),
                                       "schedule": load_schedule_entries(entry.get("schedule", []), where)})
        except TypeError as exc:
            raise JobError(f"{where}: {exc}", EXIT_BAD_INPUT) from None
        jobs.append(job)
    names = [job.name for job in jobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise JobError(f"job list {path.name}: names must be unique (they name the files): {duplicates}",
                       EXIT_BAD_INPUT)
    return jobs


def check_job(job: Job) -> None:
    check_audio_file(job.audio)
    if job.rig not in ("", "open") and not Path(job.rig).is_file():
        raise JobError(f"{job.name}: FLAME file not found: {job.rig}", EXIT_BAD_INPUT)


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
        status = EXIT_BAD_INPUT if rig not in ("", "open") else EXIT_MISSING_PART
        raise JobError(f"could not add the rig: {exc}", status) from None
    print(f"CapTalk: added the rig {context.active_object.name}")
    return find_rig(context.active_object)


def find_or_add_strip(scene, audio: Path, frame_start: int):
    from captalk.captalk_addon.sequencer import add_sound_strip, find_sound_strip

    strip = find_sound_strip(scene, str(audio))
    if strip is not None:
        print(f"CapTalk: using the sound strip already in the scene: '{strip.name}' at frame {strip.frame_start:g}")
        return strip
    strip = add_sound_strip(scene, str(audio), frame_start)
    print(f"CapTalk: sound strip '{strip.name}' at frame {frame_start}, frames up to {scene.frame_end}")
    return strip


def add_sections(scene, strip, schedule: tuple) -> None:
    """Schedule entries (seconds into the audio) -> caption sections on markers at the first
    scene frame at or after each, as an artist would place them (an entry at 0 s sets the
    scene's captions instead). A caption an entry leaves out keeps the one before it."""
    import math

    from captalk.model.core.timeline import SceneRate

    rate = SceneRate.from_blender(scene.render.fps, scene.render.fps_base)
    for entry in schedule:
        start = float(entry.get("start", 0.0))
        if start == 0:
            owner = scene.captalk
        else:
            scene.frame_current = math.ceil(strip.frame_start + start * rate.frames_per_second - 1e-6)
            assert bpy.ops.captalk.section_add() == {"FINISHED"}
            owner = scene.captalk.sections[scene.captalk.active_section]
        for key in ("style", "emotion"):
            if key in entry:
                setattr(owner, key, entry[key])


def set_up_job(context, job: Job):
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
    if run.run_here(report) != JobState.DONE:
        status = run.failure.exit_code if run.failure else EXIT_FAILED
        raise JobError(f"{run.error}. Nothing was animated or written.", status)
    print(f"CapTalk: {run.backend}")
    return run.results


def _in_process(generate_in_process, jobs, checkpoint, device, report):
    try:
        import torch  # noqa: F401
    except ImportError:
        raise JobError("--in-process needs torch in Blender's Python; leave it out to use the back-end worker",
                       EXIT_MISSING_PART) from None
    from captalk.model.core.errors import CapTalkError

    try:
        return generate_in_process(jobs, checkpoint, device, report)
    except CapTalkError as exc:
        raise JobError(f"{exc}. Nothing was animated or written.", EXIT_BAD_INPUT) from None


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


def write_outputs(args, out: Path, name: str, scene, jobs, results) -> None:
    import preview_video

    from captalk.captalk_addon.compat import strip_frames
    from captalk.model.core.motion_file import save_motion

    out.mkdir(parents=True, exist_ok=True)
    for job, takes in zip(jobs, results):
        suffix = "" if len(jobs) == 1 else f"_{bpy.path.clean_name(job.strip_name)}"
        clip = takes[0]
        clip.meta.update({"strip": job.strip_name, "audio_start": job.timing.audio_start,
                          "start_frame": job.timing.start_frame})
        save_motion(out / f"{name}_motion{suffix}.npz", clip)
    mesh = bpy.data.objects[jobs[0].mesh_name]
    if args.render:
        set_up_render(scene, args, mesh)
    blend = out / f"{name}.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    print(f"CapTalk: saved {blend}")
    if args.render:
        strips = [s for s in _sound_strips(scene) if s.name in {j.strip_name for j in jobs}]
        first = int(min(strip_frames(s).left for s in strips))
        last = int(max(strip_frames(s).right for s in strips)) - 1
        print(f"CapTalk: rendering frames {first}-{last} ({args.engine})...", flush=True)
        video = preview_video.render_mp4(scene, out / f"{name}.mp4", first, last)
        print(f"CapTalk: rendered {video}")


def _sound_strips(scene):
    from captalk.captalk_addon.compat import strip_collection

    return [s for s in strip_collection(scene) if s.type == "SOUND"]


# ----------------------------------------------------------------------------- runs
def animate(args, checkpoint: Path, out: Path, name: str) -> None:
    """Plan the selected strips of the current scene, generate, write, save, render."""
    from captalk.captalk_addon.generation import GenerationSetupError, apply_results, plan_jobs

    scene = bpy.context.scene
    try:
        jobs = plan_jobs(scene)
    except GenerationSetupError as exc:
        raise JobError(f"{exc}. Nothing was animated or written.", EXIT_BAD_INPUT) from None
    results = generate(args, checkpoint, jobs)
    try:
        written = apply_results(jobs, results)
    except GenerationSetupError as exc:
        raise JobError(f"{exc}. Nothing was written.", EXIT_BAD_INPUT) from None
    fps = scene.render.fps / scene.render.fps_base
    print(f"CapTalk: {written} actions written for {', '.join(j.strip_name for j in jobs)} at {fps:.3f} fps")
    write_outputs(args, out, name, scene, jobs, results)


def start_scene(args) -> str:
    """Open the starting scene (--blend, or what `blender -b FILE` opened, or an empty one);
    returns its path ('' for an empty scene)."""
    if args.blend:
        path = Path(args.blend).resolve()
        if not path.is_file():
            raise JobError(f"scene not found: {path}", EXIT_BAD_INPUT)
        bpy.ops.wm.open_mainfile(filepath=str(path))
    elif not bpy.data.filepath:
        bpy.ops.wm.read_factory_settings(use_empty=True)
    register_from_source()
    return bpy.data.filepath


def run(args) -> None:
    base = start_scene(args)
    checkpoint = checkpoint_of(args)
    out = Path(args.out).resolve()
    if args.all_strips:
        if not _sound_strips(bpy.context.scene):
            raise JobError("--all-strips: the scene has no sound strips", EXIT_BAD_INPUT)
        for strip in _sound_strips(bpy.context.scene):
            strip.select = True
        animate(args, checkpoint, out, args.name)
        return
    defaults = command_line_job(args)
    jobs = read_job_list(Path(args.jobs).resolve(), defaults) if args.jobs else [defaults]
    for job in jobs:  # all checked before the first one changes anything
        check_job(job)
    for number, job in enumerate(jobs, start=1):
        if number > 1:  # every job starts from the same scene
            if base:
                bpy.ops.wm.open_mainfile(filepath=base)
            else:
                bpy.ops.wm.read_factory_settings(use_empty=True)
        print(f"CapTalk: job {number} of {len(jobs)}: {job.name}", flush=True)
        set_up_job(bpy.context, job)
        animate(args, checkpoint, out, job.name)


def main() -> int:
    args = parse_args(script_args())
    try:
        run(args)
    except JobError as exc:
        print(f"CapTalk: {exc}", file=sys.stderr)
        return exc.status
    return 0


if __name__ == "__main__":
    sys.exit(main())
