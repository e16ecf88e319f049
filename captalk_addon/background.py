"""Background work started from an operator: one runner for every kind of it.

A `BackgroundRun` is work that happens elsewhere (the worker generating motion, a
back-end command building the open head) and is followed from Blender's main thread by
calling `step`, which only looks at what happened and never blocks. `ModalRunner` is the
operator side: in the UI it steps the run from a timer (modal: Blender stays usable, ESC
or the Cancel button stops it), in background mode (`bpy.app.background`, no event loop)
or from a script's ``execute`` it runs the same work synchronously. bpy is touched only
in the operator's own methods, on the main thread.

At most one run is active in a Blender session (`active_run`): the Cancel operator and
the panel's progress read it.
"""
from __future__ import annotations

import time
from typing import Callable

import bpy

from ..model.core.errors import CapTalkError, Cancelled
from ..model.link.protocol import JobState

TIMER_SECONDS = 0.1

_active: "BackgroundRun | None" = None


class BackgroundRun:
    """Work followed from the main thread. Subclasses implement `start`, `step` and `cancel`
    and keep ``state`` (a `JobState`), ``fraction``, ``message`` and, once failed,
    ``error`` (the message) and ``failure`` (the `model.core.errors.CapTalkError`)."""

    def __init__(self, message: str = "starting"):
        self.state, self.fraction, self.message, self.error = JobState.RUNNING, 0.0, message, ""
        self.failure = None

    def start(self) -> "BackgroundRun":
        raise NotImplementedError

    def step(self) -> JobState:
        """Collect what happened since the last call (never blocks); the state after it."""
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError

    def fail(self, error: CapTalkError) -> None:
        self.state = JobState.CANCELLED if isinstance(error, Cancelled) else JobState.FAILED
        self.failure, self.error = error, str(error)

    def run_here(self, report: Callable[[float, str], None] | None = None, poll_seconds: float = 0.05) -> JobState:
        """The whole run, waiting here (background Blender, scripts); ``report(fraction,
        message)`` hears each new progress message."""
        self.start()
        last = None
        while self.step() == JobState.RUNNING:
            if report is not None and self.message != last:
                report(self.fraction, self.message)
                last = self.message
            time.sleep(poll_seconds)
        return self.state


def active_run() -> BackgroundRun | None:
    """The run in progress in this Blender session, if any."""
    return _active


class ModalRunner:
    """Operator mixin: run a `BackgroundRun` modally in the UI, synchronously otherwise.

    Subclasses implement ``make_run(context)`` (the run, or None after reporting why not)
    and ``finish(context, run)`` (the operator's result once the run has ended, whatever
    its state); ``show(context, run)`` may display progress (called as it changes).
    """

    _timer = None

    @classmethod
    def poll_idle(cls) -> bool:
        """For ``poll``: False (with the reason) while another run is active."""
        if _active is not None:
            cls.poll_message_set(f"CapTalk is busy: {_active.message}")
            return False
        return True

    def make_run(self, context) -> BackgroundRun | None:
        raise NotImplementedError

    def finish(self, context, run: BackgroundRun) -> set[str]:
        raise NotImplementedError

    def show(self, context, run: BackgroundRun) -> None:
        pass

    def execute(self, context):
        run = self.make_run(context)
        if run is None:
            return {"CANCELLED"}
        run.run_here()
        self.show(context, run)
        return self.finish(context, run)

    def invoke(self, context, event):
        global _active
        if bpy.app.background:
            return self.execute(context)
        run = self.make_run(context)
        if run is None:
            return {"CANCELLED"}
        _active = run.start()
        self.show(context, run)
        self._timer = context.window_manager.event_timer_add(TIMER_SECONDS, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        global _active
        run = _active
        if event.type == "ESC" and event.value == "PRESS":
            run.cancel()
        elif event.type != "TIMER":
            return {"PASS_THROUGH"}  # Blender stays usable while the work goes on elsewhere
        if run.step() == JobState.RUNNING:
            self.show(context, run)
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        _active = None
        self.show(context, run)
        return self.finish(context, run)
