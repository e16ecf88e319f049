"""The batch's job list and its files: reading and checking a job list, naming each job's
outputs inside the output folder, sharding, the record of a job's inputs (for
--skip-existing), staged writes and the results manifest.

Standard library and numpy only (no bpy, no torch): `scripts/captalk_batch.py` uses it
inside Blender, the farm driver (`farm`) without Blender, and tests with plain Python.

A job list (``--jobs FILE.json``) is a list of jobs, or ``{"jobs": [...]}``::

    {"jobs": [{"name": "line01", "audio": "line01.wav", "style": "a calm teacher",
               "emotion": "neutral", "schedule": [{"start": 2.5, "emotion": "happy"}],
               "rig": "open", "start_frame": 1, "seed": 0, "motion": "line01_motion.npz"}]}

Only ``audio`` is required; relative paths are relative to the JSON file; keys left out
take the command line's values; ``motion`` (optional) is motion made earlier (a
`model.core.motion_file`), used instead of generating.

Names. A job's name names its files: ``OUT/<name>.blend``, ``OUT/<name>_motion.npz`` and
``OUT/<name>.mp4``. A name may hold sub-folders (``hero/line01``); it is normalised (``./x``
is ``x``) and must stay inside OUT (no absolute paths, no ``..``, no hidden or empty parts).
Two jobs whose names are equal ignoring case are refused, so the outputs never collide,
on case-insensitive file systems either.
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import secrets
import signal
import tempfile
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .contract import SEED_MAX
from .errors import BadInput

MANIFEST_NAME = "manifest.jsonl"
RECORD_KEY = "batch_record"  # in the motion file's meta: the inputs the job's outputs were made from
TEMP_MARK = ".partial"  # temporary outputs: ".<final name>.<token>.partial<suffix>"
MAX_NAME_CHARS = 200


class JobListError(BadInput):
    """A job list (or a job's values) that cannot be used; the message says which job and why."""


class OutputConflict(BadInput):
    """Outputs that would overwrite files they must not (inputs, an earlier run's results)."""


@dataclass(frozen=True)
class Job:
    """One line to animate: what the command line (or one entry of a job list) asks for."""

    name: str
    audio: Path
    style: str
    emotion: str
    schedule: tuple = ()  # caption changes as written: {"start": seconds into the audio, "style"?, "emotion"?}
    rig: str = ""  # "": the scene's rig, else the open head; "open"; or a FLAME .pkl / .npz (absolute)
    start_frame: int = 1
    seed: int = 0
    motion: str = ""  # "": generate; else a motion file made earlier (absolute)


# What each job-list key must hold (JSON types); bool is refused where an int is asked.
_KEY_TYPES = {"name": str, "audio": str, "style": str, "emotion": str, "schedule": list, "rig": str,
              "start_frame": int, "seed": int, "motion": str}
JOB_KEYS = tuple(f.name for f in fields(Job))
_TYPE_NAMES = {str: "a string", list: "a list", int: "a whole number"}


# ----------------------------------------------------------------------------- names
def normalise_name(name: str, where: str = "job") -> str:
    """A job name as the relative, '/'-separated path stem of its files inside OUT.

    ``./x`` -> ``x``, ``a//b`` -> ``a/b``; refused (`JobListError`): empty, absolute, ``..``
    anywhere, a part starting with '.', control characters, backslashes, over 200 characters.
    """
    if not isinstance(name, str) or not name.strip():
        raise JobListError(f"{where}: the name must be a non-empty string, got {name!r}")
    if any(ord(c) < 32 or c == "\x7f" for c in name) or "\\" in name:
        raise JobListError(f"{where}: the name {name!r} holds control characters or backslashes")
    if name.startswith("/"):
        raise JobListError(f"{where}: the name {name!r} is an absolute path; names are file names inside --out")
    parts = name.split("/")
    if ".." in parts:
        raise JobListError(f"{where}: the name {name!r} leads outside --out ('..')")
    normal = posixpath.normpath(name)
    if normal in (".", "") or any(p.startswith(".") for p in normal.split("/")):
        raise JobListError(f"{where}: the name {name!r} has an empty or hidden ('.'-first) part")
    if len(normal) > MAX_NAME_CHARS:
        raise JobListError(f"{where}: the name is longer than {MAX_NAME_CHARS} characters")
    return normal


def file_stem(label: str) -> str:
    """A strip (or other) label as a file-name part: characters other than letters, digits,
    '-' and '_' become '_' (as Blender's ``bpy.path.clean_name`` does)."""
    return re.sub(r"[^0-9A-Za-z_-]", "_", label) or "_"


def unique_stems(labels: Sequence[str]) -> dict[str, str]:
    """{label: file stem}, distinct for distinct labels: labels whose `file_stem` (ignoring
    case) would collide, such as 'line.01' and 'line_01', get a short hash of the label added."""
    stems = {label: file_stem(label) for label in labels}
    folded: dict[str, int] = {}
    for stem in stems.values():
        folded[stem.casefold()] = folded.get(stem.casefold(), 0) + 1
    return {label: stem if folded[stem.casefold()] == 1 else f"{stem}_{_short_hash(label)}"
            for label, stem in stems.items()}


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


# ----------------------------------------------------------------------------- reading a job list
def _checked_value(key: str, value, where: str):
    kind = _KEY_TYPES[key]
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise JobListError(f"{where}: \"{key}\" must be a whole number, got {json.dumps(value)}")
        if key == "seed" and not 0 <= value <= SEED_MAX:
            raise JobListError(f"{where}: \"seed\" must be from 0 to {SEED_MAX}, got {value}")
        if key == "start_frame" and not -1_048_574 <= value <= 1_048_574:  # Blender's frame range
            raise JobListError(f"{where}: \"start_frame\" must be within Blender's frames (+-1048574), got {value}")
    elif not isinstance(value, kind):
        raise JobListError(f"{where}: \"{key}\" must be {_TYPE_NAMES[kind]}, got {json.dumps(value)[:60]}")
    if kind is str and any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise JobListError(f"{where}: \"{key}\" holds an unpaired surrogate (not valid text)")
    return value


def read_job_list(path: Path, defaults: Job) -> list[Job]:
    """Every job of a job-list file, each with its values' types checked, paths resolved
    against the file's folder and names normalised and unique. Raises `JobListError`.
    (The audio's and the schedule's content are checked by the caller.)"""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobListError(f"job list not found: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise JobListError(f"job list {path} is not readable JSON ({exc})") from None
    entries = data.get("jobs") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise JobListError(f"job list {path}: expected a non-empty list of jobs (or {{\"jobs\": [...]}})")
    jobs = [job_from_entry(entry, path.parent, defaults, f"job list {path.name}, job {number}")
            for number, entry in enumerate(entries, start=1)]
    check_unique_names(jobs, f"job list {path.name}")
    return jobs


def job_from_entry(entry, base: Path, defaults: Job, where: str) -> Job:
    """One job-list entry -> a `Job` (``defaults`` for keys left out)."""
    if not isinstance(entry, dict) or "audio" not in entry:
        raise JobListError(f"{where}: each job is an object with at least \"audio\"")
    unknown = sorted(set(entry) - set(JOB_KEYS))
    if unknown:
        raise JobListError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(JOB_KEYS)}")
    values = {key: _checked_value(key, value, where) for key, value in entry.items()}
    audio = (base / values["audio"]).resolve()
    rig = values.get("rig", defaults.rig)
    if rig not in ("", "open"):
        rig = str((base / rig).resolve())
    motion = values.get("motion", "")
    if motion:
        motion = str((base / motion).resolve())
    schedule = values.get("schedule", list(defaults.schedule))
    if not all(isinstance(item, dict) for item in schedule):
        raise JobListError(f"{where}: \"schedule\" must be a list of {{start, style, emotion}} objects")
    name = normalise_name(values.get("name", audio.stem), where)
    return replace(defaults, **{**values, "name": name, "audio": audio, "rig": rig, "motion": motion,
                                "schedule": tuple(schedule)})


def check_unique_names(jobs: Sequence[Job], where: str) -> None:
    seen: dict[str, str] = {}
    duplicates = []
    for job in jobs:
        key = job.name.casefold()
        if key in seen:
            duplicates.append(job.name if seen[key] == job.name else f"{seen[key]} / {job.name}")
        seen.setdefault(key, job.name)
    if duplicates:
        raise JobListError(f"{where}: names must be unique, ignoring case (they name the files): "
                           f"{', '.join(sorted(set(duplicates)))}")


# ----------------------------------------------------------------------------- shards
def parse_shard(text: str) -> tuple[int, int]:
    """"I/N" (1 <= I <= N) -> (I, N); `JobListError` otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise JobListError(f"--shard must be I/N with 1 <= I <= N (e.g. 2/8), got {text!r}")
    return int(match[1]), int(match[2])


def shard_of(name: str, count: int) -> int:
    """The shard (1..count) a job belongs to: from a hash of its (normalised) name, so the
    split does not depend on the list's order or on the other jobs."""
    return int(hashlib.sha256(name.casefold().encode("utf-8")).hexdigest()[:15], 16) % count + 1


def select_shard(jobs: Sequence[Job], shard: tuple[int, int] | None) -> list[Job]:
    if shard is None:
        return list(jobs)
    index, count = shard
    return [job for job in jobs if shard_of(job.name, count) == index]


# ----------------------------------------------------------------------------- outputs
@dataclass(frozen=True)
class JobOutputs:
    """Where one job's files go (absolute paths inside OUT)."""

    blend: Path
    motion: Path
    video: Path | None  # None: --no-render

    def files(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.video, self.blend, self.motion) if p is not None)

    def relative(self, out: Path) -> dict:
        return {kind: str(getattr(self, kind).relative_to(out)) for kind in ("blend", "motion", "video")
                if getattr(self, kind) is not None}


def outputs_of(out: Path, name: str, render: bool) -> JobOutputs:
    base = Path(out) / name
    return JobOutputs(base.with_name(base.name + ".blend"), base.with_name(base.name + "_motion.npz"),
                      base.with_name(base.name + ".mp4") if render else None)


def check_not_inputs(outputs: Iterable[tuple[str, Path]], inputs: Iterable[Path]) -> None:
    """Refuse an output that is one of the run's input files (the starting scene, audio,
    a rig or motion file): writing it would destroy the input."""
    protected = {}
    for path in inputs:
        if path:
            protected[os.path.realpath(path)] = Path(path)
    clashes = [(name, path) for name, path in outputs if os.path.realpath(path) in protected]
    if clashes:
        name, path = clashes[0]
        raise OutputConflict(f"job '{name}' would write {path}, which is one of the inputs (the starting scene, "
                             "an audio, rig or motion file): rename the job or choose another --out. "
                             "Nothing was written.")


def check_writable_folder(out: Path) -> None:
    """Refuse --out unless files can be created in it (or in the folder that would hold it),
    by really creating and removing one: checks by permission bits are wrong for root and
    read-only file systems. Leaves nothing behind."""
    out = Path(out)
    probe_dir = out
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise BadInput(f"--out {out}: {probe_dir} is not a folder. Nothing was written.")
    try:
        with tempfile.TemporaryFile(dir=probe_dir, prefix=".captalk-probe."):
            pass
    except OSError as exc:
        raise BadInput(f"--out {out}: cannot write in {probe_dir} ({exc.strerror or exc}). Choose a folder you "
                       "can write to. Nothing was written.") from None


# ----------------------------------------------------------------------------- the record of inputs
def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def folder_digest(folder: str | os.PathLike) -> str:
    """sha256 over the names and contents of what a checkpoint folder's model is loaded
    from (its manifest and weights; training logs and state left out)."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and (path.name == "captalk.json" or path.suffix == ".safetensors"):
            digest.update(path.name.encode() + b"\0" + file_sha256(path).encode() + b"\0")
    return digest.hexdigest()


def job_inputs(job: Job, model: str, scene: str, settings: Mapping) -> dict:
    """What a job's outputs are made from, as recorded beside them: the audio's hash, the
    captions and schedule, the rig (and its file's hash), the start frame, the seed, the
    model (a checkpoint digest, or the motion file's), the starting scene's hash and the
    output settings (render, engine, resolution...)."""
    rig_file = job.rig not in ("", "open")
    return {"audio_sha256": file_sha256(job.audio), "style": job.style, "emotion": job.emotion,
            "schedule": [dict(entry) for entry in job.schedule], "rig": "scene" if not job.rig else
            ("open" if job.rig == "open" else Path(job.rig).name),
            "rig_sha256": file_sha256(job.rig) if rig_file else "", "start_frame": job.start_frame,
            "seed": job.seed, "model": model, "scene": scene, "settings": dict(settings)}


def inputs_digest(inputs: Mapping) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, ensure_ascii=True).encode()).hexdigest()


def recorded_digest(motion_file: Path) -> str | None:
    """The inputs digest recorded in a job's motion file, or None (absent, unreadable, not ours)."""
    import numpy as np

    try:
        with np.load(motion_file, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
        record = meta.get(RECORD_KEY) if isinstance(meta, dict) else None
        return record.get("digest") if isinstance(record, dict) else None
    except (OSError, ValueError, KeyError, EOFError):
        return None


def existing_state(outputs: JobOutputs, digest: str) -> str:
    """"absent" (none of the files), "done" (all there, made from these inputs), or
    "different" (some there, or made from other inputs)."""
    present = [p for p in outputs.files() if p.exists()]
    if not present:
        return "absent"
    if len(present) == len(outputs.files()) and recorded_digest(outputs.motion) == digest:
        return "done"
    return "different"


# ----------------------------------------------------------------------------- staged writes
def temporary_name(final: Path) -> Path:
    """Where ``final`` is written before it is whole: a hidden name in the same folder
    (so the rename is atomic) that keeps the suffix, for writers that go by it."""
    return final.with_name(f".{final.name}.{secrets.token_hex(4)}{TEMP_MARK}{final.suffix}")


def stale_temporaries(final: Path) -> list[Path]:
    """Temporary files of ``final`` left by a process that was killed: ours, Blender's own
    ``<file>@`` beside a temporary .blend, and the writers' own temporaries of ours
    (`model.core.atomic.atomic_write` names them ``.<our temporary>.<random>``)."""
    folder = final.parent
    if not folder.is_dir():
        return []
    prefixes = (f".{final.name}.", f"..{final.name}.")
    return sorted(p for p in folder.iterdir() if p.name.startswith(prefixes) and TEMP_MARK in p.name)


class StagedOutputs:
    """A job's files written under temporary names, renamed onto their real names together
    (`commit`) once all are whole, or removed (`discard`). Signals are held during the
    renames, so an interrupt never leaves a set that mixes old and new files."""

    def __init__(self, files: Sequence[Path]):
        """files: the real names, in the order they are renamed (the one that records the
        inputs last, as `JobOutputs.files` gives them)."""
        self.files = tuple(Path(f) for f in files)
        self.temporary = {final: temporary_name(final) for final in self.files}
        for final in self.files:
            final.parent.mkdir(parents=True, exist_ok=True)
            for stale in stale_temporaries(final):
                stale.unlink(missing_ok=True)

    def path(self, final: Path) -> Path:
        return self.temporary[final]

    def commit(self) -> None:
        """Rename every temporary file onto its real name; the motion file (which carries
        the record of inputs) last, so a set is only 'done' once all of it is in place."""
        missing = [t for t in self.temporary.values() if not t.is_file()]
        if missing:
            raise RuntimeError(f"output not written: {missing[0]}")
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for final in self.files:
                os.replace(self.temporary[final], final)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    def discard(self) -> None:
        for temporary in self.temporary.values():
            temporary.unlink(missing_ok=True)
            Path(f"{temporary}@").unlink(missing_ok=True)  # Blender's own temporary while saving


# ----------------------------------------------------------------------------- the manifest
@dataclass(frozen=True)
class ManifestEntry:
    """One line of the results manifest (JSON Lines, appended as jobs finish)."""

    job: str
    status: str  # "done", "skipped", "failed" or "cancelled"
    outputs: dict = field(default_factory=dict)  # kind -> path relative to OUT
    timings: dict = field(default_factory=dict)  # seconds per step
    error: str | None = None
    inputs_digest: str = ""
    shard: str = ""
    finished: float = 0.0  # Unix time

    def to_json(self) -> str:
        entry = {f.name: getattr(self, f.name) for f in fields(self)}
        entry["finished"] = round(self.finished or time.time(), 3)
        return json.dumps(entry, ensure_ascii=True)


def append_manifest(path: Path, entry: ManifestEntry) -> None:
    """Append one line with a single write on an O_APPEND file, so lines from several
    processes (shards sharing a folder) never interleave."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (entry.to_json() + "\n").encode()
    handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        size = os.fstat(handle).st_size
        if size and os.pread(handle, 1, size - 1) != b"\n":  # a line cut by a crash: start a new one
            line = b"\n" + line
        os.write(handle, line)
    finally:
        os.close(handle)


def read_manifest(path: Path) -> list[dict]:
    """Every entry of a manifest (lines that are not JSON objects, e.g. cut by a crash, skipped)."""
    entries = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


# ----------------------------------------------------------------------------- planning a run
def output_settings(render: bool, engine: str = "workbench", resolution: int = 480, samples: int = 16) -> dict:
    """The output options a job's record holds (samples only count for EEVEE / Cycles)."""
    if not render:
        return {"render": False}
    return {"render": True, "engine": engine, "resolution": int(resolution),
            "samples": int(samples) if engine != "workbench" else 0}


def job_record(job: Job, model: str, scene: str, settings: Mapping) -> dict:
    """{"digest", "inputs"}: what `existing_state` compares and the motion file keeps."""
    inputs = job_inputs(job, model, scene, settings)
    return {"digest": inputs_digest(inputs), "inputs": inputs}


def plan_run(planned: Sequence[tuple[Job, JobOutputs, dict]], out: Path, overwrite: bool,
             skip_existing: bool) -> tuple[list, list]:
    """(to run, skipped), each a list of (job, outputs, record): a job whose files are all
    there from the same inputs is skipped with ``skip_existing``; one with any earlier
    file is run only with ``overwrite``; otherwise `OutputConflict` before anything runs."""
    run, skipped, conflicts = [], [], []
    for job, outputs, record in planned:
        state = existing_state(outputs, record["digest"])
        if state == "done" and skip_existing:
            skipped.append((job, outputs, record))
        elif state == "absent" or overwrite:
            run.append((job, outputs, record))
        else:
            conflicts.append((job, state))
    if conflicts:
        job, state = conflicts[0]
        why = "made from other inputs, or incomplete" if state == "different" else "already there"
        hint = ("--overwrite to replace them" if skip_existing else
                "--skip-existing to keep outputs made from the same inputs, or --overwrite to replace them")
        raise OutputConflict(f"{len(conflicts)} job(s) would replace an earlier run's files ('{job.name}': {why}, "
                             f"in {out}); pass {hint}. Nothing was written.")
    return run, skipped
