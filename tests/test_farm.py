"""The batch on Ray (farm/): a loopback cluster of a head and two worker nodes, all on
127.0.0.1 (`ray.cluster_utils.Cluster`; never `ray start --node-ip-address`, which binds
the outward address). The farm runs as the user runs it, a process joining the cluster."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "samples" / "speech_sample.wav"
LOOPBACK = {"node_ip_address": "127.0.0.1"}


def speech(path: Path, seconds: float, offset: float = 0.0) -> Path:
    with wave.open(str(SAMPLE)) as source:
        params = source.getparams()
        source.setpos(int(offset * params.framerate))
        frames = source.readframes(int(seconds * params.framerate))
    with wave.open(str(path), "wb") as target:
        target.setparams(params)
        target.writeframes(frames)
    return path


def job_list(folder: Path, lines: list[dict]) -> Path:
    path = folder / "jobs.json"
    path.write_text(json.dumps({"jobs": lines}))
    return path


@pytest.fixture(scope="module")
def cluster(data_dir, open_head_file):
    """Head (no CPUs: it only schedules) and two worker nodes of 3 CPUs each (after one is lost the other still fits both actors and a Blender step), on 127.0.0.1."""
    from ray.cluster_utils import Cluster

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, **LOOPBACK})
    nodes = [cluster.add_node(num_cpus=3, **LOOPBACK) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, nodes
    cluster.shutdown()


def farm_command(jobs: Path, out: Path, checkpoint: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "farm", str(jobs), "--out", str(out), "--checkpoint", str(checkpoint),
            "--no-render", *extra]


def farm_env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def run_farm(*args) -> subprocess.CompletedProcess:
    return subprocess.run(farm_command(*args), cwd=REPO_ROOT, env=farm_env(), capture_output=True, text=True,
                          timeout=900)


def outputs_of(out: Path) -> dict:
    return {p.name: p for p in out.iterdir()}


def test_a_killed_node_loses_no_line_and_a_second_run_does_nothing(tmp_path, cluster, tiny_checkpoint):
    cluster_, (first_node, second_node) = cluster
    names = [f"line{i}" for i in range(4)]
    for i, name in enumerate(names):
        speech(tmp_path / f"{name}.wav", 0.6, offset=0.3 * i)
    jobs = job_list(tmp_path, [{"name": n, "audio": f"{n}.wav", "seed": i} for i, n in enumerate(names)])
    out = tmp_path / "out"
    process = subprocess.Popen(farm_command(jobs, out, tiny_checkpoint[1], "--address", cluster_.address,
                                            "--workers", "2"),
                               cwd=REPO_ROOT, env=farm_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines = []
    try:
        for line in process.stdout:  # mid-run: the first line is finished, the others are not
            lines.append(line)
            if line.startswith("farm: done line"):
                cluster_.remove_node(second_node, allow_graceful=False)
                break
        rest, _ = process.communicate(timeout=900)
    finally:
        process.kill()
    output = "".join(lines) + rest
    assert process.returncode == 0, output[-4000:]
    assert "farm: finished: 4 done, 0 skipped, 0 failed" in output, output[-4000:]
    from model.core.motion_file import load_motion

    expected = {f"{n}{suffix}" for n in names for suffix in (".blend", "_motion.npz")} | {"manifest.jsonl"}
    assert set(outputs_of(out)) == expected  # each once; no temporary (hidden) files
    for name in names:
        clip = load_motion(out / f"{name}_motion.npz")  # whole
        assert clip.num_frames == 15 and clip.meta["batch_record"]["inputs"]["seed"] == names.index(name)
        head = (out / f"{name}.blend").read_bytes()[:7]
        assert head == b"BLENDER" or head[:4] == b"\x28\xb5\x2f\xfd"  # a .blend, plain or zstd-compressed (5.0)
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted((e["job"], e["status"]) for e in manifest) == [(n, "done") for n in names]
    assert all(e["timings"]["generate_s"] > 0 and e["outputs"]["blend"] == f"{e['job']}.blend" for e in manifest)

    again = run_farm(jobs, out, tiny_checkpoint[1], "--address", cluster_.address)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "0 to run" in again.stdout and "0 done, 4 skipped, 0 failed" in again.stdout
    assert set(outputs_of(out)) == expected
    cluster_.add_node(num_cpus=3, **LOOPBACK)  # for the next test


def test_a_bad_line_is_reported_and_the_others_finish(tmp_path, cluster, tiny_checkpoint):
    cluster_, _ = cluster
    speech(tmp_path / "good.wav", 0.6)
    (tmp_path / "noise.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    jobs = job_list(tmp_path, [{"name": "good", "audio": "good.wav"}, {"name": "broken", "audio": "noise.wav"}])
    out = tmp_path / "out"
    result = run_farm(jobs, out, tiny_checkpoint[1], "--address", cluster_.address)
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 done, 0 skipped, 1 failed" in result.stdout and "failed: broken:" in result.stdout
    assert "not a readable audio file" in result.stdout
    assert set(outputs_of(out)) == {"good.blend", "good_motion.npz", "manifest.jsonl"}
    manifest = {e["job"]: e for e in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert manifest["broken"]["status"] == "failed" and "readable" in manifest["broken"]["error"]


def test_a_missing_checkpoint_or_blender_stops_before_anything_starts(tmp_path, tiny_checkpoint):
    speech(tmp_path / "a.wav", 0.4)
    jobs = job_list(tmp_path, [{"audio": "a.wav"}])
    out = tmp_path / "out"
    result = run_farm(jobs, out, tmp_path / "no-model")
    assert result.returncode == 3 and "no motion model at" in result.stderr and "Nothing was started" in result.stderr
    result = run_farm(jobs, out, tiny_checkpoint[1], "--blender", str(tmp_path / "no-blender"))
    assert result.returncode == 3 and "the Blender steps cannot run" in result.stderr
    result = run_farm(jobs, out, tiny_checkpoint[1], "--blender", "/bin/false")  # runs, but has no bpy
    assert result.returncode == 3 and "cannot import bpy" in result.stderr
    for result in (result,):
        assert "Traceback" not in result.stderr and "farm: 1 line" not in result.stdout  # Ray never started
    assert not out.exists()
