"""The back-end worker (`python -m model serve`) in real processes over real sockets."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from model.core.audio import SAMPLE_RATE, frame_count, load_audio
from model.core.errors import CapTalkError
from model.link.client import JobCancelledError, WorkerClient, WorkerError
from model.link.launch import EXIT_ALREADY_RUNNING, WorkerSpec, WorkerUnavailable, ensure_worker
from model.link.processes import alive
from model.core.contract import GenerationOptions, GenerationRequest
from model.core.schedule import parse_schedule
from model.link.protocol import PROTOCOL_VERSION, TOKEN_HEADER, RequestError
from model.link.session import SessionError, read_session

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEECH = REPO_ROOT / "samples" / "speech_sample.wav"
MAX_AUDIO_MINUTES = 0.5
MAX_BODY_MB = 1.0


def start_worker(checkpoint: Path, session_file: Path, *extra: str) -> tuple[subprocess.Popen, dict]:
    """``python -m model serve`` on one thread; returns the process and its ready line."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "model", "serve", "--checkpoint", str(checkpoint), "--device",
                                "cpu", "--threads", "1", "--session-file", str(session_file), *extra],
                               cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert line, f"the worker exited: {process.stderr.read()[-2000:]}"
    return process, json.loads(line)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def worker(tiny_checkpoint, tmp_path_factory):
    """(process, client, session file) of a worker on the tiny model, with small limits to test them."""
    _, checkpoint = tiny_checkpoint
    session_file = tmp_path_factory.mktemp("run") / "worker.json"
    process, ready = start_worker(checkpoint, session_file, "--max-audio-minutes", str(MAX_AUDIO_MINUTES),
                                  "--max-body-mb", str(MAX_BODY_MB))
    assert ready["event"] == "ready" and ready["pid"] == process.pid
    client = WorkerClient(read_session(session_file))
    yield process, client, session_file
    stop(process)
    assert process.returncode == 0
    assert not session_file.exists(), "the worker leaves no session file behind"
    assert not Path(f"{session_file}.lock").exists(), "nor its lock file"


def request(path: Path | None = None, style: str = "", emotion: str = "", schedule=(), options=None,
            **fields) -> GenerationRequest:
    """A request as the add-on makes one: captions and schedule entries into a `Schedule`,
    option values into `GenerationOptions` (seed 3 unless given)."""
    if path is not None:
        fields["audio_path"] = str(path)
    return GenerationRequest(schedule=parse_schedule(list(schedule), style, emotion),
                             options=GenerationOptions(**({"seed": 3} if options is None else options)), **fields)


def raw_http(port: int, method: str, path: str, headers: dict | None = None, body: bytes = b"") -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(method, path, body=body or None, headers=headers or {})
    response = connection.getresponse()
    status, reply = response.status, json.loads(response.read())
    connection.close()
    return status, reply


# ---------------------------------------------------------------------------- who may talk to it
def listening_addresses(port: int) -> list[str]:
    """Local addresses of sockets listening on ``port`` (IPv4 and IPv6), from /proc/net."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]) if len(address) == 8 else address)
    return found


def outward_address() -> str | None:
    """This machine's address towards other machines, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.255", 9))  # no packet is sent: this only picks a route
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_binds_the_loopback_address_only(worker):
    _, client, _ = worker
    assert listening_addresses(client.session.port) == ["127.0.0.1"]
    address = outward_address()
    if address is not None:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, client.session.port), timeout=5).close()


def test_requests_without_the_token_are_refused(worker):
    _, client, _ = worker
    port = client.session.port
    for headers in ({}, {TOKEN_HEADER: "not-the-token"}, {TOKEN_HEADER: client.session.token[:-1]}):
        status, reply = raw_http(port, "GET", "/health", headers)
        assert status == 401 and "session token" in reply["error"]
    status, reply = raw_http(port, "POST", "/shutdown", {"Content-Length": "2"}, b"{}")
    assert status == 401
    assert client.health()["ok"], "refused requests change nothing"


def test_session_file_is_private_and_a_tampered_one_is_refused(worker, tmp_path):
    _, client, session_file = worker
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600
    copy = tmp_path / "private"
    copy.mkdir(mode=0o700)
    leaked = copy / "worker.json"
    leaked.write_text(session_file.read_text())
    leaked.chmod(0o644)
    with pytest.raises(SessionError, match="can be read by other users"):
        read_session(leaked)
    leaked.chmod(0o600)
    copy.chmod(0o777)
    with pytest.raises(SessionError, match="can be written by other users"):
        read_session(leaked)
    copy.chmod(0o700)
    assert read_session(leaked).token == client.session.token


def test_health_reports_device_checkpoint_version_and_limits(worker, tiny_checkpoint):
    _, client, _ = worker
    health = client.health()
    assert health["device"] == "cpu" and health["half"] is False
    assert Path(health["checkpoint"]) == tiny_checkpoint[1].resolve()
    assert health["version"] == "0.1.0" and health["protocol"] == PROTOCOL_VERSION == 2
    assert health["limits"]["max_audio_seconds"] == MAX_AUDIO_MINUTES * 60
    assert health["memory"]["rss_mb"] > 50


# ---------------------------------------------------------------------------- generation
def test_round_trip_gives_the_in_process_motion_with_progress(worker, tiny_checkpoint, one_torch_thread):
    from model.generate import Generator

    _, client, _ = worker
    events = []
    clips = client.generate(request(SPEECH, style="a calm teacher", emotion="happy"),
                            on_progress=lambda f, m: events.append((f, m)))
    assert len(clips) == 1
    clip = clips[0]
    samples = load_audio(SPEECH)
    assert clip.motion.shape == (frame_count(samples.size), len(clip.channels)) and clip.fps == 25.0
    local = Generator.load(tiny_checkpoint[1], device="cpu").generate(
        samples, parse_schedule(None, "a calm teacher", "happy"), GenerationOptions(seed=3))[0]
    assert clip.channels == local.channels
    np.testing.assert_allclose(clip.motion, local.motion, atol=1e-5)
    fractions = [f for f, _ in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    messages = [m for _, m in events]
    assert messages[0].startswith("queued") and "started" in messages
    assert any(m.startswith("window 1 of") for m in messages)


def test_takes_and_a_caption_schedule(worker):
    _, client, _ = worker
    clips = client.generate(request(SPEECH, schedule=({"start": 0, "emotion": "sad"}, {"start": 2.0, "emotion": "happy"}),
                                    options={"seed": 1, "takes": 2}))
    assert len(clips) == 2 and not np.array_equal(clips[0].motion, clips[1].motion)
    assert [c.meta["seed"] for c in clips] == [1, 2]


def test_cancel_mid_job_leaves_the_worker_healthy(worker, tmp_path):
    _, client, _ = worker
    long_audio = tmp_path / "long.wav"
    speech, rate = soundfile.read(SPEECH, dtype="float32")
    soundfile.write(long_audio, np.tile(speech, int(np.ceil(25 * rate / speech.size)))[: 25 * rate], rate)
    job, _ = client.submit(request(long_audio))
    after, seen_window = 0, False
    while not seen_window:
        events, state = client.events(job, after)
        assert state in ("queued", "running")
        after = events[-1]["seq"] if events else after
        seen_window = any(e["message"].startswith("window") for e in events)
    assert client.cancel(job) == "running"
    while client.events(job, after)[1] == "running":
        pass
    with pytest.raises(JobCancelledError, match="cancelled after"):
        client.result(job)
    assert client.health()["jobs"]["running"] == 0
    assert client.generate(request(SPEECH))[0].num_frames > 0, "the next job runs normally"


def test_two_clients_at_once_each_get_their_own_result(worker, tmp_path):
    _, client, _ = worker
    short = tmp_path / "short.wav"
    speech, rate = soundfile.read(SPEECH, dtype="float32")
    soundfile.write(short, speech[: 3 * rate], rate)
    jobs = {"a": request(SPEECH, emotion="happy", options={"seed": 5}),
            "b": request(short, emotion="sad", options={"seed": 6})}
    alone = {name: client.generate(req)[0].motion for name, req in jobs.items()}
    results, queued_messages = {}, {}

    def run(name: str) -> None:
        other = WorkerClient(client.session)  # a second Blender session reads the same session file
        messages = []
        results[name] = other.generate(jobs[name], on_progress=lambda f, m: messages.append(m))[0].motion
        queued_messages[name] = messages[0]

    threads = [threading.Thread(target=run, args=(name,)) for name in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for name in jobs:
        np.testing.assert_array_equal(results[name], alone[name])
    assert sorted(queued_messages.values())[1] == "queued (1 job ahead)", "the later one waited its turn"


# ---------------------------------------------------------------------------- bad input
def write_variant(folder: Path, name: str, samples: np.ndarray, rate: int, subtype: str) -> Path:
    path = folder / f"{name}.wav"
    soundfile.write(path, samples, rate, subtype=subtype)
    return path


def test_audio_formats_are_converted_exactly_or_resampled(worker, tmp_path):
    """24-bit, float, stereo (identical channels) hold the 16-bit clip exactly: the same
    motion. 8-bit and 48 kHz change the samples: the clip's length is kept."""
    _, client, _ = worker
    speech, rate = soundfile.read(SPEECH, dtype="int16")
    assert rate == SAMPLE_RATE
    as_float = speech.astype(np.float32) / 32768
    reference = client.generate(request(SPEECH))[0].motion
    exact = {"pcm24": write_variant(tmp_path, "pcm24", as_float, rate, "PCM_24"),
             "float": write_variant(tmp_path, "float", as_float, rate, "FLOAT"),
             "stereo": write_variant(tmp_path, "stereo", np.stack([as_float, as_float], 1), rate, "PCM_16")}
    for name, path in exact.items():
        np.testing.assert_array_equal(client.generate(request(path))[0].motion, reference, err_msg=name)
    from model.core.audio import resample

    changed = {"pcm_u8": write_variant(tmp_path, "u8", as_float, rate, "PCM_U8"),
               "48k": write_variant(tmp_path, "48k", resample(as_float, rate, 48000), 48000, "PCM_16")}
    for name, path in changed.items():
        assert client.generate(request(path))[0].motion.shape == reference.shape, name


def test_audio_bytes_are_accepted_like_a_path(worker):
    _, client, _ = worker
    by_path = client.generate(request(SPEECH))[0].motion
    by_bytes = client.generate(request(audio_bytes=SPEECH.read_bytes()))[0].motion
    np.testing.assert_array_equal(by_bytes, by_path)


@pytest.mark.parametrize("case, message", [
    ("corrupt", "not a readable audio file"),
    ("empty", "contains no samples"),
    ("nan", "NaN or infinite"),
    ("too long", "longer than the limit of 0.5 min"),
    ("missing", "no such file"),
])
def test_bad_audio_is_refused_clearly_and_the_worker_lives_on(worker, tmp_path, case, message):
    _, client, _ = worker
    path = tmp_path / "bad.wav"
    if case == "corrupt":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + os.urandom(200))
    elif case == "empty":
        soundfile.write(path, np.zeros(0, np.float32), SAMPLE_RATE)
    elif case == "nan":
        samples = np.zeros(SAMPLE_RATE, np.float32)
        samples[100] = np.nan
        soundfile.write(path, samples, SAMPLE_RATE, subtype="FLOAT")
    elif case == "too long":
        soundfile.write(path, np.zeros(int(SAMPLE_RATE * 31), np.int16), SAMPLE_RATE)
    with pytest.raises(RequestError, match=message) as caught:
        client.submit(request(path))
    assert caught.value.status == 400
    assert client.health()["jobs"]["queued"] == 0


@pytest.mark.parametrize("fields, message", [
    ({"style": "x" * 1001}, "the style caption has 1001 characters; the limit is 1000"),
    ({"schedule": ({"start": 1.0, "emotion": "y" * 1500},)}, "limit is 1000"),
    ({"schedule": ({"start": 99.0, "emotion": "happy"},)}, "after the end"),
    ({"options": {"temperature": -1}}, "temperature must be between 0 and 5"),
    ({"options": {"seed": "one"}}, "seed must be a whole number"),
    ({"channels": ("jawOpen", "head.rx"), "head_model": "my_rig"}, "does not fit head model 'my_rig'"),
])
def test_bad_requests_are_refused_with_the_reason(worker, fields, message):
    _, client, _ = worker
    with pytest.raises(ValueError, match=message):  # refused by the client's own checks or by the worker (400)
        client.submit(request(SPEECH, **fields))


def test_bodies_over_the_limit_are_refused_unread(worker, tmp_path):
    _, client, _ = worker
    big = tmp_path / "big.wav"
    soundfile.write(big, np.zeros(SAMPLE_RATE * 25, np.float32), SAMPLE_RATE, subtype="FLOAT")  # 1.6 MB
    with pytest.raises(RequestError, match="limit is 1.0 MB") as caught:
        client.submit(request(audio_bytes=big.read_bytes()))
    assert caught.value.status == 413
    # the worker's own check, for a client that does not look: only the headers are sent
    with socket.create_connection(("127.0.0.1", client.session.port), timeout=10) as raw:
        raw.sendall(f"POST /jobs HTTP/1.1\r\nHost: x\r\n{TOKEN_HEADER}: {client.session.token}\r\n"
                    f"Content-Length: {50 * 2**20}\r\n\r\n".encode())
        reply = b""
        while chunk := raw.recv(4096):  # the worker answers and closes without reading the body
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.0 413") and "limit is 1.0 MB" in reply
    assert client.health()["ok"]


# ---------------------------------------------------------------------------- life of the process
def test_a_second_worker_for_the_same_session_refuses_to_start(worker, tiny_checkpoint):
    _, client, session_file = worker
    result = subprocess.run([sys.executable, "-m", "model", "serve", "--checkpoint", str(tiny_checkpoint[1]),
                             "--session-file", str(session_file)], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert result.returncode == EXIT_ALREADY_RUNNING and "already running" in result.stderr
    assert client.health()["ok"]


def wait_for_exit(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.2)
    return False


def test_launcher_reuses_restarts_and_the_worker_never_outlives_its_users(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTALK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    spec = WorkerSpec(python=sys.executable, checkpoint=tiny_checkpoint[1], device="cpu", threads=1)
    # a Blender session (here: a sleeping process) starts the worker and attaches
    blender = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        first = ensure_worker(spec, owner=blender.pid)
        assert ensure_worker(spec, owner=blender.pid).session.pid == first.session.pid, "reused"
        os.kill(first.session.pid, signal.SIGKILL)
        assert wait_for_exit(first.session.pid)
        second = ensure_worker(spec, owner=blender.pid)
        assert second.session.pid != first.session.pid and second.health()["ok"], "a dead worker is replaced"
        assert second.generate(request(SPEECH))[0].num_frames > 0
    finally:
        blender.kill()
        blender.wait()
    assert wait_for_exit(second.session.pid), "the worker exits when every process using it has"
    assert not spec.session_file.exists()
    leftovers = sorted(p.name for p in spec.session_file.parent.iterdir())
    assert leftovers == [], f"the worker leaves its run folder empty (its lock and log too): {leftovers}"


def test_a_wrong_interpreter_gets_a_clear_message(tmp_path, monkeypatch, tiny_checkpoint):
    monkeypatch.setenv("CAPTALK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    with pytest.raises(WorkerUnavailable, match="does not exist. Run CapTalk's set-up"):
        ensure_worker(WorkerSpec(python=str(tmp_path / "nope" / "python"), checkpoint=tiny_checkpoint[1]))
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    with pytest.raises(WorkerUnavailable, match="lacks a package .*No module named 'numpy'.*set-up"):
        ensure_worker(WorkerSpec(python=str(venv / "bin" / "python"), checkpoint=tiny_checkpoint[1]))


def test_silence_gives_a_calm_closed_mouth_with_the_default_model(tmp_path):
    from model.core.paths import default_checkpoint_dir

    process, _ = start_worker(default_checkpoint_dir(), tmp_path / "default.json")
    try:
        client = WorkerClient(read_session(tmp_path / "default.json"))
        silent = tmp_path / "silent.wav"
        soundfile.write(silent, np.zeros(SAMPLE_RATE * 4, np.int16), SAMPLE_RATE)
        quiet, speech = (client.generate(request(path, style="a calm teacher"))[0] for path in (silent, SPEECH))
    finally:
        stop(process)
    jaw = quiet.channels.index("jawOpen")
    assert quiet.motion[:, jaw].max() < 0.15 < np.percentile(speech.motion[:, jaw], 90), "closed on silence only"
    head = [quiet.channels.index(f"head.r{axis}") for axis in "xyz"]
    assert np.degrees(quiet.motion[:, head].std(axis=0)).max() < 3.0, "the head stays calm"


def test_cancel_while_the_default_model_encodes_a_long_file_stops_the_job(tmp_path):
    """Through the worker: a 10-minute file (24 Whisper chunks of work) cancelled as soon as the
    job reports that it encodes speech stops with only a chunk or two encoded; the message
    says so (the whole-clip encoding used to run to its end before any cancel check)."""
    from model.core.paths import default_checkpoint_dir

    process, _ = start_worker(default_checkpoint_dir(), tmp_path / "default.json")
    try:
        client = WorkerClient(read_session(tmp_path / "default.json"))
        long_audio = tmp_path / "long.wav"
        speech, rate = soundfile.read(SPEECH, dtype="float32")
        soundfile.write(long_audio, np.tile(speech, int(np.ceil(600 * rate / speech.size)))[: 600 * rate], rate)
        job, _ = client.submit(request(long_audio))
        after, encoding = 0, False
        while not encoding:
            events, state = client.events(job, after)
            assert state in ("queued", "running")
            after = events[-1]["seq"] if events else after
            encoding = any(e["message"] == "encoding speech" for e in events)
        client.cancel(job)
        while client.events(job, after)[1] == "running":
            pass
        with pytest.raises(JobCancelledError, match=r"\(([0-9]+) speech-encoder chunks encoded\)") as caught:
            client.result(job)
        encoded = int(str(caught.value).rsplit("(", 1)[1].split()[0])
        assert encoded < 24, f"the job went on encoding: {caught.value}"
        assert client.health()["jobs"]["running"] == 0
    finally:
        stop(process)


def test_a_worker_that_does_not_answer_is_reported_not_replaced(tiny_checkpoint, tmp_path, monkeypatch):
    from model.link import launch

    monkeypatch.setenv("CAPTALK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(launch, "HEALTH_TIMEOUT", 2.0)
    spec = WorkerSpec(python=sys.executable, checkpoint=tiny_checkpoint[1], device="cpu", threads=1)
    worker = ensure_worker(spec)
    pid = worker.session.pid
    try:
        os.kill(pid, signal.SIGSTOP)  # alive, holding its lock, answering nothing
        with pytest.raises(WorkerUnavailable, match=f"pid {pid}\\) is running but does not answer.*kill {pid}"):
            ensure_worker(spec)
        assert spec.session_file.exists(), "its session file stays: it is not dead"
        os.kill(pid, signal.SIGCONT)
        assert ensure_worker(spec).session.pid == pid
    finally:
        os.kill(pid, signal.SIGCONT)
        worker.shutdown()
        assert wait_for_exit(pid)


def test_a_flame_rig_with_an_adapter_is_driven_and_mapped(worker, open_head_file, tmp_path, data_dir):
    """A FLAME rig's request is accepted once its adapter is in the data folder; the motion
    comes back in the rig's channels. A rig whose adapter build failed is refused with why."""
    from flame_fixtures import open_head_as_flame, write_flame_npz
    from model.core.flame_adapter import adapter_path, failure_path
    from model.core.flame_import import import_flame
    from model.core.head_model import HeadModel
    from model.flame_bridge.build import build_adapter

    _, client, _ = worker
    source = HeadModel.load(open_head_file)
    target = import_flame(write_flame_npz(tmp_path / "flame.npz", flame=open_head_as_flame(source).flame))
    flame_request = request(SPEECH, head_model=target.model_id, channels=tuple(target.channel_names))
    with pytest.raises(RequestError, match="not 'flame-|does not fit"):  # no adapter yet
        client.submit(flame_request)
    build_adapter(source, target, keep_shapes=False).save(adapter_path(target.model_id))
    take = client.generate(flame_request)[0]
    assert take.channels == tuple(target.channel_names) and take.meta["unmapped"] == ["tongueOut"]
    assert np.ptp(take.motion[:, target.rotation_slice("jaw")][:, 0]) > 0

    failure_path("flame-broken-e100").write_text("registration failed: not a head\n")
    with pytest.raises(RequestError, match="cannot drive head model 'flame-broken-e100': registration failed"):
        client.submit(request(SPEECH, head_model="flame-broken-e100"))


def test_the_worker_answers_before_its_model_loads_and_a_failed_load_reaches_the_job(tiny_checkpoint, tmp_path):
    """Weights that cannot be read are found by the background load, after the worker has
    announced itself (only the manifest is read before): the job that waited gets the
    reason, new jobs are refused with it, the session file goes at once (the next request
    starts a fresh worker), and the process exits with status 2 soon after."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint[1], broken)
    (broken / "ar.safetensors").write_bytes(b"these are not weights")
    session_file = tmp_path / "run" / "worker.json"
    session_file.parent.mkdir()
    process, ready = start_worker(broken, session_file)
    try:
        assert ready["event"] == "ready" and ready["device"] == "cpu"
        client = WorkerClient(read_session(session_file))
        with pytest.raises(CapTalkError, match="ar.safetensors' cannot be read"):
            client.generate(request(SPEECH))  # waits for the load, or refused (503) if it already failed
        health = client.health()
        assert health["loaded"] is False and "cannot be read" in health["error"]
        with pytest.raises(WorkerError, match="could not load its model .*cannot be read") as refused:
            client.submit(request(SPEECH))
        assert refused.value.status == 503
        assert not session_file.exists(), "a failed worker leaves the session to a fresh one"
        assert process.wait(timeout=60) == 2
        assert "cannot be read" in process.stderr.read()
    finally:
        stop(process)


def test_the_first_job_waits_for_the_model_and_health_reports_the_load(tiny_checkpoint, tmp_path):
    session_file = tmp_path / "worker.json"
    process, ready = start_worker(tiny_checkpoint[1], session_file)
    try:
        client = WorkerClient(read_session(session_file))
        first = client.health()
        assert first["channels"] and first["head_model"] and first["error"] is None
        takes = client.generate(request(SPEECH))
        assert takes[0].motion.shape[0] == frame_count(len(load_audio(SPEECH)))
        health = client.health()
        assert health["loaded"] is True and health["device"] == "cpu" and health["load_s"] > 0
    finally:
        stop(process)
    assert process.returncode == 0
