"""The fuzz harnesses (tests/fuzz/) run for a bounded time over their corpus, and every
crash they found is a regular test here.

Each harness runs in its own process (libFuzzer via atheris) for $CAPTALK_FUZZ_SECONDS
(default 20) after replaying its whole corpus (tests/fuzz/corpus/<target>/, seeds plus the
inputs of issue 20 and the crashes found); any crash, escaping exception, hang
(-timeout) or memory past -rss_limit_mb fails the test, with the input in base64.
New inputs go to a temporary folder; `tests/fuzz/make_corpus.py` rewrites the seeds.
"""
from __future__ import annotations

import base64
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent / "fuzz"
CORPUS = FUZZ / "corpus"
FUZZ_SECONDS = int(os.environ.get("CAPTALK_FUZZ_SECONDS", "20"))
FUZZ_ADDRESS_SPACE = 4 << 30  # bytes a harness may map: the interpreter and numpy need about 1 GB


def run_fuzzer(target: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, list[Path]]:
    new = tmp_path / "new"
    new.mkdir()
    # Memory is bounded by the address space, not libFuzzer's -rss_limit_mb: Linux carries a
    # process's peak RSS across fork and exec, so a child of a test session grown to 2 GB would
    # read as out of memory before its first input. An input that allocates past the limit
    # raises MemoryError in the harness, which reports it as a crash.
    command = [sys.executable, str(FUZZ / f"fuzz_{target}.py"), str(new), str(CORPUS / target),
               f"-max_total_time={FUZZ_SECONDS}", "-rss_limit_mb=0", "-timeout=20", "-max_len=8192",
               f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (FUZZ_ADDRESS_SPACE, FUZZ_ADDRESS_SPACE))

    result = subprocess.run(command, capture_output=True, text=True, timeout=FUZZ_SECONDS + 300, env=env,
                            preexec_fn=limit_memory)
    artifacts = [p for p in tmp_path.iterdir() if p.name.split("-")[0] in ("crash", "oom", "timeout", "leak")]
    return result, artifacts


@pytest.mark.parametrize("target", [
    "unpickler",
    "request",
    "audio",
])
def test_fuzzer_finds_no_crash(target, tmp_path, record_property):
    result, artifacts = run_fuzzer(target, tmp_path)
    stats = [line for line in result.stderr.splitlines() if line.startswith("stat::")]
    record_property("fuzz_stats", " ".join(stats))
    print(f"fuzz_{target}: {FUZZ_SECONDS} s", *stats, sep="\n  ")
    found = "\n".join(f"{p.name}: {base64.b64encode(p.read_bytes()[:4096]).decode()}" for p in artifacts)
    assert result.returncode == 0 and not artifacts, (
        f"fuzz_{target} found a crash (status {result.returncode}); add the input to tests/fuzz/corpus/{target}/ "
        f"as found-<what> and a regular test here:\n{found}\n{result.stderr[-4000:]}")


# ------------------------------------------------------------ found crashes
def test_request_with_a_huge_integer_start_is_a_400():
    """fuzz_request: ``audio_start`` 10**400 (JSON allows the integer) raised OverflowError in
    math.isfinite, a 500 instead of a 400."""
    from model.core.errors import BadInput
    from model.link.protocol import request_from_json

    body = json.loads((CORPUS / "request" / "start_huge_int").read_bytes())
    with pytest.raises(BadInput, match="audio_start"):
        request_from_json({**body, "audio_start": -10**400})
    request = request_from_json(body)  # a number >= 0: the audio then turns out too short
    assert request.audio_start == 10**400


_AUDIO_IN_CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
sys.path.insert(0, sys.argv[1])
from model.core.audio import AudioError, load_audio
try:
    load_audio(open(sys.argv[2], "rb").read(), max_seconds=2.0)
    print(json.dumps({"error": None}))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)[:300], "audio_error": isinstance(exc, AudioError)}))
"""


def test_a_wav_declaring_a_gigahertz_rate_is_refused_without_gigabytes():
    """fuzz_audio: a 64-byte WAV at 1,073,741,824 Hz made the resampler build a filter of
    billions of taps (out of memory at 2.6 GB under the fuzzer; issue 20 item 4)."""
    path = CORPUS / "audio" / "found-oom-rate-2-30"
    result = subprocess.run([sys.executable, "-c", _AUDIO_IN_CHILD, str(FUZZ.parents[1]), str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["audio_error"], outcome
