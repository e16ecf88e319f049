"""Generate from audio strip, and Cancel: the modal operator around
`captalk_addon.generation`.

In the UI it is modal: a timer steps the run (the worker does the work in another process,
a thread follows it), the panel shows progress, ESC or Cancel stops it and leaves the scene
as it was. From a script or in background mode (`bpy.app.background`, no event loop) the
same operator runs synchronously. Either way the scene is written once, at the end, as
one undo step.
"""
from __future__ import annotations

import bpy

from ..captalk_addon.generation import GenerationRun, GenerationSetupError, apply_results, plan_jobs
from ..captalk_addon.worker import worker_spec

TIMER_SECONDS = 0.1

_active: GenerationRun | None = None  # at most one run per Blender session


def _set_job_state(context, running: bool, progress: float = 0.0, message: str = "", backend: str = "") -> None:
    job = context.window_manager.captalk_job
    job.running, job.progress, job.message = running, progress, message
    if backend:
        job.backend_status = backend
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "SEQUENCE_EDITOR"):
                area.tag_redraw()


class CAPTALK_OT_generate_from_strip(bpy.types.Operator):
    """Animate the rig from the selected sound strip(s): lip sync, expression and head motion \
directed by the captions and sections (written as CapTalk's own NLA strips)"""

    bl_idname = "captalk.generate_from_strip"
    bl_label = "Generate from Audio Strip"
    bl_options = {"REGISTER", "UNDO"}

    _timer = None

    @classmethod
    def poll(cls, context):
        if _active is not None:
            cls.poll_message_set("A generation is already running")
            return False
        if context.scene is None or not hasattr(context.scene, "captalk"):
            return False
        return True

    def _plan(self, context):
        try:
            return plan_jobs(context.scene)
        except GenerationSetupError as exc:
            self.report({"ERROR"}, str(exc))
            return None

    def execute(self, context):
        jobs = self._plan(context)
        if jobs is None:
            return {"CANCELLED"}
        run = GenerationRun(worker_spec(context), jobs)
        run.run_here()
        _set_job_state(context, False, 0.0, "", run.backend)
        return self._finish(context, run)

    def invoke(self, context, event):
        global _active
        if bpy.app.background:
            return self.execute(context)
        jobs = self._plan(context)
        if jobs is None:
            return {"CANCELLED"}
        _active = GenerationRun(worker_spec(context), jobs).start()
        _set_job_state(context, True, 0.0, "starting")
        self._timer = context.window_manager.event_timer_add(TIMER_SECONDS, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        global _active
        run = _active
        if event.type == "ESC" and event.value == "PRESS":
            run.cancel()
        elif event.type != "TIMER":
            return {"PASS_THROUGH"}  # Blender stays usable while the model works
        state = run.step()
        if state == "running":
            _set_job_state(context, True, run.fraction, run.message, run.backend)
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        _active = None
        _set_job_state(context, False, 0.0, "", run.backend)
        return self._finish(context, run)

    def _finish(self, context, run: GenerationRun):
        if run.state == "cancelled":
            self.report({"INFO"}, "Generation cancelled; the scene is unchanged")
            return {"CANCELLED"}
        if run.state == "failed":
            self.report({"ERROR"}, run.error)
            return {"CANCELLED"}
        try:
            written = apply_results(run.jobs, run.results)
        except GenerationSetupError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        strips = ", ".join(job.strip_name for job in run.jobs)
        message = f"Animated {strips} ({written} actions)"
        unmapped = sorted({name for takes in run.results for clip in takes for name in clip.meta.get("unmapped", ())})
        if unmapped:  # a FLAME rig driven through its adapter: say what it cannot show
            message += f"; not mapped onto the rig: {', '.join(unmapped)}"
        context.window_manager.captalk_job.message = message
        self.report({"INFO"}, message)
        return {"FINISHED"}


class CAPTALK_OT_cancel_generation(bpy.types.Operator):
    """Stop the running generation; the scene stays as it was before Generate"""

    bl_idname = "captalk.cancel_generation"
    bl_label = "Cancel Generation"

    @classmethod
    def poll(cls, context):
        return _active is not None

    def execute(self, context):
        _active.cancel()  # the modal operator sees it on its next timer tick and cleans up
        return {"FINISHED"}


classes = (CAPTALK_OT_generate_from_strip, CAPTALK_OT_cancel_generation)
