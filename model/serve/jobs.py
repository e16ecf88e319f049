"""The worker's job queue: jobs run one at a time, in the order they came, on one thread.

One model, one thread: two jobs at once would only share the same cores (and GPU) and
finish no sooner, and the model's buffers are not made for concurrent use. Jobs from
different clients are kept apart by their ids (random, unguessable), never by order.

A job's life: queued -> running -> done | failed | cancelled (queued -> cancelled when
cancelled before it starts). Each change and each progress report is an `Event` with a
sequence number, so a client polling with ``after=seq`` never misses or repeats one.
Finished jobs are kept until their result is taken or `KEEP_FINISHED` newer jobs have
finished, whichever comes first; a job's payload (its audio) is dropped as soon as it
finishes. The queue is bounded: at most `MAX_PENDING` jobs and `MAX_PENDING_BYTES` of
payload wait or run at once; a submit beyond that is refused (`QueueFull`, HTTP 429).
"""
from __future__ import annotations

import collections
import secrets
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from ..core.errors import CapTalkError
from ..link.protocol import FailureKind, JobState, RequestError

KEEP_FINISHED = 32
MAX_PENDING = 64  # jobs queued or running
MAX_PENDING_BYTES = 2**30  # their payloads together: about 4.6 hours of 16 kHz float32 audio


class QueueFull(RequestError):
    """More work was submitted than the queue holds (HTTP 429); the message says to wait."""

    def __init__(self, message: str):
        super().__init__(message, 429)


@dataclass(frozen=True)
class Event:
    seq: int
    state: JobState
    fraction: float
    message: str

    def to_json(self) -> dict:
        return {"seq": self.seq, "state": self.state, "fraction": round(self.fraction, 4), "message": self.message}


@dataclass
class Job:
    id: str
    payload: Any  # what the work function gets (the checked request)
    client: str
    created: float = field(default_factory=time.time)
    state: JobState = JobState.QUEUED
    events: list[Event] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: str = ""
    failure: FailureKind | None = None  # why it failed or was cancelled
    size: int = 0  # bytes the payload holds, counted against MAX_PENDING_BYTES until it finishes


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim; elsewhere a
    no-op). A job's buffers are freed when it ends, but glibc keeps freed small blocks in
    its per-thread arenas, so a long-lived worker's resident memory would only ever grow
    to the largest job's level instead of returning to its idle level."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


# work(job, progress) -> result; progress(fraction, message) reports; it checks job.cancel and
# raises model.core.errors.Cancelled when it is set, BadInput for a request it cannot carry out
Work = Callable[[Job, Callable[[float, str], None]], Any]


class JobQueue:
    def __init__(self, work: Work, max_pending: int = MAX_PENDING, max_pending_bytes: int = MAX_PENDING_BYTES):
        self._work = work
        self.max_pending, self.max_pending_bytes = max_pending, max_pending_bytes
        self._pending_bytes = 0  # sizes of the queued and running jobs
        self._jobs: dict[str, Job] = {}
        self._pending: collections.deque[Job] = collections.deque()
        self._finished: collections.deque[str] = collections.deque()
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="captalk-jobs", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ clients' side
    def submit(self, payload: Any, client: str = "", size: int = 0) -> tuple[Job, int]:
        """Queue a job (``size``: bytes its payload holds); returns it and how many jobs run
        or wait before it. `QueueFull` when the queue's bounds would be passed."""
        with self._changed:
            if self._stopping:
                raise RequestError("the worker is shutting down; send the request again (a new worker starts)", 503)
            ahead = len(self._pending) + (1 if self.running() else 0)
            if ahead >= self.max_pending:
                raise QueueFull(f"{ahead} jobs are queued or running, the most the worker takes; submit again "
                                "when one has finished")
            if ahead and self._pending_bytes + size > self.max_pending_bytes:
                raise QueueFull(f"the queued jobs hold {self._pending_bytes / 2**20:.0f} MB of audio and this one "
                                f"{size / 2**20:.0f} MB, more than the worker's {self.max_pending_bytes / 2**20:.0f} "
                                "MB; submit again when one has finished")
            job = Job(id=secrets.token_hex(16), payload=payload, client=client, size=size)
            self._pending_bytes += size
            self._jobs[job.id] = job
            self._pending.append(job)
            self._add_event(job, 0.0, f"queued ({ahead} job{'s' if ahead != 1 else ''} ahead)")
            return job, ahead

    def get(self, job_id: str) -> Job:
        """The job (KeyError if unknown or forgotten)."""
        with self._changed:
            return self._jobs[job_id]

    def events(self, job_id: str, after: int = 0, wait: float = 0.0) -> tuple[list[Event], JobState]:
        """Events with seq > ``after``, waiting up to ``wait`` s for one; and the job's state."""
        deadline = time.monotonic() + wait
        with self._changed:
            job = self._jobs[job_id]
            while True:
                new = [e for e in job.events if e.seq > after]
                left = deadline - time.monotonic()
                if new or job.state.finished or left <= 0:
                    return new, job.state
                self._changed.wait(left)

    def take_result(self, job_id: str) -> Job:
        """The finished job, forgotten after this (KeyError if unknown; the caller checks state)."""
        with self._changed:
            job = self._jobs[job_id]
            if job.state.finished:
                del self._jobs[job_id]
            return job

    def cancel(self, job_id: str) -> Job:
        with self._changed:
            job = self._jobs[job_id]
            if job.state == JobState.QUEUED:
                self._pending.remove(job)
                self._finish(job, FailureKind.CANCELLED, "cancelled before it started")
            elif job.state == JobState.RUNNING:
                job.cancel.set()
            return job

    def running(self) -> Job | None:
        with self._changed:
            return next((j for j in self._jobs.values() if j.state == JobState.RUNNING), None)

    def counts(self) -> dict:
        with self._changed:
            states = collections.Counter(j.state for j in self._jobs.values())
            return {state.value: states.get(state, 0) for state in JobState}

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel everything and wait for the running job to stop."""
        with self._changed:
            self._stopping = True
            while self._pending:
                self._finish(self._pending.popleft(), FailureKind.CANCELLED, "the worker shut down")
            for job in self._jobs.values():
                job.cancel.set()
            self._changed.notify_all()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the runner thread
    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._stopping:
                    self._changed.wait()
                if self._stopping:
                    return
                job = self._pending.popleft()
                job.state = JobState.RUNNING
                self._add_event(job, 0.0, "started")
            self._execute(job)

    def _execute(self, job: Job) -> None:
        def progress(fraction: float, message: str) -> None:
            with self._changed:
                self._add_event(job, fraction, message)

        try:
            result = self._work(job, progress)
        except CapTalkError as exc:  # cancelled, or a request that cannot be carried out: the message says why
            failure, message, result = FailureKind.of(exc), str(exc) or "cancelled", None
        except Exception as exc:  # a bug: report it, keep serving
            traceback.print_exc(file=sys.stderr)
            failure, message, result = FailureKind.ERROR, f"internal error in the worker: {type(exc).__name__}: {exc}", None
        else:
            failure, message = None, "result ready"
        with self._changed:
            job.result = result
            self._finish(job, failure, message)
        del result
        release_free_memory()

    def _finish(self, job: Job, failure: FailureKind | None, message: str) -> None:
        """(lock held) Record the end of ``job`` (``failure`` None: done) and forget the
        oldest finished jobs."""
        job.failure = failure
        job.state = JobState.DONE if failure is None else \
            JobState.CANCELLED if failure == FailureKind.CANCELLED else JobState.FAILED
        job.error = "" if failure is None else message
        job.payload = None  # the audio is not needed any more: free it now, not when the job is forgotten
        self._pending_bytes -= job.size
        job.size = 0
        self._add_event(job, 1.0 if failure is None else (job.events[-1].fraction if job.events else 0.0), message)
        self._finished.append(job.id)
        while len(self._finished) > KEEP_FINISHED:
            self._jobs.pop(self._finished.popleft(), None)

    def _add_event(self, job: Job, fraction: float, message: str) -> None:
        """(lock held) Append an event and wake waiting clients."""
        job.events.append(Event(len(job.events) + 1, job.state, float(fraction), message))
        self._changed.notify_all()
