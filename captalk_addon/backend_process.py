"""Run back-end commands (`python -m model ...`) in their own process.

Torch never loads into Blender's process: anything that needs it runs through here,
with the interpreter the user (or set-up) chose.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..model.link.launch import explain_failure
from ..model.link.protocol import JobState
from .background import BackgroundRun
from .paths import EXTENSION_ROOT, setup_backend_python
from .preferences import get_preferences
from ..model.core.errors import BackendFailure


class BackendError(BackendFailure):
    """The back end could not run; the message tells the user what to do."""


def backend_python(context=None) -> str:
    """Preferences, then $CAPTALK_BACKEND_PYTHON, then set-up's record, then this Python."""
    prefs = get_preferences(context)
    for candidate in (
        prefs.backend_python if prefs else "",
        os.environ.get("CAPTALK_BACKEND_PYTHON", ""),
        setup_backend_python(),
    ):
        if candidate:
            return candidate
    return sys.executable


class BackendCommand:
    """One back-end command running in a child process; poll it from a timer."""

    def __init__(self, args: list[str], python: str):
        if not Path(python).is_file():
            raise BackendError(
                f"Back-end Python not found at '{python}'. Run CapTalk's set-up (see its README) "
                "or choose the interpreter in Preferences > Add-ons > CapTalk."
            )
        env = dict(os.environ, PYTHONPATH=str(EXTENSION_ROOT), PYTHONUNBUFFERED="1")
        self.args, self.python = args, python
        self.process = subprocess.Popen(
            [python, "-m", "model", *args],
            cwd=EXTENSION_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def poll(self) -> int | None:
        return self.process.poll()

    def finish(self) -> str:
        """Wait for the end; return its output or raise BackendError with its last lines."""
        output, _ = self.process.communicate()
        if self.process.returncode != 0:
            raise BackendError(explain_failure(output, self.process.returncode, self.python))
        return output

    def cancel(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class CommandRun(BackgroundRun):
    """A back-end command as a `BackgroundRun`: done when it exits 0 (``output`` then holds
    what it printed), failed with its explanation otherwise."""

    def __init__(self, args: list[str], python: str, message: str):
        super().__init__(message)
        self.args, self.python = args, python
        self.command: BackendCommand | None = None
        self.output = ""

    def start(self) -> "CommandRun":
        try:
            self.command = BackendCommand(self.args, self.python)
        except BackendError as exc:
            self.fail(exc)
        return self

    def step(self) -> JobState:
        if self.state == JobState.RUNNING and self.command.poll() is not None:
            try:
                self.output = self.command.finish()
                self.state, self.fraction = JobState.DONE, 1.0
            except BackendError as exc:
                self.fail(exc)
        return self.state

    def cancel(self) -> None:
        if self.command is not None:
            self.command.cancel()
        self.state = JobState.CANCELLED
