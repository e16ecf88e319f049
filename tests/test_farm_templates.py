"""The farm templates, run as far as this machine allows: the Open Job Description template
checked and run by `openjd` (its tasks run the real batch, one shard each), and the
Flamenco job type's compileJob run under Node with a stub `author`. Also: shards together
give exactly an unsharded run's motion."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = REPO_ROOT / "farm" / "templates"
OPENJD = Path(sys.executable).with_name("openjd")
NAMES = ("alpha", "bravo", "charlie", "delta")


def lines(folder: Path) -> Path:
    with wave.open(str(REPO_ROOT / "samples" / "speech_sample.wav")) as source:
        params = source.getparams()
        frames = source.readframes(int(0.5 * params.framerate))
    for name in NAMES:
        with wave.open(str(folder / f"{name}.wav"), "wb") as target:
            target.setparams(params)
            target.writeframes(frames)
    jobs = folder / "jobs.json"
    jobs.write_text(json.dumps([{"name": n, "audio": f"{n}.wav", "seed": i,
                                 "schedule": [{"start": 0.2, "emotion": "happy"}]} for i, n in enumerate(NAMES)]))
    return jobs


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", CAPTALK_BACKEND_PYTHON=os.environ.get("CAPTALK_BACKEND_PYTHON",
                                                                                        sys.executable))


@pytest.mark.skipif(not OPENJD.exists(), reason="openjd-cli is in requirements/backend.txt")
def test_the_openjd_template_passes_openjd_check():
    result = subprocess.run([str(OPENJD), "check", str(TEMPLATES / "captalk_batch.openjd.yaml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "passes validation" in result.stdout, result.stdout + result.stderr


@pytest.mark.skipif(not OPENJD.exists(), reason="openjd-cli is in requirements/backend.txt")
def test_openjd_run_of_two_shards_gives_the_unsharded_runs_motion_bit_for_bit(tmp_path, data_dir, open_head_file,
                                                                              tiny_checkpoint):
    pytest.importorskip("bpy")
    from model.core.batch_jobs import shard_of
    from model.core.motion_file import load_motion

    jobs = lines(tmp_path)
    assert {shard_of(n, 2) for n in NAMES} == {1, 2}  # both shards have lines
    sharded, whole = tmp_path / "sharded", tmp_path / "whole"
    result = subprocess.run(
        [str(OPENJD), "run", str(TEMPLATES / "captalk_batch.openjd.yaml"), "-p", f"JobsFile={jobs}",
         "-p", f"OutDir={sharded}", "-p", f"CapTalkRoot={REPO_ROOT}", "-p", f"Python={sys.executable}",
         "-p", f"Checkpoint={tiny_checkpoint[1]}", "-p", "Shards=2", "-p", "Render=--no-render"],
        capture_output=True, text=True, timeout=900, env=env())
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    batch = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "captalk_batch.py"), "--jobs", str(jobs),
                            "--out", str(whole), "--checkpoint", str(tiny_checkpoint[1]), "--no-render"],
                           capture_output=True, text=True, timeout=900, env=env())
    assert batch.returncode == 0, batch.stdout[-3000:] + batch.stderr[-3000:]
    files = {p.name for p in sharded.iterdir()}
    assert files == {p.name for p in whole.iterdir()} == \
        {f"{n}{s}" for n in NAMES for s in (".blend", "_motion.npz")} | {"manifest.jsonl"}
    for name in NAMES:
        a, b = load_motion(sharded / f"{name}_motion.npz"), load_motion(whole / f"{name}_motion.npz")
        assert a.motion.tobytes() == b.motion.tobytes()  # bit for bit
        assert a.meta["batch_record"] == b.meta["batch_record"]
    manifest = [json.loads(line) for line in (sharded / "manifest.jsonl").read_text().splitlines()]
    assert sorted((e["job"], e["shard"]) for e in manifest) == sorted((n, f"{shard_of(n, 2)}/2") for n in NAMES)


NODE_HARNESS = r"""
const fs = require("fs"), vm = require("vm"), nodePath = require("path");
const [file, settingsJson] = process.argv.slice(2);
const made = [];
const author = {
  Task: (name, type) => { const t = {name, type, commands: [], addCommand(c) { this.commands.push(c); }};
                          return t; },
  Command: (type, parameters) => ({type, parameters}),
};
const context = {author, path: nodePath.posix, console};
vm.createContext(context);
vm.runInContext(fs.readFileSync(file, "utf8") + "\nthis.JOB_TYPE = JOB_TYPE; this.compileJob = compileJob;", context);
const job = {settings: JSON.parse(settingsJson), tasks: [], addTask(t) { this.tasks.push(t); }};
try { context.compileJob(job); } catch (e) { console.log(JSON.stringify({error: String(e)})); process.exit(0); }
console.log(JSON.stringify({jobType: context.JOB_TYPE, tasks: job.tasks}));
"""


def compile_flamenco(tmp_path: Path, settings: dict) -> dict:
    harness = tmp_path / "harness.js"
    harness.write_text(NODE_HARNESS)
    result = subprocess.run(["node", str(harness), str(TEMPLATES / "captalk_batch_flamenco.js"), json.dumps(settings)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node")
def test_the_flamenco_job_type_makes_one_blender_task_per_shard(tmp_path):
    settings = {"jobs_file": "/farm/show/jobs.json", "out_dir": "/farm/show/out", "captalk_root": "/farm/captalk",
                "blendfile": "/farm/show/base.blend", "checkpoint": "/farm/models/hero", "shards": 3,
                "render": False}
    compiled = compile_flamenco(tmp_path, settings)
    keys = {s["key"] for s in compiled["jobType"]["settings"]}
    assert set(settings) <= keys
    tasks = compiled["tasks"]
    assert [t["name"] for t in tasks] == [f"captalk-shard-{i}-of-3" for i in (1, 2, 3)]
    for number, task in enumerate(tasks, start=1):
        assert task["type"] == "blender"
        (command,) = task["commands"]
        assert command["type"] == "blender-render"
        parameters = command["parameters"]
        assert parameters["exe"] == "{blender}" and parameters["blendfile"] == "/farm/show/base.blend"
        args = parameters["args"]
        assert args[:3] == ["--python", "/farm/captalk/scripts/captalk_batch.py", "--"]
        options = args[3:]
        assert options[options.index("--shard") + 1] == f"{number}/3"
        assert options[options.index("--jobs") + 1] == "/farm/show/jobs.json"
        assert options[options.index("--out") + 1] == "/farm/show/out"
        assert options[options.index("--checkpoint") + 1] == "/farm/models/hero"
        assert "--skip-existing" in options and "--no-render" in options and "--render" not in options
    compiled = compile_flamenco(tmp_path, dict(settings, shards=0))
    assert "shards must be" in compiled["error"]
