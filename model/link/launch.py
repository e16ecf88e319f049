"""Get a worker to talk to: reuse a running one, else start one; a dead one is replaced.

    client = ensure_worker(WorkerSpec(python="/path/to/venv/bin/python"))

stdlib only: the add-on calls this inside Blender. The worker runs as
``python -m model serve --owner <this pid>`` with the chosen interpreter, its output in
a log file beside its session file (0600), and attaches every process that uses it, so
it exits when the last of them has (see `model.serve.server`).
"""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.paths import REPO_ROOT, default_checkpoint_dir
from .client import WorkerClient, WorkerError, WorkerGone
from .processes import alive
from .protocol import PROTOCOL_VERSION
from .session import SessionError, read_session, remove_session, session_path
from ..core.errors import MissingPart

EXIT_ALREADY_RUNNING = 3  # `python -m model serve` when another worker holds the session
HEALTH_TIMEOUT = 10.0  # seconds a live worker has to answer /health (it answers while a job runs)


class WorkerUnavailable(MissingPart):
    """No worker could be reached or started; the message says what to do."""


@dataclass(frozen=True)
class WorkerSpec:
    python: str  # the back end's interpreter (torch and the encoders installed)
    checkpoint: Path | None = None  # None: the bundled default
    device: str = "auto"  # auto, cpu or cuda
    source_root: Path = REPO_ROOT  # the folder holding `model/`
    threads: int = 0  # torch CPU threads; 0: torch's default
    start_timeout: float = 300.0  # seconds to wait for a new worker to load its model

    @property
    def session_file(self) -> Path:
        return session_path(self.checkpoint or default_checkpoint_dir(), self.device)

    @property
    def log_file(self) -> Path:
        return self.session_file.with_suffix(".log")


def connect(spec: WorkerSpec) -> WorkerClient | None:
    """A client of the running worker for ``spec``, or None when there is none that answers
    (a stale session file of a dead worker is removed)."""
    path = spec.session_file
    try:
        session = read_session(path)
    except SessionError as exc:
        raise WorkerUnavailable(str(exc)) from None
    if session is None:
        return None
    try:
        health = WorkerClient(session, timeout=HEALTH_TIMEOUT).health()
    except WorkerGone as exc:
        if alive(session.pid):  # alive but not answering: starting another would only wait on its lock
            raise WorkerUnavailable(f"the CapTalk worker (pid {session.pid}) is running but does not answer ({exc}). "
                                    f"Stop it (kill {session.pid}) and try again; its log: {spec.log_file}") from None
        remove_session(path, session.pid)
        return None
    except WorkerError as exc:
        raise WorkerUnavailable(f"the CapTalk worker (pid {session.pid}) answers with an error ({exc}). Stop it "
                                f"(kill {session.pid}) and try again; its log: {spec.log_file}") from None
    client = WorkerClient(session)
    if health.get("protocol") != PROTOCOL_VERSION:
        raise WorkerUnavailable(f"the running CapTalk worker (pid {session.pid}) speaks protocol "
                                f"{health.get('protocol')}, this add-on {PROTOCOL_VERSION}: stop it and try again")
    return client


def ensure_worker(spec: WorkerSpec, owner: int | None = None) -> WorkerClient:
    """A client of a live worker for ``spec``, started if needed, with ``owner`` (default:
    this process) attached so the worker lives as long as it does."""
    owner = os.getpid() if owner is None else owner
    client = connect(spec) or _start(spec, owner)
    try:
        client.attach(owner)
    except WorkerError:  # it died between the two calls: start a fresh one
        client = _start(spec, owner)
        client.attach(owner)
    return client


def _start(spec: WorkerSpec, owner: int) -> WorkerClient:
    if not Path(spec.python).is_file():
        raise WorkerUnavailable(f"the back-end Python '{spec.python}' does not exist. Run CapTalk's set-up "
                                "(README) or choose its interpreter in Preferences > Add-ons > CapTalk.")
    command = [spec.python, "-m", "model", "serve", "--device", spec.device, "--owner", str(owner),
               "--session-file", str(spec.session_file)]
    if spec.checkpoint:
        command += ["--checkpoint", str(spec.checkpoint)]
    if spec.threads:
        command += ["--threads", str(spec.threads)]
    env = dict(os.environ, PYTHONPATH=str(spec.source_root), PYTHONUNBUFFERED="1")
    log = os.open(spec.log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # its own session: a Ctrl-C meant for Blender's terminal does not kill a job midway
        process = subprocess.Popen(command, cwd=spec.source_root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        os.close(log)
    deadline = time.monotonic() + spec.start_timeout
    while time.monotonic() < deadline:
        code = process.poll()
        if code == EXIT_ALREADY_RUNNING:  # another Blender is starting the same worker: use that one
            client = _wait_for_other(spec, deadline)
            if client is not None:
                return client
            raise WorkerUnavailable(f"another CapTalk worker is starting but did not become ready; see {spec.log_file}")
        if code is not None:
            raise WorkerUnavailable(explain_failure(spec.log_file.read_text(errors="replace"), code, spec.python))
        try:
            session = read_session(spec.session_file)
        except SessionError as exc:
            raise WorkerUnavailable(str(exc)) from None
        if session is not None and session.pid == process.pid:
            return WorkerClient(session)
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise WorkerUnavailable(f"the CapTalk worker did not start within {spec.start_timeout:.0f} s; see {spec.log_file}")


def _wait_for_other(spec: WorkerSpec, deadline: float) -> WorkerClient | None:
    while time.monotonic() < deadline:
        client = connect(spec)
        if client is not None:
            return client
        time.sleep(0.2)
    return None


def explain_failure(output: str, returncode: int, python: str = "") -> str:
    """A back-end process's failure as a message for the user: its last line, and what to
    do when the cause is a known one (a missing package)."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else f"exit status {returncode}"
    if "No module named" in output:
        return (f"The back-end Python{' ' + repr(python) if python else ''} lacks a package ({last}). Run "
                "CapTalk's set-up or point Preferences > Add-ons > CapTalk > Back-end Python at its environment.")
    return f"CapTalk back end failed: {last.removeprefix('error: ')}"
