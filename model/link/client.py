"""A client of one worker (stdlib + numpy: the add-on uses it inside Blender).

    client = WorkerClient(session)                      # from model.link.launch.ensure_worker
    clips = client.generate(request, on_progress=print, cancel=threading.Event())
    clips[0].motion                                     # (T, C) float32, clips[0].channels, .fps

Each call opens its own connection, so one client may be used from several threads.
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
from typing import Any, Callable

from ..core.contract import GenerationRequest
from ..core.errors import BackendFailure, Cancelled
from ..core.motion_file import MotionClip
from .protocol import TOKEN_HEADER, FailureKind, JobState, RequestError, decode_motion, request_to_json
from .session import Session

EVENT_WAIT = 2.0  # seconds a progress poll waits on the worker: short, so cancel is quick


class WorkerError(BackendFailure):
    """The worker failed unexpectedly; the message is for the user. (A request it refuses
    raises `model.link.protocol.RequestError`, a job that fails on bad input `BadInput`.)"""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class WorkerGone(WorkerError):
    """The worker cannot be reached (it exited or was killed)."""


class JobCancelledError(Cancelled):
    """The job was cancelled (by this client or another)."""


class WorkerClient:
    def __init__(self, session: Session, timeout: float = 60.0):
        self.session, self.timeout = session, timeout
        self._max_body: int | None = None

    # ------------------------------------------------------------------ requests
    def health(self) -> dict:
        return self._call("GET", "/health")

    def submit(self, request: GenerationRequest) -> tuple[str, int]:
        """Queue a generation; (job id, jobs ahead of it). Refusals raise `WorkerError`."""
        if self._max_body is None:
            self._max_body = int(self.health()["limits"]["max_body_bytes"])
        data = json.dumps(request_to_json(request)).encode()
        size = len(data)
        if size > self._max_body:  # refused here: the worker would close the connection mid-upload
            raise RequestError(f"the request has {size / 2**20:.1f} MB; the worker's limit is "
                              f"{self._max_body / 2**20:.1f} MB (send a path to the audio instead of its bytes)", 413)
        reply = self._call("POST", "/jobs", data=data)
        return reply["job"], reply["ahead"]

    def events(self, job_id: str, after: int = 0, wait: float = EVENT_WAIT) -> tuple[list[dict], JobState]:
        reply = self._call("GET", f"/jobs/{job_id}/events?after={after}&wait={wait}", timeout=self.timeout + wait)
        return reply["events"], JobState(reply["state"])

    def result(self, job_id: str) -> list[MotionClip]:
        """The takes of a finished job (taken: a second call is a 404). A job that failed
        raises its error: `JobCancelledError`, `BadInput` or `WorkerError`."""
        reply = self._call("GET", f"/jobs/{job_id}/result")
        state = JobState(reply["state"])
        if state == JobState.CANCELLED:
            raise JobCancelledError(reply.get("error") or "cancelled")
        if state != JobState.DONE:
            failure = FailureKind(reply.get("failure") or FailureKind.ERROR)
            message = reply.get("error") or f"the job {state.value}"
            raise WorkerError(message) if failure == FailureKind.ERROR else failure.error(message)
        return [decode_motion(take) for take in reply["takes"]]

    def cancel(self, job_id: str) -> str:
        return self._call("POST", f"/jobs/{job_id}/cancel", {})["state"]

    def attach(self, pid: int) -> None:
        self._call("POST", "/attach", {"pid": pid})

    def detach(self, pid: int) -> None:
        self._call("POST", "/detach", {"pid": pid})

    def shutdown(self) -> None:
        self._call("POST", "/shutdown", {})

    # ------------------------------------------------------------------ a whole job
    def generate(self, request: GenerationRequest, on_progress: Callable[[float, str], None] | None = None,
                 cancel: threading.Event | None = None) -> list[MotionClip]:
        """Submit, follow progress, return the takes. Setting ``cancel`` cancels the job on
        the worker and raises `JobCancelledError` once it has stopped."""
        job_id, _ = self.submit(request)
        after, cancel_sent = 0, False
        while True:
            if cancel is not None and cancel.is_set() and not cancel_sent:
                self.cancel(job_id)
                cancel_sent = True
            events, state = self.events(job_id, after)
            for event in events:
                after = event["seq"]
                if on_progress is not None:
                    on_progress(event["fraction"], event["message"])
            if state.finished:
                return self.result(job_id)

    # ------------------------------------------------------------------ transport
    def _call(self, method: str, path: str, body: Any = None, timeout: float | None = None,
              data: bytes | None = None) -> dict:
        """One request; ``body`` is sent as JSON (or ``data``, already encoded)."""
        if body is not None:
            data = json.dumps(body).encode()
        connection = http.client.HTTPConnection("127.0.0.1", self.session.port, timeout=timeout or self.timeout)
        try:
            headers = {TOKEN_HEADER: self.session.token}
            if data is not None:
                headers["Content-Type"] = "application/json"
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            status, raw = response.status, response.read()
        except (ConnectionError, socket.timeout, http.client.HTTPException, OSError) as exc:
            raise WorkerGone(f"the CapTalk worker (pid {self.session.pid}, port {self.session.port}) does not "
                             f"answer: {exc}") from None
        finally:
            connection.close()
        try:
            reply = json.loads(raw)
        except ValueError:
            raise WorkerError(f"the worker answered {status} with something that is not JSON", status) from None
        if status >= 400:
            message = reply.get("error", f"the worker answered {status}")
            if status in (400, 411, 413):  # the request was refused: the message says what is wrong with it
                raise RequestError(message, status)
            raise WorkerError(message, status)
        return reply
