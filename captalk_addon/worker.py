"""The add-on's side of the back-end worker: which worker to use, and generation jobs that
run off Blender's main thread.

Blender is never blocked: a `GenerationTask` starts (or reuses) the worker and follows
its job on a thread of its own; everything it learns goes into a queue that the
operator drains on the main thread (`GenerationTask.poll`, from a timer), where bpy may
be touched. Torch never loads here: the worker is another process
(`model.serve`); this module needs only the stdlib, numpy and bpy's preferences.
"""
from __future__ import annotations

import atexit
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

from ..model.core.contract import GenerationRequest
from ..model.core.errors import BackendFailure, CapTalkError, Cancelled
from ..model.core.motion_file import MotionClip
from ..model.link.client import WorkerClient, WorkerError, WorkerGone
from ..model.link.launch import WorkerSpec, ensure_worker
from .backend_process import backend_python
from .paths import EXTENSION_ROOT
from .preferences import get_preferences

# Workers this Blender attached to: detached at exit, so a worker shared with another
# Blender session lives on, and one used by no one exits.
_attached: dict[Path, WorkerClient] = {}
_attached_lock = threading.Lock()


def worker_spec(context=None) -> WorkerSpec:
    """The worker the preferences ask for: interpreter, checkpoint folder, device."""
    prefs = get_preferences(context)
    checkpoint = prefs.checkpoint_dir.strip() if prefs else ""
    return WorkerSpec(python=backend_python(context), checkpoint=Path(checkpoint) if checkpoint else None,
                      device=(prefs.device if prefs else "AUTO").lower(), source_root=EXTENSION_ROOT)


def get_worker(spec: WorkerSpec) -> WorkerClient:
    """A client of a live worker for ``spec``: reused, started, or restarted if it died."""
    client = ensure_worker(spec)
    with _attached_lock:
        _attached[spec.session_file] = client
    return client


def release_workers() -> None:
    """Detach this Blender from every worker it used (each exits when no one is left)."""
    with _attached_lock:
        clients = list(_attached.values())
        _attached.clear()
    for client in clients:
        try:
            client.detach(os.getpid())
        except WorkerError:
            pass  # already gone


atexit.register(release_workers)


def backend_line(health: dict) -> str:
    """The panel's line about the worker, from its /health."""
    if not health.get("loaded", True):
        return f"Back end: loading the model (pid {health['pid']})"
    return f"Back end: {health['device']}{' fp16' if health['half'] else ''} (pid {health['pid']})"


@dataclass(frozen=True)
class Progress:
    fraction: float
    message: str


@dataclass(frozen=True)
class Finished:
    takes: list[MotionClip]


@dataclass(frozen=True)
class Failed:
    error: CapTalkError  # its class says what the user must do (`model.core.errors`)

    @property
    def message(self) -> str:
        return str(self.error)

    @property
    def cancelled(self) -> bool:
        return isinstance(self.error, Cancelled)


class GenerationTask:
    """One generation request followed on a thread: poll() returns what happened since.

    A worker that dies mid-job (killed, or its last other user exited) is restarted and
    the request sent again, once; a second loss is reported as a failure.
    """

    def __init__(self, spec: WorkerSpec, request: GenerationRequest):
        self.spec, self.request = spec, request
        self.messages: queue.Queue = queue.Queue()
        self.cancel_event = threading.Event()
        self.backend = ""  # the worker's device and pid, once connected
        self.thread = threading.Thread(target=self._run, name="captalk-generate", daemon=True)

    def start(self) -> "GenerationTask":
        self.thread.start()
        return self

    def cancel(self) -> None:
        self.cancel_event.set()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the task to end (after `cancel`: until the worker has
        been told and has stopped); True if it ended."""
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def poll(self) -> list:
        """Everything reported since the last call (`Progress`, then one `Finished` or `Failed`)."""
        items = []
        while True:
            try:
                items.append(self.messages.get_nowait())
            except queue.Empty:
                return items

    def _run(self) -> None:
        progress = lambda fraction, message: self.messages.put(Progress(fraction, message))  # noqa: E731
        for attempt in (1, 2):
            try:
                progress(0.0, "starting the back end" if attempt == 1 else "the back end stopped; restarting it")
                client = get_worker(self.spec)
                self.backend = backend_line(client.health())
                takes = client.generate(self.request, progress, self.cancel_event)
                try:  # the device is resolved once the model is loaded
                    self.backend = backend_line(client.health())
                except WorkerError:
                    pass  # the motion is here; the line keeps what it said
            except WorkerGone as exc:
                if attempt == 1 and not self.cancel_event.is_set():
                    continue
                self.messages.put(Failed(exc))
            except CapTalkError as exc:  # cancelled, refused, no worker, a failed job: the message says which
                self.messages.put(Failed(exc))
            except Exception as exc:  # never leave the operator waiting for a message
                self.messages.put(Failed(BackendFailure(f"unexpected error talking to the back end: "
                                                        f"{type(exc).__name__}: {exc}")))
            else:
                self.messages.put(Finished(takes))
            return
