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

import errno
import fcntl
import hmac
import json
import math
import os
import re
import signal
import socket
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
from ..link.processes import alive, owner_uid, start_time
from ..link.protocol import PROTOCOL_VERSION, TOKEN_HEADER, JobState, Limits, RequestError, addon_version, \
    encode_motion, request_from_json
from ..link.session import Session, new_token, remove_session, session_path, write_session
from ..run import PreparedRequest, _user_name, check_rig, prepare_request, run_prepared
from .jobs import JobQueue
from .loading import ModelLoader, check_modules_present

LOOPBACK = "127.0.0.1"
MAX_EVENT_WAIT = 30.0  # seconds a long poll may hold a connection
OWNER_POLL = 1.0  # seconds between checks that attached processes still live
MAX_OWNERS = 64  # processes attached at once (Blender sessions)
PID_MAX = 2**22  # Linux's largest possible pid (pid_max's ceiling)

# Connections (see `_Connections`): the token is only checked once a request's headers
# are in, so everything before that is bounded without it.
MAX_CONNECTIONS = 128  # open at once; more: the oldest still sending its headers is closed
OWN_DESCRIPTORS = 64  # kept free of connections for the worker's own files (model, audio, /proc)
REQUEST_TIMEOUT = 10.0  # seconds from connecting to the end of the headers (slowloris)
MIN_TRANSFER_RATE = 8 * 2**20  # bytes/s a body or an answer must at least move at, on top of REQUEST_TIMEOUT
SOCKET_TIMEOUT = 30.0  # seconds one read or write may stall
SMALL_BODY = 64 * 2**10  # bytes: the largest body of a request other than POST /jobs
FAILED_LINGER_S = 10.0  # seconds a worker whose model failed to load still answers about its jobs
INTAKE_WAIT = 60.0  # seconds a submit waits while others are being read and checked, then 503


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

    def __init__(self, config: ServerConfig, checkpoint: Path, manifest: dict, loader: ModelLoader,
                 session_file: Path):
        self.config, self.checkpoint, self.manifest, self.loader = config, checkpoint, manifest, loader
        self.session_file = session_file
        self.token = new_token()
        self.started = time.time()
        self.jobs = JobQueue(self._work)
        self.httpd = _Server((LOOPBACK, config.port), self)
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
        checkpoint = str(self.checkpoint)
        write_session(self.session_file, Session(os.getpid(), self.port, self.token, checkpoint, self.config.device,
                                                 addon_version(), PROTOCOL_VERSION))
        threading.Thread(target=self._watch_owners, name="captalk-owners", daemon=True).start()
        print(json.dumps({"event": "ready", "pid": os.getpid(), "port": self.port, "session": str(self.session_file),
                          "device": self.config.device, "checkpoint": checkpoint}), flush=True)
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
        """Keep running while process ``pid`` lives. Only a process of the user running the
        worker may be attached, and never pid 1 (init: it never exits) or the worker itself;
        a client that attaches such a process would keep the worker alive forever."""
        if pid == 1 or pid == os.getpid():
            raise RequestError(f"process {pid} is {'init' if pid == 1 else 'the worker itself'}, which never exits "
                               "before the worker: attach the Blender process that uses the worker")
        if not alive(pid):
            raise RequestError(f"process {pid} does not exist")
        if owner_uid(pid) != os.getuid():
            raise RequestError(f"process {pid} belongs to another user; only processes of the user running the "
                               f"worker ({_user_name()}) may keep it alive")
        with self._owners_lock:
            if pid not in self._owners and len(self._owners) >= MAX_OWNERS:
                raise RequestError(f"{MAX_OWNERS} processes are attached already; detach one first", 429)
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
        """The worker's state. Until the model is loaded (``loaded``), ``device`` is the one
        asked for (``auto`` not yet resolved) and ``half`` false; ``error`` says why a load
        failed (the worker then refuses jobs and exits soon)."""
        loader, running = self.loader, self.jobs.running()
        generator = loader.generator if loader.loaded else None
        device = generator.device if generator is not None else None
        return {"ok": True, "version": addon_version(), "protocol": PROTOCOL_VERSION, "pid": os.getpid(),
                "device": str(device or self.config.device), "half": bool(generator is not None and generator.half),
                "checkpoint": str(self.checkpoint), "head_model": self.manifest.get("head_model"),
                "channels": list(self.manifest.get("channels", [])), "fps": MOTION_FPS, "jobs": self.jobs.counts(),
                "running": running.client if running else None, "uptime_s": round(time.time() - self.started, 1),
                "memory": _memory(device), "owners": self.owners(), "limits": self.config.limits.__dict__,
                "loaded": loader.loaded, "load_s": loader.load_s,
                "error": str(loader.error) if loader.error is not None else None,
                "warm": loader.warm}  # False while the model or its encoders still load in the background

    def check(self, request: GenerationRequest) -> PreparedRequest:
        """Everything that can be refused before queueing (audio, schedule, rig): a
        `BadInput` with the reason, answered with 400; 503 once the model failed to load."""
        if self.loader.error is not None:
            raise RequestError(f"the worker could not load its model ({self.loader.error}); it is stopping, "
                               "and the next request starts a fresh one", 503)
        return check_rig(prepare_request(request, self.config.limits.max_audio_seconds), self.manifest)

    def _work(self, job, progress) -> list[dict]:
        if not self.loader.loaded:
            progress(0.0, "loading the model")
        generator = self.loader.wait(job.cancel)
        takes = run_prepared(generator, job.payload, progress=progress, cancel=job.cancel)
        return [encode_motion(take) for take in takes]


@dataclass
class _Connection:
    """One accepted socket; ``deadline`` (monotonic s) while the client has to send or
    take bytes (None while the worker works on the request), ``headers_done`` once the
    request's headers are in (before that it may be evicted for a newcomer)."""

    sock: socket.socket
    opened: float
    deadline: float | None
    headers_done: bool = False
    closed: bool = False


class _Connections:
    """The worker's open connections, bounded in number and in time.

    Every connection must finish sending its headers within REQUEST_TIMEOUT of connecting,
    and a body or an answer must move at MIN_TRANSFER_RATE at least: a connection past
    its deadline is shut down (`reap`, from the serving loop). When MAX_CONNECTIONS are
    open, a newcomer closes the oldest connection still sending its headers (the slowest,
    most likely a stalled or hostile one: a real client sends its request at once), so
    idle or byte-by-byte connections never lock the worker's clients out; when all are
    busy with real requests (long polls), the newcomer is answered 503.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self._open: dict[int, _Connection] = {}
        self._lock = threading.Lock()

    def admit(self, sock: socket.socket) -> bool:
        now = time.monotonic()
        with self._lock:
            live = [c for c in self._open.values() if not c.closed]
            if len(live) >= self.limit:
                waiting = [c for c in live if not c.headers_done]
                if not waiting:
                    return False
                self._close(min(waiting, key=lambda c: c.opened))
            self._open[id(sock)] = _Connection(sock, now, now + REQUEST_TIMEOUT)
            return True

    def evict_waiting(self) -> None:
        """Close the oldest connection still sending its headers, if any (out of descriptors)."""
        with self._lock:
            waiting = [c for c in self._open.values() if not c.closed and not c.headers_done]
            if waiting:
                self._close(min(waiting, key=lambda c: c.opened))

    def get(self, sock: socket.socket) -> _Connection | None:
        with self._lock:
            return self._open.get(id(sock))

    def forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.pop(id(sock), None)

    def count(self) -> int:
        with self._lock:
            return len(self._open)

    def reap(self) -> None:
        """Shut down the connections past their deadline."""
        now = time.monotonic()
        with self._lock:
            for connection in self._open.values():
                if not connection.closed and connection.deadline is not None and now > connection.deadline:
                    self._close(connection)

    @staticmethod
    def _close(connection: _Connection) -> None:
        """(lock held) The handler's blocked read or write returns at once; its thread ends
        and the socket is closed and forgotten there."""
        connection.closed = True
        try:
            connection.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone


_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
         b"Content-Length: 72\r\n\r\n"
         b'{"error": "the worker has too many open connections; try again shortly"}')


def connection_limit() -> int:
    """MAX_CONNECTIONS, or fewer where the descriptor limit would not leave OWN_DESCRIPTORS
    for the worker's own files (a connection is a descriptor). The soft limit is raised to
    the hard one first, as far as MAX_CONNECTIONS needs."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_CONNECTIONS + 2 * OWN_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        except (ValueError, OSError):
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(4, min(MAX_CONNECTIONS, soft - OWN_DESCRIPTORS))


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with bounded connections (`_Connections`): at most
    MAX_CONNECTIONS handler threads, none held by a client that sends nothing."""

    daemon_threads = True
    request_queue_size = MAX_CONNECTIONS  # the listen backlog (socketserver's default is 5)

    def __init__(self, address: tuple[str, int], worker: "Worker"):
        self.worker = worker
        self.connections = _Connections(connection_limit())
        self.intake = threading.Semaphore(1)  # one submitted body read, decoded and checked at a time
        super().__init__(address, _Handler)

    def get_request(self):
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # out of descriptors: free one for the next accept, and don't spin on the
                # listener, which stays readable while the connection waits in the backlog
                self.connections.evict_waiting()
                time.sleep(0.05)
            raise

    def verify_request(self, request, client_address) -> bool:
        if self.connections.admit(request):
            return True
        try:
            request.setblocking(False)
            request.send(_BUSY)  # fits the empty send buffer of a new socket: never blocks
        except OSError:
            pass
        return False

    def shutdown_request(self, request) -> None:
        self.connections.forget(request)
        super().shutdown_request(request)

    def service_actions(self) -> None:  # called by serve_forever at least every poll interval
        self.connections.reap()

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client that went away is no error of ours
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server_version = "CapTalkWorker"
    timeout = SOCKET_TIMEOUT  # per read / write; the whole request is bounded by `_Connections`

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass  # one line per poll would bury the worker's own messages

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, too many or too long headers,
        an unsupported method or HTTP version) as JSON like every other answer."""
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # an unparsable line is no HTTP/0.9 client: answer with a status line
        reason = message or self.responses.get(code, ("error",))[0]
        self._send(code, {"error": f"{reason} (the worker speaks HTTP/1.x with JSON bodies)"})

    @property
    def worker(self) -> Worker:
        return self.server.worker

    def _transfer(self, size: int) -> None:
        """The client now has to send or take ``size`` bytes: set its deadline (None: 0 bytes,
        the worker works on the request)."""
        connection = self.server.connections.get(self.request)
        if connection is not None:
            connection.headers_done = True
            connection.deadline = None if size < 0 else \
                time.monotonic() + REQUEST_TIMEOUT + size / MIN_TRANSFER_RATE

    def _dispatch(self, method: str) -> None:
        self._transfer(-1)
        try:
            self._check_token()
            url = urlsplit(self.path)
            parts = [p for p in url.path.split("/") if p]
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            status, body = self._route(method, parts, query)
        except RequestError as exc:
            status, body = exc.status, {"error": str(exc)}
        except (BadInput, MissingPart) as exc:  # a request that cannot be carried out (a rig without its
            status, body = 400, {"error": str(exc)}  # adapter...): the message is for the user
        except KeyError:
            status, body = 404, {"error": "no such job (unknown id, or its result was already taken)"}
        except Exception as exc:  # a bug: answer it, keep serving
            traceback.print_exc(file=sys.stderr)
            status, body = 500, {"error": f"internal error in the worker: {type(exc).__name__}: {exc}"}
        self._send(status, body)

    def _check_token(self) -> None:
        given = self.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self.worker.token.encode()):
            self.close_connection = True
            raise RequestError("missing or wrong session token: only the user who started this CapTalk worker, "
                               "reading its session file, may use it", 401)

    def _route(self, method: str, parts: list[str], query: dict) -> tuple[int, dict]:
        worker, jobs = self.worker, self.worker.jobs
        if method == "GET" and parts == ["health"]:
            return 200, worker.health()
        if method == "POST" and parts == ["jobs"]:
            return self._submit()
        if len(parts) == 3 and parts[0] == "jobs":
            job_id, action = parts[1], parts[2]
            if method == "GET" and action == "events":
                after = _query_number(query, "after", 0, int)
                wait = min(_query_number(query, "wait", 0.0, float), MAX_EVENT_WAIT)
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
                self._read_json(SMALL_BODY)  # an empty body or {}: read so the client's write completes
                return 200, {"state": jobs.cancel(job_id).state}
        if method == "POST" and parts in (["attach"], ["detach"]):
            body = self._read_json(SMALL_BODY)
            pid = body.get("pid") if isinstance(body, dict) else None
            if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid <= PID_MAX:
                raise RequestError('the body must be {"pid": P}, P the id of a running process (1 to '
                                   f"{PID_MAX})")
            (worker.attach if parts == ["attach"] else worker.detach)(pid)
            return 200, {"owners": worker.owners()}
        if method == "POST" and parts == ["shutdown"]:
            worker.stop("asked to by a client")
            return 200, {"stopping": True}
        raise RequestError(f"no such request: {method} /{'/'.join(parts)}", 404)

    def _submit(self) -> tuple[int, dict]:
        """POST /jobs: one submit at a time is read, decoded and checked (``intake``), so
        concurrent uploads never hold more than one body and one decoded clip at once."""
        length = self._content_length(self.worker.config.limits.max_body_bytes)
        if not self.server.intake.acquire(timeout=INTAKE_WAIT):
            self.close_connection = True
            raise RequestError("the worker is busy reading other requests; try again shortly", 503)
        try:
            request = request_from_json(self._read_json(length=length))
            checked = self.worker.check(request)
            job, ahead = self.worker.jobs.submit(checked, client=request.client, size=_payload_bytes(checked))
        finally:
            self.server.intake.release()
        return 202, {"job": job.id, "ahead": ahead}

    def _content_length(self, limit: int) -> int:
        """The body's announced length, refused unless it is one plain number <= ``limit``."""
        if self.headers.get("Transfer-Encoding") is not None:
            self.close_connection = True
            raise RequestError("chunked request bodies are not accepted; send a Content-Length", 411)
        values = self.headers.get_all("Content-Length") or []
        if not values:
            raise RequestError("a request body needs a Content-Length", 411)
        if len(set(values)) > 1 or not re.fullmatch(r"[0-9]{1,100}", values[0].strip()):
            self.close_connection = True  # the body's end is unknown: never read it
            raise RequestError(f"Content-Length must be one whole number of bytes, got {', '.join(values)[:100]!r}")
        length = int(values[0])
        if length > limit:
            self.close_connection = True  # the body is never read
            raise RequestError(f"the request body has {length / 2**20:.1f} MB; the worker's limit is "
                               f"{limit / 2**20:.1f} MB (send a path to the audio instead of its bytes)", 413)
        return length

    def _read_json(self, limit: int = SMALL_BODY, length: int | None = None) -> Any:
        """The body as strict JSON (no NaN / Infinity, no number beyond a double's range,
        nesting refused past Python's recursion limit): `RequestError` (400) otherwise."""
        if length is None:
            if self.headers.get("Content-Length") is None and self.headers.get("Transfer-Encoding") is None:
                return {}  # no body at all
            length = self._content_length(limit)
        self._transfer(length)
        try:
            data = self.rfile.read(length)
        except OSError:
            data = b""
        self._transfer(-1)
        if len(data) < length:
            self.close_connection = True
            raise RequestError(f"the request body ended after {len(data)} of {length} bytes")
        try:
            return json.loads(data or b"{}", parse_constant=_no_constant, parse_float=_finite_float)
        except RecursionError:
            raise RequestError("the request body is nested too deeply to be a CapTalk request") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(f"the request body is not JSON ({exc})") from None

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self._transfer(len(data))
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client went away (or was too slow to take the answer); nothing to tell it
        self._transfer(-1)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _query_number(query: dict, key: str, default, kind):
    """A query parameter as ``kind``: a finite number >= 0, else `RequestError`."""
    if key not in query:
        return default
    try:
        value = kind(query[key])
    except (ValueError, OverflowError):
        value = None
    if value is None or (kind is float and not math.isfinite(value)) or value < 0:
        raise RequestError(f"{key} must be a {'whole ' if kind is int else ''}number >= 0, got {query[key][:40]!r}")
    return value


def _payload_bytes(checked) -> int:
    """Memory a queued request holds (its samples), for the queue's bound."""
    return int(getattr(getattr(checked, "samples", None), "nbytes", 0))


def _memory(device) -> dict:
    """Resident memory now and at its peak (MB), and CUDA's peak allocation on a GPU."""
    from ..machine import process_memory_mb

    memory = process_memory_mb()
    if getattr(device, "type", "") == "cuda":
        import torch

        memory["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return memory


def serve(config: ServerConfig) -> None:
    """Run a worker until it is stopped. Raises `WorkerStartError` (or the manifest's own
    `CheckpointError`) when it cannot start. It announces itself before torch is imported:
    the model loads in the background (`model.serve.loading`)."""
    from ..core.checkpoint_manifest import checkpoint_folder, read_manifest
    from ..core.paths import default_checkpoint_dir, shared_data_dir

    checkpoint = Path(config.checkpoint or default_checkpoint_dir())
    session_file = config.session_file or session_path(checkpoint, config.device)
    lock = open(f"{session_file}.lock", "a")  # noqa: SIM115 (held for the worker's life)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise WorkerStartError(f"a worker for this checkpoint and device is already running or starting "
                               f"(session file {session_file})") from None
    manifest = read_manifest(checkpoint_folder(config.checkpoint))
    check_modules_present()
    # torch makes its compiler cache folder on import (in $TMPDIR by default): keep it with
    # CapTalk's other caches instead of leaving a folder in the system's temp space
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(shared_data_dir() / "cache" / "torch"))
    loader = ModelLoader(checkpoint, config.device, config.threads)
    worker = Worker(config, checkpoint, manifest, loader, session_file)

    def failed_to_load(error) -> None:
        # another worker may start now (the next request's), while this one lingers so
        # that clients can still read why their jobs failed
        remove_session(session_file, os.getpid())
        lock.close()
        threading.Timer(FAILED_LINGER_S, worker.stop, args=(f"the model failed to load: {error}",)).start()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop("signal"))
    loader.start(on_failure=failed_to_load)
    try:
        worker.run()
    except BaseException:
        lock.close()  # the log (beside the session file) stays: it says what went wrong
        raise
    if loader.error is not None:
        raise loader.error
    # A clean exit leaves nothing in the run folder. The lock file goes while it is still
    # held, so a worker starting now either waits on this one or creates a new file.
    for leftover in (Path(f"{session_file}.lock"), Path(session_file).with_suffix(".log")):
        leftover.unlink(missing_ok=True)
    lock.close()
