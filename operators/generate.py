"""Generate from audio strip, and Cancel: the operators around `captalk_addon.generation`.

In the UI Generate is modal (`captalk_addon.background.ModalRunner`): the worker does the
work in another process, a thread follows it, the panel shows progress, ESC or Cancel
stops it and leaves the scene as it was. From a script or in background mode the same
operator runs synchronously. Either way the scene is written once, at the end, as one
undo step.
"""
from __future__ import annotations

import bpy

from ..captalk_addon.background import ModalRunner, active_run
from ..captalk_addon.generation import GenerationRun, GenerationSetupError, apply_results, plan_jobs
from ..captalk_addon.worker import worker_spec
from ..model.link.protocol import JobState


def _set_job_state(context, running: bool, progress: float = 0.0, message: str = "", backend: str = "") -> None:
    job = context.window_manager.captalk_job
    job.running, job.progress, job.message = running, progress, message
    if backend:
        job.backend_status = backend
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "SEQUENCE_EDITOR"):
                area.tag_redraw()


class CAPTALK_OT_generate_from_strip(ModalRunner, bpy.types.Operator):
    """Animate the rig from the selected sound strip(s): lip sync, expression and head motion \
directed by the captions and sections (written as CapTalk's own NLA strips)"""

    bl_idname = "captalk.generate_from_strip"
    bl_label = "Generate from Audio Strip"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not cls.poll_idle():
            return False
        return context.scene is not None and hasattr(context.scene, "captalk")

    def make_run(self, context) -> GenerationRun | None:
        try:
            return GenerationRun(worker_spec(context), plan_jobs(context.scene))
        except GenerationSetupError as exc:
            self.report({"ERROR"}, str(exc))
            return None

    def show(self, context, run: GenerationRun) -> None:
        running = run.state == JobState.RUNNING
        _set_job_state(context, running, run.fraction if running else 0.0, run.message if running else "",
                       run.backend)

    def finish(self, context, run: GenerationRun) -> set[str]:
        if run.state == JobState.CANCELLED:
            self.report({"INFO"}, "Generation cancelled; the scene is unchanged")
            return {"CANCELLED"}
        if run.state == JobState.FAILED:
            self.report({"ERROR"}, run.error)
            return {"CANCELLED"}
        try:
            written = apply_results(run.jobs, run.results)
        except GenerationSetupError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        strips = ", ".join(job.strip_name for job in run.jobs)
        message = f"Animated {strips} ({written} actions)"
        context.window_manager.captalk_job.message = message
        self.report({"INFO"}, message)
        return {"FINISHED"}


class CAPTALK_OT_cancel_generation(bpy.types.Operator):
    """Stop the running generation; the scene stays as it was before Generate"""

    bl_idname = "captalk.cancel_generation"
    bl_label = "Cancel Generation"

    @classmethod
    def poll(cls, context):
        return active_run() is not None

    def execute(self, context):
        active_run().cancel()  # the modal operator sees it on its next timer tick and cleans up
        return {"FINISHED"}


classes = (CAPTALK_OT_generate_from_strip, CAPTALK_OT_cancel_generation)
