"""``python -m model serve``: the worker process (protocol in `model.link.protocol`).

It loads the checkpoint once, binds 127.0.0.1 only (never a public interface: the port
is reachable by every local user, the token is what keeps them out), writes its session
file (`model.link.session`), prints one ready line on stdout,

    {"event": "ready", "pid": 1234, "port": 41234, "session": "/run/user/1000/captalk/worker-....json"}

and serves until asked to stop, until every process attached to it has exited (the
Blender sessions using it: it never outlives them), or until SIGTERM / SIGINT.

Requests are checked when they arrive (audio decoded and resampled, captions, rig,
options), so a bad one is refused at once with a message for the user and never queued.
"""
from __future__ import annotations

import fcntl
import hmac
import json
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..core.audio import MOTION_FPS
from ..core.contract import GenerationRequest
from ..core.errors import BadInput, MissingPart
from ..link.processes import alive, start_time
from ..link.protocol import PROTOCOL_VERSION, TOKEN_HEADER, JobState, Limits, RequestError, addon_version, \
    encode_motion, request_from_json
from ..link.session import Session, new_token, remove_session, session_path, write_session
from ..run import PreparedRequest, check_rig, prepare_request, run_prepared
from .jobs import JobQueue

LOOPBACK = "127.0.0.1"
MAX_EVENT_WAIT = 30.0  # seconds a long poll may hold a connection
OWNER_POLL = 1.0  # seconds between checks that attached processes still live


class WorkerStartError(MissingPart):
    """The worker cannot start (another holds its session, or the model cannot load)."""


@dataclass(frozen=True)
class ServerConfig:
    checkpoint: Path | None = None  # None: the bundled default
    device: str = "auto"  # auto, cpu or cuda
    port: int = 0  # 0: a free port chosen by the system
    session_file: Path | None = None  # None: `session_path(checkpoint, device)`
    limits: Limits = field(default_factory=Limits)
    owners: tuple[int, ...] = ()  # exit when all of these processes have exited
    threads: int = 0  # torch CPU threads; 0: torch's default


class Worker:
    """The loaded model, its job queue and the HTTP server in front of them."""

    def __init__(self, config: ServerConfig, generator, session_file: Path):
        self.config, self.generator, self.session_file = config, generator, session_file
        self.token = new_token()
        self.started = time.time()
        self.jobs = JobQueue(self._work)
        self.httpd = ThreadingHTTPServer((LOOPBACK, config.port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.worker = self
        self._owners: dict[int, float | None] = {pid: start_time(pid) for pid in config.owners}
        self._had_owners = bool(self._owners)
        self._owners_lock = threading.Lock()
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    # ------------------------------------------------------------------ life
    def run(self) -> None:
        """Write the session file, announce readiness, serve until stopped."""
        checkpoint = str(self.generator.folder)
        write_session(self.session_file, Session(os.getpid(), self.port, self.token, checkpoint, self.config.device,
                                                 addon_version(), PROTOCOL_VERSION))
        threading.Thread(target=self._watch_owners, name="captalk-owners", daemon=True).start()
        print(json.dumps({"event": "ready", "pid": os.getpid(), "port": self.port, "session": str(self.session_file),
                          "device": str(self.generator.device), "checkpoint": checkpoint}), flush=True)
        try:
            self.httpd.serve_forever(poll_interval=0.2)
        finally:
            remove_session(self.session_file, os.getpid())
            self.jobs.stop()
            self.httpd.server_close()

    def stop(self, reason: str) -> None:
        """Stop serving (from any thread but the serving one)."""
        if not self._stopping.is_set():
            self._stopping.set()
            print(f"captalk worker: stopping ({reason})", file=sys.stderr, flush=True)
            threading.Thread(target=self.httpd.shutdown, daemon=True).start()

    def owners(self) -> list[int]:
        with self._owners_lock:
            return sorted(self._owners)

    def attach(self, pid: int) -> None:
        if not alive(pid):
            raise RequestError(f"process {pid} does not exist")
        with self._owners_lock:
            self._owners[pid] = start_time(pid)
            self._had_owners = True

    def detach(self, pid: int) -> None:
        with self._owners_lock:
            self._owners.pop(pid, None)
            left = bool(self._owners)
        if not left and self._had_owners:
            self.stop(f"process {pid} detached and no other is attached")

    def _watch_owners(self) -> None:
        while not self._stopping.wait(OWNER_POLL):
            with self._owners_lock:
                for pid, start in list(self._owners.items()):
                    if not alive(pid, start):
                        del self._owners[pid]
                left = bool(self._owners)
            if self._had_owners and not left:
                self.stop("every process using it has exited")

    # ------------------------------------------------------------------ requests
    def health(self) -> dict:
        generator = self.generator
        running = self.jobs.running()
        return {"ok": True, "version": addon_version(), "protocol": PROTOCOL_VERSION, "pid": os.getpid(),
                "device": str(generator.device), "half": bool(generator.half), "checkpoint": str(generator.folder),
                "head_model": generator.manifest.get("head_model"), "channels": list(generator.channels),
                "fps": MOTION_FPS, "jobs": self.jobs.counts(), "running": running.client if running else None,
                "uptime_s": round(time.time() - self.started, 1), "memory": _memory(generator.device),
                "owners": self.owners(), "limits": self.config.limits.__dict__}

    def check(self, request: GenerationRequest) -> PreparedRequest:
        """Everything that can be refused before queueing (audio, schedule, rig): a
        `BadInput` with the reason, answered with 400."""
        prepared = prepare_request(request, self.config.limits.max_audio_seconds)
        check_rig(request, self.generator.manifest)
        return prepared

    def _work(self, job, progress) -> list[dict]:
        takes = run_prepared(self.generator, job.payload, progress=progress, cancel=job.cancel)
        return [encode_motion(take) for take in takes]


class _Handler(BaseHTTPRequestHandler):
    server_version = "CapTalkWorker"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass  # one line per poll would bury the worker's own messages

    @property
    def worker(self) -> Worker:
        return self.server.worker

    def _dispatch(self, method: str) -> None:
        try:
            self._check_token()
            url = urlsplit(self.path)
            parts = [p for p in url.path.split("/") if p]
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            status, body = self._route(method, parts, query)
        except RequestError as exc:
            status, body = exc.status, {"error": str(exc)}
        except BadInput as exc:  # a request that cannot be carried out: the message is for the user
            status, body = 400, {"error": str(exc)}
        except KeyError:
            status, body = 404, {"error": "no such job (unknown id, or its result was already taken)"}
        except Exception as exc:  # a bug: answer it, keep serving
            traceback.print_exc(file=sys.stderr)
            status, body = 500, {"error": f"internal error in the worker: {type(exc).__name__}: {exc}"}
        self._send(status, body)

    def _check_token(self) -> None:
        given = self.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.worker.token.encode()):
            self.close_connection = True
            raise RequestError("missing or wrong session token: only the user who started this CapTalk worker, "
                               "reading its session file, may use it", 401)

    def _route(self, method: str, parts: list[str], query: dict) -> tuple[int, dict]:
        worker, jobs = self.worker, self.worker.jobs
        if method == "GET" and parts == ["health"]:
            return 200, worker.health()
        if method == "POST" and parts == ["jobs"]:
            request = request_from_json(self._read_json())
            job, ahead = jobs.submit(worker.check(request), client=request.client)
            return 202, {"job": job.id, "ahead": ahead}
        if len(parts) == 3 and parts[0] == "jobs":
            job_id, action = parts[1], parts[2]
            if method == "GET" and action == "events":
                after, wait = _number(query, "after", 0, int), min(_number(query, "wait", 0.0, float), MAX_EVENT_WAIT)
                events, state = jobs.events(job_id, after, wait)
                return 200, {"state": state, "events": [e.to_json() for e in events]}
            if method == "GET" and action == "result":
                job = jobs.get(job_id)
                if not job.state.finished:
                    raise RequestError(f"job {job_id} is still {job.state.value}", 409)
                job = jobs.take_result(job_id)
                if job.state != JobState.DONE:
                    return 200, {"state": job.state, "error": job.error, "failure": job.failure}
                return 200, {"state": job.state, "takes": job.result}
            if method == "POST" and action == "cancel":
                return 200, {"state": jobs.cancel(job_id).state}
        if method == "POST" and parts in (["attach"], ["detach"]):
            pid = self._read_json().get("pid")
            if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
                raise RequestError("pid must be a positive integer")
            (worker.attach if parts == ["attach"] else worker.detach)(pid)
            return 200, {"owners": worker.owners()}
        if method == "POST" and parts == ["shutdown"]:
            worker.stop("asked to by a client")
            return 200, {"stopping": True}
        raise RequestError(f"no such request: {method} /{'/'.join(parts)}", 404)

    def _read_json(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError("a request body needs a Content-Length", 411)
        try:
            length = int(length)
        except ValueError:
            raise RequestError("Content-Length is not a number") from None
        limit = self.worker.config.limits.max_body_bytes
        if length > limit:
            self.close_connection = True  # the body is never read
            raise RequestError(f"the request body has {length / 2**20:.1f} MB; the worker's limit is "
                               f"{limit / 2**20:.1f} MB (send a path to the audio instead of its bytes)", 413)
        try:
            return json.loads(self.rfile.read(length) or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(f"the request body is not JSON ({exc})") from None

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away; nothing to tell it


def _number(query: dict, key: str, default, kind):
    try:
        return kind(query.get(key, default))
    except ValueError:
        raise RequestError(f"{key} must be a number") from None


def _memory(device) -> dict:
    """Resident memory now and at its peak (MB), and CUDA's peak allocation on a GPU."""
    from ..machine import process_memory_mb

    memory = process_memory_mb()
    if getattr(device, "type", "") == "cuda":
        import torch

        memory["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return memory


def _warm_up(generator) -> None:
    """The encoders' weights, off the start-up path; a failure here is raised again (to the
    job) by the first job's own warm-up, so it is only noted on stderr."""
    try:
        generator.warm_up()
    except Exception as exc:  # noqa: BLE001 (reported to the job that needs the encoders)
        print(f"captalk worker: warming up the encoders failed: {exc}", file=sys.stderr, flush=True)


def serve(config: ServerConfig) -> None:
    """Run a worker until it is stopped. Raises `WorkerStartError` (or the model's own
    errors: `CheckpointError`...) when it cannot start."""
    from ..generate import Generator
    from ..core.paths import default_checkpoint_dir

    checkpoint = config.checkpoint or default_checkpoint_dir()
    session_file = config.session_file or session_path(checkpoint, config.device)
    lock = open(f"{session_file}.lock", "a")  # noqa: SIM115 (held for the worker's life)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise WorkerStartError(f"a worker for this checkpoint and device is already running or starting "
                               f"(session file {session_file})") from None
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    # answer /health and queue jobs while the encoders load: the first job waits for them
    generator = Generator.load(config.checkpoint, device=config.device, warm_up=False)
    threading.Thread(target=_warm_up, args=(generator,), name="captalk-warm-up", daemon=True).start()
    worker = Worker(config, generator, session_file)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop("signal"))
    try:
        worker.run()
    finally:
        lock.close()
