"""The worker's HTTP API under abuse (issue 14's worker list, issue 20 items 3-6): a real
worker process on the tiny model, real sockets on 127.0.0.1, real files.

Whatever arrives, the worker stays up and answers with a clear status (400 bad request,
401 no token, 404, 411/413 body length, 429 queue full, 503 busy; never 500 for bad
input), its memory and descriptors return to their level, and it leaves no temp files.
Every test is bounded in count and time; the slow-client tests wait for the worker's own
request timeout (`model.serve.server.REQUEST_TIMEOUT`, 10 s) once, in parallel.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile

from model.core.audio import SAMPLE_RATE, frame_count
from model.link.client import WorkerClient, WorkerError, WorkerGone
from model.link.protocol import TOKEN_HEADER, RequestError
from model.link.session import read_session
from model.serve.jobs import MAX_PENDING
from model.serve.server import MAX_CONNECTIONS, REQUEST_TIMEOUT

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEECH = REPO_ROOT / "samples" / "speech_sample.wav"
MAX_BODY_MB = 8


# ---------------------------------------------------------------------------- a worker to abuse
def launch(checkpoint: Path, folder: Path, *extra: str, nofile: int | None = None) -> tuple[subprocess.Popen, dict]:
    """``python -m model serve`` on one thread, its temp files in ``folder/tmp``; returns the
    process and its ready line. ``nofile``: its descriptor limit."""
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1", TMPDIR=str(folder / "tmp"))
    limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))) if nofile else None
    process = subprocess.Popen([sys.executable, "-m", "model", "serve", "--checkpoint", str(checkpoint), "--device",
                                "cpu", "--threads", "1", "--session-file", str(folder / "worker.json"), *extra],
                               cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=limit)
    line = process.stdout.readline()
    assert line, f"the worker exited: {process.stderr.read()[-3000:]}"
    return process, json.loads(line)


def stop(process: subprocess.Popen) -> str:
    """Stop the worker; its stderr (tracebacks of bugs would be there)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return stderr


@dataclass
class Abused:
    process: subprocess.Popen
    client: WorkerClient
    folder: Path
    baseline: dict  # resident memory, descriptors, threads after warm-up

    @property
    def port(self) -> int:
        return self.client.session.port

    @property
    def token(self) -> str:
        return self.client.session.token


def status_of(pid: int) -> dict:
    """VmRSS / VmHWM (MB), Threads and open descriptors of process ``pid``, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "peak_mb": int(fields["VmHWM"].split()[0]) / 1024,
            "threads": int(fields["Threads"]), "fds": len(os.listdir(f"/proc/{pid}/fd"))}


@pytest.fixture(scope="module")
def abused(tiny_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("abused")
    process, _ = launch(tiny_checkpoint[1], folder, "--max-body-mb", str(MAX_BODY_MB))
    try:
        client = WorkerClient(read_session(folder / "worker.json"))
        # warm up every path the abuse takes (imports, caches, first job), then measure
        client.generate(_request_object(SPEECH))
        for body in (b"{", b"[]", json.dumps(request(SPEECH, style="calm", options={"seed": -1})).encode()):
            post(client.session.port, client.session.token, body)
        wait_idle(client)
        baseline = settled(process.pid, lambda s: True)
    except BaseException:
        stop(process)
        raise
    print(f"\nworker baseline after warm-up: {baseline}")
    yield Abused(process, client, folder, baseline)
    stderr = stop(process)
    assert process.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr, f"the worker met a bug:\n{stderr[-5000:]}"


def request(path: Path | None = None, style: str | None = None, emotion: str | None = None, **fields) -> dict:
    """A request body as JSON fields (captions go into the schedule's first entry)."""
    fields.setdefault("options", {"seed": 3})
    if path is not None:
        fields["audio_path"] = str(path)
    first = {key: value for key, value in (("style", style), ("emotion", emotion)) if value is not None}
    if first:
        fields["schedule"] = [{"start": 0, **first}, *fields.get("schedule", [])]
    return fields


def call(port: int, method: str, path: str, headers: dict | None = None, body: bytes | None = None,
         timeout: float = 60) -> tuple[int, dict]:
    """One request; (status, JSON reply). The reply must be JSON with an error for >= 400."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        status, raw = response.status, response.read()
    finally:
        connection.close()
    reply = json.loads(raw)
    if status >= 400:
        assert isinstance(reply.get("error"), str) and reply["error"], reply
        assert "Traceback" not in reply["error"]
    return status, reply


def post(port: int, token: str, body: bytes, path: str = "/jobs") -> tuple[int, dict]:
    return call(port, "POST", path, {TOKEN_HEADER: token, "Content-Type": "application/json"}, body)


def submit(abused: Abused, fields: dict) -> tuple[int, dict]:
    """POST /jobs with ``fields`` as JSON (allow_nan: some cases send NaN on purpose)."""
    return post(abused.port, abused.token, json.dumps(fields).encode())


def follow(client: WorkerClient, job: str) -> tuple[str, list[dict], dict]:
    """Wait for a job to finish: (state, its events, its result reply)."""
    events, after = [], 0
    while True:
        new, state = client.events(job, after)
        events += new
        after = events[-1]["seq"] if events else after
        if state in ("done", "failed", "cancelled"):
            return state, events, client._call("GET", f"/jobs/{job}/result")


def wait_idle(client: WorkerClient) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        counts = client.health()["jobs"]
        if counts["queued"] == counts["running"] == 0:
            return
        time.sleep(0.2)
    raise AssertionError("the worker's queue never emptied")


def settled(pid: int, ok, timeout: float = 30.0) -> dict:
    """`status_of` once it stops changing (descriptors of closed connections take a moment
    to go) and ``ok(status)`` holds, or the last one after ``timeout`` s."""
    deadline, last = time.monotonic() + timeout, None
    while True:
        now = status_of(pid)
        if last is not None and now["fds"] == last["fds"] and now["threads"] == last["threads"] and ok(now):
            return now
        if time.monotonic() > deadline:
            return now
        last = now
        time.sleep(0.5)


def wav_bytes(samples: np.ndarray, rate: int, **kwargs) -> bytes:
    import io

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, **kwargs)
    return buffer.getvalue()


def speech_seconds(seconds: float) -> np.ndarray:
    speech, rate = soundfile.read(SPEECH, dtype="float32")
    return np.tile(speech, int(np.ceil(seconds * rate / speech.size)))[: int(seconds * rate)]


def wav_header(rate: int, channels: int, data_bytes: int, bits: int = 16) -> bytes:
    """A PCM WAV header that claims ``data_bytes`` of samples."""
    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", min(2**32 - 1, 36 + data_bytes)) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, bits)
            + b"data" + struct.pack("<I", min(2**32 - 1, data_bytes)))


# ---------------------------------------------------------------------------- malformed requests
NESTED = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("body, message", [
    (b"{", "not JSON"),
    (b"not json at all", "not JSON"),
    (b"\xff\xfe\x00garbage", "not JSON"),
    (b"[]", "must be a JSON object"),
    (b'"a string"', "must be a JSON object"),
    (b"null", "must be a JSON object"),
    (NESTED, "nested too deeply"),
    (b'{"audio_path": "/x.wav", "a": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"}", "nested too deeply"),
    (b'{"audio_path": 5}', "audio_path must be an absolute path"),
    (b'{"audio_path": "/x.wav", "unknown_field": 1}', "unknown field(s) 'unknown_field'"),
    (b'{"audio_path": "/x.wav", "options": {"nope": 1}}', "unknown option(s) 'nope'"),
    (b'{"audio_path": "/x.wav", "options": []}', "options must be an object"),
    (b'{"audio_path": "/x.wav", "schedule": "later"}', "schedule must be a list"),
    (b'{"audio_path": "/x.wav", "channels": [1, 2]}', "channels must be a list of channel names"),
    (b'{"audio_path": "/x.wav", "audio_start": NaN}', "NaN is not a JSON number"),
    (b'{"audio_path": "/x.wav", "audio_end": Infinity}', "Infinity is not a JSON number"),
    (b'{"audio_path": "/x.wav", "audio_start": -Infinity}', "-Infinity is not a JSON number"),
    (b'{"audio_path": "/x.wav", "options": {"temperature": 1e400}}', "out of range"),
    (b'{"audio_path": "/x.wav", "options": {"seed": 1' + b"0" * 5000 + b"}}", "not JSON"),
    (b'{"audio_path": "relative.wav"}', "audio_path must be an absolute path"),
    (b'{"audio_path": "/x.wav", "audio_bytes": "AAAA"}', "exactly one of audio_path and audio_bytes"),
    (b"{}", "exactly one of audio_path and audio_bytes"),
])
def test_malformed_bodies_are_refused_with_400(abused, body, message):
    status, reply = post(abused.port, abused.token, body)
    assert status == 400 and message in reply["error"], reply


@pytest.mark.parametrize("headers, body, status, message", [
    ({"Content-Length": "-1"}, b"{}", 400, "Content-Length must be one whole number"),
    ({"Content-Length": "+2"}, b"{}", 400, "Content-Length must be one whole number"),
    ({"Content-Length": "2e0"}, b"{}", 400, "Content-Length must be one whole number"),
    ({"Content-Length": "0x2"}, b"{}", 400, "Content-Length must be one whole number"),
    ({"Content-Length": "9" * 40}, b"{}", 413, "the worker's limit is 8.0 MB"),
    ({"Transfer-Encoding": "chunked"}, b"2\r\n{}\r\n0\r\n\r\n", 411, "chunked request bodies are not accepted"),
    ({}, b"", 411, "needs a Content-Length"),
    ({"Content-Length": "10"}, b"{}", 400, "the request body ended after 2 of 10 bytes"),
])
def test_body_lengths_that_lie_are_refused(abused, headers, body, status, message):
    """Raw sockets: http.client would fix the headers. The worker never reads a body whose
    length is not one plain number within its limit (-1 used to read to the end)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", abused.port), timeout=60) as raw:
        raw.sendall(f"POST /jobs HTTP/1.1\r\nHost: x\r\n{TOKEN_HEADER}: {abused.token}\r\n{head}\r\n".encode() + body)
        if headers.get("Content-Length") == "10":
            raw.shutdown(socket.SHUT_WR)  # the client gives up mid-body
        reply = b""
        while chunk := raw.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.split()[1] == str(status).encode(), reply[:300]
    assert message in json.loads(payload)["error"]


def raw_exchange(port: int, data: bytes) -> tuple[int, dict]:
    """Send ``data`` as is; (status, JSON reply) of what comes back before the worker closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as raw:
        raw.sendall(data)
        reply = b""
        while chunk := raw.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


@pytest.mark.parametrize("data, status", [
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS hello
    (b"GET /health HTTP/2.0\r\n\r\n", 505),
    (b"PUT /health HTTP/1.1\r\n\r\n", 501),
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET /health HTTP/1.1\r\n" + b"X-Pad: y\r\n" * 101 + b"\r\n", 431),
    (b"GET /health HTTP/1.1\r\nX-Long: " + b"y" * 70_000 + b"\r\n\r\n", 431),
])
def test_requests_http_itself_refuses_are_answered_in_json(abused, data, status):
    got, reply = raw_exchange(abused.port, data)
    assert got == status and reply["error"]


def test_two_different_content_lengths_are_refused(abused):
    with socket.create_connection(("127.0.0.1", abused.port), timeout=60) as raw:
        raw.sendall(f"POST /jobs HTTP/1.1\r\nHost: x\r\n{TOKEN_HEADER}: {abused.token}\r\nContent-Length: 2\r\n"
                    "Content-Length: 5000\r\n\r\n{}".encode())
        reply = b""
        while chunk := raw.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.0 400") and b"Content-Length must be one whole number" in reply


# ---------------------------------------------------------------------------- tokens
@pytest.mark.parametrize("path, headers", [
    ("/health", {}),
    ("/health", {TOKEN_HEADER: ""}),
    ("/health", {TOKEN_HEADER: "x" * 10_000}),
    ("/health", {TOKEN_HEADER: "\u00ff\u00fe"}),
    ("/health?token={token}", {}),
    (f"/health?{TOKEN_HEADER}={{token}}", {}),
    ("/jobs/{job}/result", {}),
    ("/jobs/{job}/cancel", {"X-Captalk-Token-2": "{token}"}),
])
def test_requests_without_the_token_in_its_header_are_refused(abused, path, headers):
    """A token in the query string does not count (URLs end up in logs and histories)."""
    path = path.format(token=abused.token, job="0" * 32)
    headers = {k: v.format(token=abused.token) for k, v in headers.items()}
    method = "POST" if path.endswith("cancel") else "GET"
    status, reply = call(abused.port, method, path, {**headers, "Content-Length": "0"} if method == "POST" else headers)
    assert status == 401 and "session token" in reply["error"]


# ---------------------------------------------------------------------------- option values
BAD_OPTIONS = [
    ("seed", -1), ("seed", -5), ("seed", 2**63), ("seed", 2**70), ("seed", 1.5), ("seed", "3"), ("seed", None),
    ("seed", True), ("seed", 1e308),
    ("temperature", -1), ("temperature", 1e308), ("temperature", "1"), ("temperature", None), ("temperature", []),
    ("top_p", 0), ("top_p", 1.5), ("top_p", -1e308), ("top_p", "0.9"), ("top_p", None),
    ("guidance", 1e308), ("guidance", -1e308), ("guidance", "2"), ("guidance", {}),
    ("style_guidance", 1e308), ("style_guidance", "x"), ("emotion_guidance", -1e308), ("emotion_guidance", []),
    ("takes", 0), ("takes", -1), ("takes", 100), ("takes", 2**70), ("takes", 1.0), ("takes", "2"), ("takes", None),
    ("smoothing", "yes"), ("smoothing", 2), ("smoothing", None),
    ("border_blend", -1), ("border_blend", 2**70), ("border_blend", 1.5), ("border_blend", "8"),
]


@pytest.mark.parametrize("name, value", BAD_OPTIONS, ids=[f"{n}={v!r}"[:40] for n, v in BAD_OPTIONS])
def test_option_values_are_refused_with_400(abused, name, value):
    """Validation lives in the options' own contract; here it is seen through the API."""
    status, reply = submit(abused, request(SPEECH, options={name: value}))
    if status == 202:
        abused.client.cancel(reply["job"])
    assert status == 400 and name in reply["error"], reply


@pytest.mark.parametrize("fields, message", [
    ({"audio_start": -1}, "audio_start must be a finite number of seconds >= 0"),
    ({"audio_start": "0"}, "audio_start must be a finite number"),
    ({"audio_start": True}, "audio_start must be a finite number"),
    ({"audio_start": 1e308}, "holds less than one motion frame"),
    ({"audio_start": 7.54}, "holds less than one motion frame"),  # the clip is 7.555 s long
    ({"audio_end": 0}, "audio_end must be a finite number of seconds after audio_start"),
    ({"audio_start": 2, "audio_end": 1}, "audio_end must be a finite number of seconds after audio_start"),
    ({"audio_end": "1"}, "audio_end must be a finite number"),
    ({"audio_start": 1, "audio_end": 1.01}, "holds less than one motion frame"),
])
def test_audio_ranges_out_of_bounds_are_refused(abused, fields, message):
    status, reply = submit(abused, request(SPEECH, **fields))
    assert status == 400 and message in reply["error"], reply


def test_an_audio_end_past_the_audio_plays_to_its_end(abused):
    status, reply = submit(abused, request(SPEECH, audio_start=1.0, audio_end=1e308))
    assert status == 202, reply
    state, _, result = follow(abused.client, reply["job"])
    samples = soundfile.info(SPEECH).frames
    assert state == "done" and result["takes"][0]["frames"] == frame_count(samples - SAMPLE_RATE)


# ---------------------------------------------------------------------------- captions and schedules
@pytest.mark.parametrize("fields, message", [
    ({"style": "x" * 2**20}, "the style caption has 1048576 characters; the limit is 1000"),
    ({"emotion": 5}, "emotion must be text"),
    ({"style": "calm \ud800 voice"}, "style"),
    ({"schedule": [{"start": 1.0, "emotion": "happy \udfff"}]}, "emotion"),
    ({"schedule": [{"start": 1.0, "emotion": "y" * 2**20}]}, "limit is 1000"),
    ({"schedule": [{"start": -1, "emotion": "sad"}]}, "start must be a finite number of seconds >= 0"),
    ({"schedule": [{"start": 1e308, "emotion": "sad"}]}, "after the end of the audio"),
    ({"schedule": [{"start": 99.0, "emotion": "sad"}]}, "after the end of the audio"),
    ({"schedule": [{"start": "1", "emotion": "sad"}]}, "start must be a number of seconds"),
    ({"schedule": [{"start": 0.99, "emotion": "a"}, {"start": 1.0, "emotion": "b"}]}, "fall on the same motion frame"),
    ({"schedule": [{"start": 1.0, "emotion": "a"}, {"start": 1.0, "emotion": "b"}]}, "fall on the same motion frame"),
    ({"schedule": [{"start": 1.0, "mood": "a"}]}, "unknown key(s) 'mood'"),
    ({"schedule": [5]}, "expected an object"),
    ({"schedule": [{"start": 0}, {"emotion": "b"}]}, "start is missing"),
])
def test_bad_captions_and_schedules_are_refused_with_400(abused, fields, message):
    status, reply = submit(abused, request(SPEECH, **fields))
    if status == 202:
        abused.client.cancel(reply["job"])
    assert status == 400 and message in reply["error"], reply


def test_captions_with_control_characters_are_refused_and_unsorted_entries_sorted(abused):
    status, reply = submit(abused, request(SPEECH, style="calm\x1b[31m voice\x00"))
    assert status == 400 and "style" in reply["error"], reply
    fields = request(SPEECH, style="calm", schedule=[{"start": 3.0, "emotion": "sad"}, {"start": 1.0, "emotion": "happy"}])
    status, reply = submit(abused, fields)
    assert status == 202, reply
    state, _, result = follow(abused.client, reply["job"])
    assert state == "done", result
    assert [entry["start"] for entry in result["takes"][0]["meta"]["schedule"]] == [0.0, 1.0, 3.0]


# ---------------------------------------------------------------------------- audio sources
@pytest.fixture(scope="module")
def special_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("special")
    files = {"fifo": folder / "fifo.wav", "folder": folder / "folder.wav", "to /dev/zero": folder / "zero.wav",
             "dangling": folder / "dangling.wav", "sparse": folder / "sparse.wav",
             "sparse with a header": folder / "sparse-header.wav", "empty": folder / "empty.wav"}
    os.mkfifo(files["fifo"])
    files["folder"].mkdir()
    files["to /dev/zero"].symlink_to("/dev/zero")
    files["dangling"].symlink_to(folder / "nothing-here.wav")
    with open(files["sparse"], "wb") as handle:
        handle.truncate(10 * 2**30)
    with open(files["sparse with a header"], "wb") as handle:
        handle.write(wav_header(SAMPLE_RATE, 1, 10 * 2**30))
        handle.truncate(10 * 2**30)
    files["empty"].touch()
    return files


@pytest.mark.parametrize("case, message", [
    ("/dev/zero", "is a device, not an audio file"),
    ("/dev/null", "is a device, not an audio file"),
    ("/proc/self/environ", "the file is empty"),
    ("/proc/self/mem", "the file is empty"),
    ("/proc/self/fd/0", "is a device, not an audio file"),
    ("/proc/self/exe", "not a readable audio file"),
    ("/", "is a folder, not an audio file"),
    ("fifo", "is a pipe (FIFO), not an audio file"),
    ("folder", "is a folder, not an audio file"),
    ("to /dev/zero", "is a device, not an audio file"),
    ("dangling", "no such file"),
    ("sparse", "not a readable audio file"),
    ("sparse with a header", "longer than the limit of 30 min"),
    ("empty", "the file is empty"),
    ("/nonexistent/x.wav", "no such file"),
    ("/tmp/\x00.wav", "no such file"),
])
def test_special_audio_paths_are_refused_without_reading_them(abused, special_files, case, message):
    """No hang on a FIFO without a writer, no read of /dev/zero or of a 10 GB sparse file."""
    path = special_files.get(case, case)
    status, reply = submit(abused, request(path))
    assert status == 400 and message in reply["error"], reply


def test_a_symlink_to_real_audio_is_followed(abused, tmp_path):
    link = tmp_path / "link.wav"
    link.symlink_to(SPEECH)
    status, reply = submit(abused, request(link))
    assert status == 202
    assert follow(abused.client, reply["job"])[0] == "done"


def odd_rate_wav(rate: int, seconds: float = 6.0) -> bytes:
    """A 16 kHz WAV relabelled as ``rate`` Hz (the size of a real file, any header rate)."""
    samples = (speech_seconds(seconds) * 32767).astype("<i2").tobytes()
    return wav_header(rate, 1, len(samples)) + samples


@pytest.mark.parametrize("make, message", [
    (lambda: "!!! not base64 ???", "audio_bytes is not valid base64"),
    (lambda: "AAA", "audio_bytes is not valid base64"),
    (lambda: "QUFB\nQUFB", "audio_bytes is not valid base64"),
    (lambda: os.urandom(4096), "not a readable audio file"),
    (lambda: b"RIFF\x00\x00\x00\x00WAVEfmt " + os.urandom(300), "not a readable audio file"),
    (lambda: wav_bytes(np.zeros(0, np.float32), SAMPLE_RATE, format="WAV"), "contains no samples"),
    (lambda: odd_rate_wav(9_999_991), "its sample rate is 9999991 Hz"),
    (lambda: odd_rate_wav(2**31 - 1), "its sample rate is 2147483647 Hz"),
    (lambda: odd_rate_wav(3000), "its sample rate is 3000 Hz"),
    (lambda: wav_header(SAMPLE_RATE, 1, 2**32 - 64), "contains no samples"),
])
def test_bad_audio_bytes_are_refused(abused, make, message):
    data = make()
    encoded = data if isinstance(data, str) else base64.b64encode(data).decode()
    status, reply = submit(abused, {"audio_bytes": encoded})
    assert status == 400 and message in reply["error"], reply
    assert "BytesIO" not in reply["error"]


def test_a_header_claiming_a_huge_length_is_read_for_what_is_there(abused):
    """A WAV whose header claims 4 GB over 3 s of samples (a truncated file): decoded to
    what the file holds, no more allocated."""
    samples = (speech_seconds(3.0) * 32767).astype("<i2").tobytes()
    status, reply = submit(abused, {"audio_bytes": base64.b64encode(wav_header(SAMPLE_RATE, 1, 2**32 - 64)
                                                                    + samples).decode()})
    assert status == 202, reply
    state, _, result = follow(abused.client, reply["job"])
    assert state == "done" and result["takes"][0]["frames"] == frame_count(3 * SAMPLE_RATE)


@pytest.mark.parametrize("rate, channels, fmt, subtype", [
    (8000, 1, "WAV", "PCM_16"),
    (96000, 6, "WAV", "PCM_24"),
    (44100, 2, "FLAC", "PCM_16"),
    (48000, 1, "OGG", "VORBIS"),
    (44100, 2, "MP3", "MPEG_LAYER_III"),
    (22050, 1, "AIFF", "PCM_16"),
    (11025, 1, "WAV", "PCM_U8"),
])
def test_odd_but_real_audio_formats_generate(abused, rate, channels, fmt, subtype):
    from model.core.audio import resample

    seconds = 3.0
    mono = resample(speech_seconds(seconds), SAMPLE_RATE, rate)
    data = wav_bytes(np.repeat(mono[:, None], channels, axis=1) * 0.5, rate, format=fmt, subtype=subtype)
    status, reply = submit(abused, {"audio_bytes": base64.b64encode(data).decode(), "options": {"seed": 1}})
    assert status == 202, reply
    state, _, result = follow(abused.client, reply["job"])
    assert state == "done", result
    frames = result["takes"][0]["frames"]
    # lossy codecs add their encoder delay (MP3: up to about 0.1 s)
    assert frames == frame_count(int(seconds * SAMPLE_RATE)) if fmt in ("WAV", "FLAC", "AIFF") else 70 <= frames <= 82


# ---------------------------------------------------------------------------- jobs and queries
@pytest.fixture(scope="module")
def finished_job(abused) -> str:
    job, _ = abused.client.submit(_request_object(SPEECH, options={"seed": 9}))
    follow_events_only(abused.client, job)
    return job


@pytest.mark.parametrize("path, status, message", [
    ("/jobs/{job}/events?wait=nan", 400, "wait must be a number >= 0"),
    ("/jobs/{job}/events?wait=inf", 400, "wait must be a number >= 0"),
    ("/jobs/{job}/events?wait=-1", 400, "wait must be a number >= 0"),
    ("/jobs/{job}/events?wait=1e999", 400, "wait must be a number >= 0"),
    ("/jobs/{job}/events?after=-5", 400, "after must be a whole number >= 0"),
    ("/jobs/{job}/events?after=1.5", 400, "after must be a whole number >= 0"),
    ("/jobs/{job}/events?after=" + "9" * 5000, 400, "after must be a whole number >= 0"),
    ("/jobs/{job}/events?after=99999999999999999999&wait=1e9", 200, ""),
    ("/jobs/{unknown}/events?wait=30", 404, "no such job"),
    ("/jobs/{unknown}/result", 404, "no such job"),
    ("/jobs/../health/result", 404, "no such request"),
    ("/jobs/%00/result", 404, "no such job"),
    ("/jobs/{job}/explode", 404, "no such request"),
    ("/nothing", 404, "no such request"),
])
def test_queries_and_ids_out_of_bounds(abused, finished_job, path, status, message):
    """A finished job (kept until its result is taken) answers at once, so a huge wait on
    it returns; the long poll's 30 s cap holds whatever is asked."""
    job = finished_job
    got, reply = call(abused.port, "GET", path.format(job=job, unknown="f" * 32), {TOKEN_HEADER: abused.token})
    assert got == status and message in reply.get("error", ""), reply


def _request_object(path: Path, style: str = "", emotion: str = "", schedule=(), options=None, **fields):
    """A request as the add-on makes one (`GenerationRequest` with a `Schedule`)."""
    from model.core.contract import GenerationOptions, GenerationRequest
    from model.core.schedule import parse_schedule

    return GenerationRequest(audio_path=str(path), schedule=parse_schedule(list(schedule), style, emotion),
                             options=GenerationOptions(**(options or {})), **fields)


def follow_events_only(client: WorkerClient, job: str) -> None:
    after = 0
    while True:
        events, state = client.events(job, after)
        after = events[-1]["seq"] if events else after
        if state in ("done", "failed", "cancelled"):
            return


def test_cancel_and_result_of_unknown_or_taken_ids(abused):
    client = abused.client
    other = WorkerClient(client.session)  # a second Blender session
    job, _ = client.submit(_request_object(SPEECH))
    follow_events_only(client, job)
    assert len(client.result(job)) == 1
    for caller in (client, other):
        for method, action in (("GET", "result"), ("POST", "cancel"), ("GET", "events")):
            with pytest.raises(WorkerError, match="no such job") as caught:
                caller._call(method, f"/jobs/{job}/{action}", {} if method == "POST" else None)
            assert caught.value.status == 404
    with pytest.raises(WorkerError, match="no such job"):
        other.cancel(os.urandom(16).hex())


def test_attach_refuses_what_would_keep_the_worker_alive_forever(abused):
    """The rule: only a running process of the user running the worker, never pid 1 (init)
    nor the worker itself; pids beyond Linux's pid_max ceiling are no pids."""
    nobody = subprocess.Popen(["sleep", "60"], user=65534) if os.getuid() == 0 else None
    try:
        cases = [(b"[]", "the body must be"), (b"5", "the body must be"), (b'{"pid": "12"}', "the body must be"),
                 (b'{"pid": -1}', "the body must be"), (b'{"pid": 0}', "the body must be"),
                 (b'{"pid": true}', "the body must be"), (b'{"pid": 1.5}', "the body must be"),
                 (json.dumps({"pid": 2**70}).encode(), "the body must be"),
                 (json.dumps({"pid": 2**22 + 1}).encode(), "the body must be"),
                 (b'{"pid": 1}', "is init, which never exits"),
                 (json.dumps({"pid": abused.process.pid}).encode(), "is the worker itself"),
                 (json.dumps({"pid": 2**22}).encode(), "does not exist"),
                 (b"[" * 100_000, "the worker's limit")]
        if nobody is not None:
            cases.append((json.dumps({"pid": nobody.pid}).encode(), "belongs to another user"))
        for body, message in cases:
            status, reply = post(abused.port, abused.token, body, "/attach")
            assert status in (400, 413) and message in reply["error"], (body[:40], reply)
    finally:
        if nobody is not None:
            nobody.kill()
            nobody.wait()
    health = abused.client.health()
    assert health["owners"] == [] and health["ok"]


# ---------------------------------------------------------------------------- load
def test_fifty_clients_with_three_jobs_each_get_identical_motion_per_seed(abused, tmp_path):
    clip = tmp_path / "one-second.wav"
    soundfile.write(clip, speech_seconds(1.0), SAMPLE_RATE)
    results: dict[tuple[int, int], np.ndarray] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        client = WorkerClient(abused.client.session)
        try:
            for take in range(3):
                clips = client.generate(_request_object(clip, options={"seed": index % 5}))
                results[(index, take)] = clips[0].motion
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors[:3]
    assert len(results) == 150
    for (index, _), motion in results.items():
        np.testing.assert_array_equal(motion, results[(index % 5, 0)])


def test_the_queue_is_bounded_and_answers_while_a_job_runs(abused, tmp_path):
    long_clip, short_clip = tmp_path / "long.wav", tmp_path / "short.wav"
    soundfile.write(long_clip, speech_seconds(600.0), SAMPLE_RATE)  # runs while the others are queued
    soundfile.write(short_clip, speech_seconds(1.0), SAMPLE_RATE)
    client = abused.client
    running, _ = client.submit(_request_object(long_clip))
    jobs = [running] + [client.submit(_request_object(short_clip))[0] for _ in range(MAX_PENDING - 1)]
    with pytest.raises(WorkerError, match=f"{MAX_PENDING} jobs are queued or running") as caught:
        client.submit(_request_object(short_clip))
    assert caught.value.status == 429
    # while the long job runs: health, a bad request, events, all answered
    health = client.health()
    assert health["jobs"]["queued"] + health["jobs"]["running"] == MAX_PENDING
    with pytest.raises((WorkerError, RequestError), match="no such file"):
        client.submit(_request_object(tmp_path / "missing.wav"))
    for job in reversed(jobs):  # the queued ones first, or each would start in turn
        assert client.cancel(job) in ("cancelled", "running")
    wait_idle(client)
    assert client.submit(_request_object(short_clip))[1] == 0, "the queue takes jobs again"


def test_cancel_during_speech_encoding_stops_the_job(abused, tmp_path):
    """29 minutes of 96 kHz 6-channel audio (a 2 GB sparse WAV: silence): checked with the
    memory of its 16 kHz mono result (not 8.6 GB as when decoded whole), and a cancel
    during the speech encoder stops the job there, before the captions and windows."""
    path = tmp_path / "long-96k-6ch.wav"
    frames = 29 * 60 * 96000
    with open(path, "wb") as handle:
        handle.write(wav_header(96000, 6, frames * 12))
        handle.truncate(44 + frames * 12)
    client = WorkerClient(abused.client.session, timeout=600)  # reading 2 GB takes a while on a busy machine
    before = status_of(abused.process.pid)
    job, _ = client.submit(_request_object(path, style="calm"))
    peak = status_of(abused.process.pid)["peak_mb"]
    print(f"\n29 min 96 kHz 6 ch: peak RSS {before['peak_mb']:.0f} MB before, {peak:.0f} MB after the check")
    assert peak - max(before["peak_mb"], before["rss_mb"]) < 800
    after, messages = 0, []
    while "encoding speech" not in messages:
        events, state = client.events(job, after)
        assert state in ("queued", "running")
        after = events[-1]["seq"] if events else after
        messages += [e["message"] for e in events]
    assert client.cancel(job) == "running"
    state, events, result = follow(client, job)
    messages += [e["message"] for e in events]
    # speech is encoded chunk by chunk as the windows need it: the job stops before its first window
    assert state == "cancelled" and "cancelled after 0 of" in result["error"], result
    assert not any(m.startswith("window") for m in messages), messages


def test_cancel_during_caption_encoding_stops_the_job(abused, tmp_path):
    """60 s of speech with 700 caption sections (each its own text to encode): a cancel
    while the captions are encoded stops the job there, before the first window."""
    clip = tmp_path / "minute.wav"
    soundfile.write(clip, speech_seconds(60.0), SAMPLE_RATE)
    schedule = [{"start": round(0.08 * i, 2), "emotion": f"mood number {i}"} for i in range(700)]
    job, _ = abused.client.submit(_request_object(clip, schedule=tuple(schedule)))
    after, messages = 0, []
    while "encoding captions" not in messages:
        events, state = abused.client.events(job, after)
        assert state in ("queued", "running")
        after = events[-1]["seq"] if events else after
        messages += [e["message"] for e in events]
    abused.client.cancel(job)
    state, events, result = follow(abused.client, job)
    messages += [e["message"] for e in events]
    assert state == "cancelled" and messages[-2] == "encoding captions", messages
    assert not any(m.startswith("window") for m in messages)


# ---------------------------------------------------------------------------- slow and idle clients
def test_slow_and_silent_connections_time_out_and_block_nobody(abused):
    """A connection that never sends its request line, one that sends its headers a byte
    at a time, one whose body never comes: each is closed by the worker after its request
    timeout, and meanwhile /health and a submit are answered as usual."""
    port, token = abused.port, abused.token
    silent = socket.create_connection(("127.0.0.1", port), timeout=120)
    dribble = socket.create_connection(("127.0.0.1", port), timeout=120)
    stalled = socket.create_connection(("127.0.0.1", port), timeout=120)
    stalled.sendall(f"POST /jobs HTTP/1.1\r\nHost: x\r\n{TOKEN_HEADER}: {token}\r\nContent-Length: 5000\r\n\r\n"
                    '{"audio_path": '.encode())
    closed: dict[str, bool] = {}
    give_up = threading.Event()

    def drip() -> None:
        request_text = f"GET /health HTTP/1.1\r\nHost: x\r\n{TOKEN_HEADER}: {token}\r\n" + "X-Pad: y\r\n" * 1000
        try:
            for byte in request_text.encode():
                dribble.send(bytes([byte]))
                if give_up.wait(0.05):
                    break
            closed["dribble"] = False
        except OSError:
            closed["dribble"] = True

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    assert call(port, "GET", "/health", {TOKEN_HEADER: token})[0] == 200
    job, _ = abused.client.submit(_request_object(SPEECH))  # waits for the stalled body's timeout at most
    follow_events_only(abused.client, job)
    abused.client.result(job)
    for name, sock in (("silent", silent), ("stalled", stalled)):
        try:
            data = sock.recv(65536)
            closed[name] = data == b"" or data.startswith(b"HTTP/1.0 400")
        except TimeoutError:
            closed[name] = False  # still open after 120 s
        except OSError:
            closed[name] = True  # reset by the worker
        sock.close()
    dripper.join(timeout=REQUEST_TIMEOUT * 10)
    give_up.set()
    dripper.join()
    dribble.close()
    assert closed == {"silent": True, "stalled": True, "dribble": True}


def test_many_idle_connections_never_lock_clients_out(abused):
    """Three times the connection cap, all idle: the oldest are closed for newcomers, the
    worker's threads and descriptors stay bounded, and /health is answered throughout."""
    pid = abused.process.pid
    idle = []
    for index in range(3 * MAX_CONNECTIONS):
        idle.append(socket.create_connection(("127.0.0.1", abused.port), timeout=30))
        if index % MAX_CONNECTIONS == 0:
            assert call(abused.port, "GET", "/health", {TOKEN_HEADER: abused.token}, timeout=30)[0] == 200
    time.sleep(1.0)  # let the worker accept what is in its backlog
    during = status_of(pid)
    assert call(abused.port, "GET", "/health", {TOKEN_HEADER: abused.token}, timeout=30)[0] == 200
    print(f"\nwith {len(idle)} idle connections: {during} (baseline {abused.baseline})")
    assert during["threads"] <= abused.baseline["threads"] + MAX_CONNECTIONS + 4
    assert during["fds"] <= abused.baseline["fds"] + 2 * MAX_CONNECTIONS + 4  # accepted + the listen backlog
    for sock in idle:
        sock.close()
    after = settled(pid, lambda s: s["fds"] <= abused.baseline["fds"])
    assert after["fds"] == abused.baseline["fds"]


def test_out_of_descriptors_the_worker_keeps_answering(tiny_checkpoint, tmp_path):
    """A worker with few descriptors left, flooded with idle connections: it neither spins
    nor stops answering (an idle connection is closed to make room)."""
    process, ready = launch(tiny_checkpoint[1], tmp_path, nofile=MAX_CONNECTIONS)
    try:
        client = WorkerClient(read_session(tmp_path / "worker.json"))
        start_fds = status_of(process.pid)["fds"]
        assert start_fds < MAX_CONNECTIONS / 2, "the test needs the limit well above the worker's own descriptors"
        idle = [socket.create_connection(("127.0.0.1", ready["port"]), timeout=30) for _ in range(2 * MAX_CONNECTIONS)]
        time.sleep(1.0)
        for _ in range(5):
            assert client.health()["ok"]
        deadline = time.monotonic() + 300
        while not client.health()["warm"] and time.monotonic() < deadline:  # the encoders' background load
            time.sleep(0.5)                                                 # is work, not a spinning loop
        cpu = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        busy_before = int(cpu[11]) + int(cpu[12])
        time.sleep(2.0)
        cpu = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(cpu[11]) + int(cpu[12]) - busy_before
        print(f"\nat a {MAX_CONNECTIONS}-descriptor limit with {len(idle)} idle connections: "
              f"{ticks / os.sysconf('SC_CLK_TCK'):.2f} s CPU in 2 s")
        assert ticks < 2.0 * os.sysconf("SC_CLK_TCK") * 0.5, "the accept loop spins"
        for sock in idle:
            sock.close()
        assert client.generate(_request_object(SPEECH))[0].num_frames > 0
    finally:
        stderr = stop(process)
    assert "Traceback" not in stderr, stderr[-3000:]


# ---------------------------------------------------------------------------- a killed worker
def test_kill_9_mid_job_leaves_no_temp_files_and_a_new_worker_starts(tiny_checkpoint, tmp_path):
    long_clip = tmp_path / "long.wav"
    soundfile.write(long_clip, speech_seconds(120.0), SAMPLE_RATE)
    process, _ = launch(tiny_checkpoint[1], tmp_path / "first")
    client = WorkerClient(read_session(tmp_path / "first" / "worker.json"))
    job, _ = client.submit(_request_object(long_clip))
    after, messages = 0, []
    while not any(m.startswith("window") for m in messages):
        events, _ = client.events(job, after)
        after = events[-1]["seq"] if events else after
        messages += [e["message"] for e in events]
    process.kill()
    process.communicate(timeout=60)
    with pytest.raises(WorkerGone, match="does not answer"):
        client.events(job, after)
    assert not list((tmp_path / "first" / "tmp").iterdir()), "the worker leaves no temp files"
    # the same session file: the dead worker's lock went with it, its stale file is replaced
    second, ready = launch(tiny_checkpoint[1], tmp_path / "first")
    try:
        again = WorkerClient(read_session(tmp_path / "first" / "worker.json"))
        assert again.session.pid == ready["pid"] != process.pid
        assert again.generate(_request_object(SPEECH))[0].num_frames > 0
    finally:
        stop(second)


# ---------------------------------------------------------------------------- afterwards (keep last)
def test_memory_descriptors_and_temp_files_return_to_their_level(abused):
    wait_idle(abused.client)
    baseline = abused.baseline
    after = settled(abused.process.pid, lambda s: s["fds"] <= baseline["fds"])
    print(f"\nworker after the abuse: {after} (baseline {baseline})")
    assert after["fds"] == baseline["fds"], "descriptors leaked"
    assert after["threads"] <= baseline["threads"], "threads leaked"
    # what stays is the allocators' own (torch's, Python's): measured +40 MB after this suite
    assert after["rss_mb"] < baseline["rss_mb"] + 100, "resident memory did not come back"
    assert not list((abused.folder / "tmp").iterdir()), "the worker leaves no temp files"
    assert abused.client.health()["ok"]
