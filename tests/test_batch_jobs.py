"""The batch's job-list module (model/core/batch_jobs.py), in plain Python: names, shards,
records, staged writes and the manifest."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from model.core import batch_jobs
from model.core.batch_jobs import Job, JobListError, OutputConflict, StagedOutputs


def defaults(tmp_path) -> Job:
    return Job("default", tmp_path / "a.wav", "calm", "neutral")


@pytest.mark.parametrize("name, normal", [("x", "x"), ("./x", "x"), ("a//b", "a/b"), ("hero/line01", "hero/line01"),
                                          ("line.01", "line.01")])
def test_names_are_normalised_inside_out(name, normal):
    assert batch_jobs.normalise_name(name) == normal


@pytest.mark.parametrize("name", ["", " ", "../x", "a/../../x", "/etc/x", ".x", "a/.b", ".", "a\\b", "a\nb", "x" * 201,
                                  7, None])
def test_names_that_leave_out_or_hide_are_refused(name):
    with pytest.raises(JobListError):
        batch_jobs.normalise_name(name)


def test_strip_labels_that_clean_alike_get_distinct_stems():
    stems = batch_jobs.unique_stems(["line.01", "line_01", "Line 02", "other"])
    assert stems["other"] == "other" and stems["Line 02"] == "Line_02"
    assert stems["line.01"] != stems["line_01"] and {s[:7] for s in (stems["line.01"], stems["line_01"])} == {"line_01"}
    assert batch_jobs.unique_stems(["line_01", "line.01"]) == {k: stems[k] for k in ("line_01", "line.01")}


def test_a_job_list_resolves_paths_and_refuses_colliding_names(tmp_path):
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps({"jobs": [{"audio": "sub/a.wav"}, {"name": "./b", "audio": "/abs/b.wav", "rig": "r.pkl",
                                                                  "motion": "m.npz", "seed": 4}]}))
    first, second = batch_jobs.read_job_list(path, defaults(tmp_path))
    assert first.name == "a" and first.audio == tmp_path / "sub" / "a.wav" and first.style == "calm"
    assert second.name == "b" and second.audio == Path("/abs/b.wav") and second.rig == str(tmp_path / "r.pkl")
    assert second.motion == str(tmp_path / "m.npz") and second.seed == 4
    path.write_text(json.dumps([{"audio": "x.wav"}, {"audio": "X.wav"}]))
    with pytest.raises(JobListError, match="names must be unique"):
        batch_jobs.read_job_list(path, defaults(tmp_path))


@pytest.mark.parametrize("text", ["3/2", "0/2", "1/0", "a/b", "1", "", "-1/2"])
def test_a_shard_must_be_i_of_n(text):
    with pytest.raises(JobListError):
        batch_jobs.parse_shard(text)


def test_shards_split_by_name_alone_and_cover_every_job_once(tmp_path):
    jobs = [Job(f"line{i:04d}", tmp_path / "a.wav", "", "") for i in range(200)]
    parts = [batch_jobs.select_shard(jobs, (i, 3)) for i in (1, 2, 3)]
    assert sorted(j.name for part in parts for j in part) == sorted(j.name for j in jobs)
    assert all(len(part) > 40 for part in parts)
    reordered = batch_jobs.select_shard(list(reversed(jobs[:50])), (2, 3))  # other order, fewer jobs: same shard
    assert {j.name for j in reordered} == {j.name for j in parts[1] if j in jobs[:50]}


def test_outputs_that_are_inputs_are_refused(tmp_path):
    scene = tmp_path / "shot01.blend"
    scene.write_bytes(b"BLENDER")
    outputs = batch_jobs.outputs_of(tmp_path, "shot01", render=True)
    with pytest.raises(OutputConflict, match="one of the inputs"):
        batch_jobs.check_not_inputs([("shot01", p) for p in outputs.files()], [scene])
    batch_jobs.check_not_inputs([("shot02", p) for p in batch_jobs.outputs_of(tmp_path, "shot02", True).files()],
                                [scene])


def test_an_unwritable_out_is_refused_and_nothing_is_left(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(batch_jobs.BadInput, match="not a folder"):
        batch_jobs.check_writable_folder(blocker / "out")
    with pytest.raises(batch_jobs.BadInput, match="cannot write"):
        batch_jobs.check_writable_folder(Path("/proc/captalk-out"))
    batch_jobs.check_writable_folder(tmp_path / "new" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_staged_outputs_appear_together_or_not_at_all(tmp_path):
    finals = [tmp_path / "x.mp4", tmp_path / "x.blend", tmp_path / "x_motion.npz"]
    stale = [tmp_path / ".x.blend.dead.partial.blend@",  # left by killed processes: Blender's, atomic_write's
             tmp_path / "..x_motion.npz.dead.partial.npz.k3j2.npz"]
    for path in stale:
        path.write_text("old")
    (tmp_path / ".x.mp4-notes").write_text("not ours")
    stage = StagedOutputs(finals)
    assert not any(path.exists() for path in stale)
    (tmp_path / ".x.mp4-notes").unlink()
    for final in finals[:2]:
        stage.path(final).write_text("new")
    with pytest.raises(RuntimeError, match="not written"):
        stage.commit()  # the motion file is missing: nothing is renamed
    assert not any(f.exists() for f in finals)
    stage.path(finals[2]).write_text("new")
    stage.commit()
    assert [f.read_text() for f in finals] == ["new"] * 3 and sorted(os.listdir(tmp_path)) == sorted(f.name for f in finals)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == set()  # signals are not left held
    second = StagedOutputs(finals)
    second.path(finals[0]).write_text("newer")
    second.discard()
    assert [f.read_text() for f in finals] == ["new"] * 3 and len(os.listdir(tmp_path)) == 3


def test_skip_existing_needs_every_file_and_the_same_record(tmp_path):
    import numpy as np

    from model.core.motion_file import MotionClip, save_motion

    audio = tmp_path / "a.wav"
    audio.write_bytes(b"sound")
    job = Job("a", audio, "calm", "neutral", seed=1)
    settings = batch_jobs.output_settings(False)
    record = batch_jobs.job_record(job, "checkpoint:x", "empty", settings)
    outputs = batch_jobs.outputs_of(tmp_path / "out", "a", render=False)
    assert batch_jobs.plan_run([(job, outputs, record)], tmp_path, False, True)[0]  # nothing there: run
    outputs.blend.parent.mkdir()
    outputs.blend.write_bytes(b"BLENDER")
    clip = MotionClip(np.zeros((2, 1), np.float32), ("jawOpen",), meta={batch_jobs.RECORD_KEY: record})
    save_motion(outputs.motion, clip)
    assert batch_jobs.plan_run([(job, outputs, record)], tmp_path, False, True) == ([], [(job, outputs, record)])
    other = batch_jobs.job_record(job.__class__(**{**job.__dict__, "seed": 2}), "checkpoint:x", "empty", settings)
    with pytest.raises(OutputConflict, match="--overwrite"):
        batch_jobs.plan_run([(job, outputs, other)], tmp_path, False, True)
    with pytest.raises(OutputConflict, match="--skip-existing"):
        batch_jobs.plan_run([(job, outputs, record)], tmp_path, False, False)
    assert batch_jobs.plan_run([(job, outputs, other)], tmp_path, True, True)[0]
    audio.write_bytes(b"other sound")  # the audio changed: its hash is in the record
    assert batch_jobs.job_record(job, "checkpoint:x", "empty", settings)["digest"] != record["digest"]


def test_the_manifest_is_appended_line_by_line(tmp_path):
    path = tmp_path / "out" / "manifest.jsonl"
    batch_jobs.append_manifest(path, batch_jobs.ManifestEntry("a", "done", {"blend": "a.blend"}, {"total_s": 1.5}))
    with open(path, "a") as handle:
        handle.write('{"job": "cut off')  # a crash mid-line elsewhere
    batch_jobs.append_manifest(path, batch_jobs.ManifestEntry("b", "failed", error="bad audio"))
    entries = batch_jobs.read_manifest(path)
    assert [(e["job"], e["status"], e["error"]) for e in entries] == [("a", "done", None), ("b", "failed", "bad audio")]
    batch_jobs.append_manifest(path, batch_jobs.ManifestEntry("c", "skipped"))
    assert [e["job"] for e in batch_jobs.read_manifest(path)][-1] == "c"
