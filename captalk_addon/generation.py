"""Generate from sound strips: what to ask the back end for each strip, and writing what
comes back. The operator (`operators.generate`) only sequences these on the main thread.

Planning reads the scene and changes nothing; results are written only once every job
has come back and fits its rig, so a failure or a Cancel at any point leaves the scene as
it was.

For each sound strip (the selected ones, else the active one): the audio that plays
(`model.core.timeline.strip_timing`: trims and the sound offset, at the scene's fps / fps_base),
the captions in force over it (the scene's default captions and the caption sections on
markers, `model.core.timeline.caption_schedule`), the rig it drives (the strip's own CapTalk
rig, else the scene's) and the sampling options. Take 1 becomes the strip's result;
takes 2.. are written beside it, muted, as "<strip> take <k>" for the artist to audition.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import bpy

from ..model.core.contract import GenerationOptions, GenerationRequest
from ..model.core.motion_file import MotionClip
from ..model.core.schedule import ScheduleError
from ..model.core.timeline import SceneRate, StripTiming, TimelineError, caption_schedule, channel_layout, strip_timing
from ..model.link.launch import WorkerSpec
from ..model.link.protocol import JobState
from .background import BackgroundRun
from .animation import PROP_STRIP, animate_rig, captalk_strips, remove_result
from .progress import ProgressEstimate
from .sections import section_entries
from .worker import Failed, Finished, GenerationTask, Progress
from .rig_builder import PROP_MODEL_ID, find_rig
from .compat import strip_collection, strip_frames
from ..model.core.errors import BadInput

TAKE_SEPARATOR = " take "


class GenerationSetupError(BadInput):
    """The scene cannot be generated for as it is; the message says what to change."""


@dataclass(frozen=True)
class StripJob:
    """One sound strip's request and where its result goes (by name: data-blocks may be
    re-allocated while a job runs, e.g. by undo)."""

    scene_name: str
    strip_name: str
    mesh_name: str
    armature_name: str | None
    timing: StripTiming
    request: GenerationRequest
    scene_uid: int = 0  # the scene's session_uid: found again even if renamed while generating


def strips_to_generate(scene) -> list:
    """The selected sound strips, else the active strip if it is a sound strip."""
    if scene.sequence_editor is None:
        raise GenerationSetupError("The scene has no sound strips: add the speech in the Video Sequencer first")
    strips = [s for s in strip_collection(scene) if s.type == "SOUND" and s.select]
    active = scene.sequence_editor.active_strip
    if not strips and active is not None and active.type == "SOUND":
        strips = [active]
    if not strips:
        raise GenerationSetupError("Select the sound strip(s) to animate in the Video Sequencer")
    return sorted(strips, key=lambda s: (strip_frames(s).left, s.name))


def rig_for(scene, strip) -> tuple:
    """(mesh object, armature object or None) that ``strip`` drives."""
    target = getattr(strip, "captalk_rig", None) or scene.captalk.target_rig
    if target is None:
        raise GenerationSetupError(f"No rig for '{strip.name}': choose the CapTalk rig in the panel (or the "
                                   "strip's own rig in the Sequencer sidebar)")
    mesh, armature = find_rig(target)
    if mesh is None and target.type == "MESH":
        mesh = target
    if mesh is None or mesh.data.shape_keys is None:
        raise GenerationSetupError(f"'{target.name}' is not a CapTalk rig or a mesh with shape keys")
    return mesh, armature


def sound_source(strip) -> dict:
    """The strip's sound as request fields: ``audio_path`` (absolute) or, for a packed
    sound, ``audio_bytes``."""
    sound = strip.sound
    if sound is None:
        raise GenerationSetupError(f"'{strip.name}' has no sound")
    if sound.packed_file is not None:
        return {"audio_bytes": bytes(sound.packed_file.data)}
    path = os.path.realpath(bpy.path.abspath(sound.filepath, library=sound.library))
    if not os.path.isfile(path):
        raise GenerationSetupError(f"The sound of '{strip.name}' is missing: {path}")
    return {"audio_path": path}


def plan_jobs(scene) -> list[StripJob]:
    """One `StripJob` per strip to generate; raises `GenerationSetupError`. Reads only."""
    settings = scene.captalk
    rate = SceneRate.from_blender(scene.render.fps, scene.render.fps_base)
    options = GenerationOptions(seed=settings.seed, guidance=settings.guidance, temperature=settings.temperature,
                                takes=settings.takes)
    jobs = []
    for strip in strips_to_generate(scene):
        mesh, armature = rig_for(scene, strip)
        frames = strip_frames(strip)
        # content_duration is the sound's length in whole frames; the worker crops to the true end
        sound_seconds = frames.content_duration / rate.frames_per_second
        try:
            timing = strip_timing(frames.content_start, frames.left, frames.right,
                                  getattr(strip, "sound_offset", 0.0), rate, sound_seconds)
            schedule = caption_schedule(section_entries(scene), settings.style, settings.emotion, timing.start_frame,
                                        rate, timing.duration)
        except (TimelineError, ScheduleError) as exc:
            raise GenerationSetupError(f"'{strip.name}': {exc}") from None
        request = GenerationRequest(**sound_source(strip), audio_start=timing.audio_start, audio_end=timing.audio_end,
                                    schedule=schedule, head_model=mesh.get(PROP_MODEL_ID), options=options,
                                    client=f"Blender {bpy.app.version_string} pid {os.getpid()}: {strip.name}")
        jobs.append(StripJob(scene.name, strip.name, mesh.name, armature.name if armature else None, timing, request,
                             scene_uid=scene.session_uid))
    return jobs


def job_scene(job: StripJob):
    """The scene ``job`` was planned in, renamed or not; `GenerationSetupError` if it is gone."""
    scene = next((s for s in bpy.data.scenes if job.scene_uid and s.session_uid == job.scene_uid), None)
    scene = scene or bpy.data.scenes.get(job.scene_name)
    if scene is None:
        raise GenerationSetupError(f"The scene '{job.scene_name}' was deleted while generating '{job.strip_name}'; "
                                   "nothing was written")
    return scene


def check_result(job: StripJob, takes: list[MotionClip]) -> tuple:
    """(mesh, armature) of ``job`` if its motion fits them; else `GenerationSetupError`."""
    job_scene(job)
    mesh = bpy.data.objects.get(job.mesh_name)
    armature = bpy.data.objects.get(job.armature_name) if job.armature_name else None
    if mesh is None or mesh.data.shape_keys is None or (job.armature_name and armature is None):
        raise GenerationSetupError(f"The rig of '{job.strip_name}' was removed while generating")
    expressions, joints = channel_layout(takes[0].channels)
    missing = [name for name in expressions if name not in mesh.data.shape_keys.key_blocks]
    missing += [joint for joint in joints if armature is None or joint not in armature.data.bones]
    if missing:
        raise GenerationSetupError(f"'{mesh.name}' lacks {len(missing)} of the model's channels "
                                   f"({', '.join(missing[:4])}...): the model is for another head model. "
                                   "Bake onto it instead (Bake to Shape Keys maps channels by name)")
    return mesh, armature


def apply_results(jobs: list[StripJob], results: list[list[MotionClip]]) -> int:
    """Write every job's takes (all checked first: nothing is written unless all fit).
    Returns the number of actions written."""
    rigs = [check_result(job, takes) for job, takes in zip(jobs, results)]
    written = 0
    for job, takes, (mesh, armature) in zip(jobs, results, rigs):
        scene = job_scene(job)
        _remove_takes(mesh, armature, job.strip_name, keep=len(takes))
        for number, clip in enumerate(takes, start=1):
            name = job.strip_name if number == 1 else f"{job.strip_name}{TAKE_SEPARATOR}{number}"
            actions = animate_rig(scene, mesh, armature, clip.motion, clip.channels, name, job.timing.start_frame)
            written += len(actions)
            if number > 1:  # other takes stay in the file for the artist to audition, silent
                for id_block in (mesh.data.shape_keys, armature):
                    for nla_strip in captalk_strips(id_block, name) if id_block else ():
                        nla_strip.mute = True
    return written


def _remove_takes(mesh, armature, strip_name: str, keep: int) -> None:
    """Remove CapTalk's takes beyond ``keep`` of an earlier run for ``strip_name``."""
    prefix = f"{strip_name}{TAKE_SEPARATOR}"
    for id_block in (mesh.data.shape_keys, armature):
        if id_block is None:
            continue
        names = {s.action.get(PROP_STRIP) for s in captalk_strips(id_block) if s.action is not None}
        for name in names:
            if name and name.startswith(prefix) and name[len(prefix):].isdigit() and int(name[len(prefix):]) > keep:
                remove_result(id_block, name)


class GenerationRun(BackgroundRun):
    """Jobs sent to the worker one after another off the main thread; `step` (called from a
    timer on the main thread, or in a loop) collects what happened and starts the next.

    When the state is DONE, ``results`` are ready for `apply_results`; FAILED: ``error``
    says why, ``failure`` is the `CapTalkError`. Nothing here touches the scene.
    """

    def __init__(self, spec: WorkerSpec, jobs: list[StripJob]):
        super().__init__()
        self.spec, self.jobs = spec, jobs
        self.results: list[list[MotionClip]] = []
        self.backend = ""
        self.task: GenerationTask | None = None
        self.estimate: ProgressEstimate | None = None

    def start(self) -> "GenerationRun":
        return self._start_job(0)

    def _start_job(self, index: int) -> "GenerationRun":
        self.estimate = ProgressEstimate(self.jobs[index].timing.duration)
        self.task = GenerationTask(self.spec, self.jobs[index].request).start()
        return self

    def cancel(self) -> None:
        """Stop now: the worker's job is cancelled in the background; results are dropped."""
        if self.task is not None:
            self.task.cancel()
        self.state = JobState.CANCELLED

    def wait_stopped(self, timeout: float) -> bool:
        """After `cancel`, in a process about to exit: wait up to ``timeout`` s until the
        worker has been told (the task's thread sends the cancel on its next poll, and a
        daemon thread dies unsent with the process). True if it stopped in time."""
        return self.task is None or self.task.wait(timeout)

    def step(self) -> JobState:
        if self.state != JobState.RUNNING:
            return self.state
        done = len(self.results)
        for item in self.task.poll():
            if isinstance(item, Progress):
                self.estimate.report(item.fraction, from_worker=bool(self.task.backend))
                self.message = f"{self.jobs[done].strip_name}: {item.message}" if len(self.jobs) > 1 else item.message
                self.backend = self.task.backend or self.backend
            elif isinstance(item, Finished):
                self.results.append(item.takes)
                if len(self.results) == len(self.jobs):
                    self.state, self.fraction, self.message = JobState.DONE, 1.0, "writing the animation"
                else:
                    self._start_job(len(self.results))
            elif isinstance(item, Failed):
                self.fail(item.error)
                self.error = f"'{self.jobs[done].strip_name}': {item.message}"
        if self.state == JobState.RUNNING:  # the bar moves on between reports too (see .progress)
            self.fraction = (len(self.results) + self.estimate.fraction()) / len(self.jobs)
        return self.state


def generate_in_process(jobs: list[StripJob], checkpoint: str | os.PathLike | None, device: str = "auto",
                        report: Callable[[float, str], None] | None = None) -> list[list[MotionClip]]:
    """The jobs' requests run by the model in THIS process: torch loads into Blender, so
    only for headless batch when asked (``--in-process``). Raises the model's own errors
    (`model.core.errors.CapTalkError`s: bad audio, a checkpoint that does not fit...)."""
    from ..model.generate import Generator
    from ..model.run import check_rig, prepare_request, run_prepared

    prepared = [prepare_request(job.request) for job in jobs]  # bad audio fails before the model loads
    generator = Generator.load(checkpoint, device=device)
    return [run_prepared(generator, check_rig(request, generator.manifest), progress=report) for request in prepared]
