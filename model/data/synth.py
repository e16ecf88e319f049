"""``python -m model data synth``: make a training dataset from synthetic speech and the
teacher animator.

Clip k is fully determined by (seed, k): its split, voice, sentences, speaking rate and
pitch, hidden controls and captions. So a dataset is reproducible whatever the number
of workers, an interrupted run resumes where it stopped, and the clips kept are the
first ones (in index order) whose total length reaches the requested hours.

Splits: test clips use only held-out voices (`TEST_VOICES`) and test sentences; train
and val use the other voices with their own sentences (`model.speech.sentences`), so
no sentence and no test voice is shared between splits.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..core.audio import SAMPLE_RATE, save_audio
from ..core.motion_file import MotionClip, save_motion
from ..speech.phones import SILENCE, Phone

if TYPE_CHECKING:
    from ..speech.voices import Voice
from .controls import (
    EMOTIONS, HEAD_GAIN, INTENSITY_WEIGHT, MOUTH_GAIN, SPEAKERS_ANY, SPEAKERS_FEMALE, SPEAKERS_MALE,
    TEMPO_RATE, TONES, ControlSegment, EmotionControls, StyleControls,
)
from .dataset import MANIFEST_FILE, write_info
from ..core.errors import BadInput

TEST_VOICES = ("flite_rms",)
SPLIT_SHARES = {"train": 0.86, "val": 0.07, "test": 0.07}
CHANGE_SHARE = 0.35  # clips whose emotion (and sometimes style) changes mid-clip
MOUTH_SHARES = {"narrow": 0.25, "normal": 0.4, "wide": 0.35}
HEAD_SHARES = {"still": 0.2, "subtle": 0.25, "moderate": 0.3, "lively": 0.25}
TEMPO_SHARES = {"slow": 0.25, "normal": 0.5, "fast": 0.25}
NEUTRAL_SHARE = 0.25
CLIP_SECONDS = (4.0, 14.0)  # aimed length of a clip (sentences are added until reached)
RUN_FILE = "synth.json"  # the parameters a dataset folder was started with


class SynthError(BadInput):
    """A synthesis request that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class ClipPlan:
    index: int
    clip_id: str
    split: str
    voice: str
    sentences: tuple[str, ...]
    rate: float
    pitch: float
    pauses: tuple[float, ...]  # silence before each sentence and after the last (s)
    style: StyleControls
    emotion: EmotionControls
    seed: int


def _pick(rng: np.random.Generator, shares: dict[str, float]) -> str:
    names = list(shares)
    return names[rng.choice(len(names), p=np.array(list(shares.values())) / sum(shares.values()))]


def sample_style(rng: np.random.Generator, sex: str) -> StyleControls:
    personas = (SPEAKERS_FEMALE if sex == "female" else SPEAKERS_MALE) + SPEAKERS_ANY
    return StyleControls(
        speaker=personas[rng.integers(len(personas))], mouth=_pick(rng, MOUTH_SHARES),
        head=_pick(rng, HEAD_SHARES), tempo=_pick(rng, TEMPO_SHARES), tone=TONES[rng.integers(len(TONES))],
    )


def sample_emotion(rng: np.random.Generator, other_than: str | None = None) -> EmotionControls:
    labels = [e for e in EMOTIONS if e != other_than]
    weights = np.array([NEUTRAL_SHARE if e == "neutral" else (1 - NEUTRAL_SHARE) / 7 for e in labels])
    label = labels[rng.choice(len(labels), p=weights / weights.sum())]
    return EmotionControls(label, list(INTENSITY_WEIGHT)[rng.integers(len(INTENSITY_WEIGHT))])


class Planner:
    """Deterministic clip plans from a seed (see the module docstring)."""

    def __init__(self, seed: int, sentences: dict[str, list[str]], voices: dict[str, "Voice"]):
        """``sentences``: split -> sentences; ``voices``: voice id -> `model.speech.voices.Voice`."""
        self.seed = seed
        self.sentences = sentences
        self.test_voices = sorted(v for v in voices if v in TEST_VOICES)
        self.train_voices = sorted(v for v in voices if v not in TEST_VOICES)
        self.voices = voices
        if not self.train_voices:
            raise SynthError("no training voices available (install an engine or choose other --voices)")

    def plan(self, index: int) -> ClipPlan:
        rng = np.random.default_rng([self.seed, index])
        split = _pick(rng, SPLIT_SHARES) if self.test_voices else _pick(rng, {"train": 0.9, "val": 0.1})
        voices = self.test_voices if split == "test" else self.train_voices
        voice = voices[rng.integers(len(voices))]
        style = sample_style(rng, self.voices[voice].sex)
        rate = TEMPO_RATE[style.tempo] * rng.uniform(0.93, 1.07)
        aimed = rng.uniform(*CLIP_SECONDS)
        pool = self.sentences[split]
        sentences: list[str] = []
        words = 0
        while words / (2.6 * rate) < aimed:  # about 2.6 words a second at rate 1
            sentence = pool[rng.integers(len(pool))]
            sentences.append(sentence)
            words += len(sentence.split())
        pauses = tuple(rng.uniform(0.15, 0.6) for _ in range(len(sentences) + 1))
        pitch = rng.uniform(0.88, 1.14)  # drawn for every voice so plans stay aligned across voice sets
        return ClipPlan(
            index=index, clip_id=f"c{index:07d}", split=split, voice=voice, sentences=tuple(sentences),
            rate=float(rate), pitch=float(pitch) if self.voices[voice].pitch_control else 1.0, pauses=pauses, style=style,
            emotion=sample_emotion(rng), seed=int(rng.integers(2**31)),
        )


def change_points(rng: np.random.Generator, seconds: float, first: ControlSegment) -> list[ControlSegment]:
    """The clip's control segments: one, or for `CHANGE_SHARE` of clips 2-3 with new emotions
    (and sometimes new mouth/head levels) starting anywhere in the speech."""
    segments = [first]
    if rng.random() >= CHANGE_SHARE or seconds < 3.0:
        return segments
    count = 1 + int(rng.random() < 0.35 and seconds > 7.0)
    starts = np.sort(rng.uniform(1.0, seconds - 1.0, size=count))
    if count == 2 and starts[1] - starts[0] < 1.5:
        starts = starts[:1]
    for start in starts:
        previous = segments[-1]
        style = previous.style
        if rng.random() < 0.3:
            style = StyleControls(style.speaker, _pick(rng, MOUTH_SHARES), _pick(rng, HEAD_SHARES), style.tempo, style.tone)
        segments.append(ControlSegment(float(start), style, sample_emotion(rng, previous.emotion.label)))
    return segments


def speak(plan: ClipPlan) -> tuple[np.ndarray, tuple[Phone, ...]]:
    """Synthesise the plan's sentences with pauses between them -> (audio (N,), phones)."""
    from ..speech.voices import synthesize

    pieces, phones = [], []
    clock = 0.0

    def silence(seconds: float) -> None:
        nonlocal clock
        samples = int(round(seconds * SAMPLE_RATE))
        pieces.append(np.zeros(samples, dtype=np.float32))
        phones.append(Phone(SILENCE, clock, clock + samples / SAMPLE_RATE))
        clock += samples / SAMPLE_RATE

    for sentence, pause in zip(plan.sentences, plan.pauses):
        silence(pause)
        utterance = synthesize(plan.voice, sentence, rate=plan.rate, pitch=plan.pitch)
        pieces.append(utterance.audio)
        phones.extend(Phone(p.label, clock + p.start, clock + p.end) for p in utterance.phones)
        clock += len(utterance.audio) / SAMPLE_RATE
    silence(plan.pauses[-1])
    audio = np.concatenate(pieces)
    phones = _merge_silences(phones)
    peak = np.abs(audio).max()
    if peak > 0:  # engines differ a lot in level; normalise to a common peak with a random gain
        audio = audio / peak * np.random.default_rng(plan.seed).uniform(0.4, 0.9)
    return audio.astype(np.float32), phones


def _merge_silences(phones: list[Phone]) -> tuple[Phone, ...]:
    """Join neighbouring pauses (ours and the engine's leading/trailing silence) into one."""
    merged: list[Phone] = []
    for phone in phones:
        if merged and phone.label == SILENCE and merged[-1].label == SILENCE:
            merged[-1] = Phone(SILENCE, merged[-1].start, phone.end)
        else:
            merged.append(phone)
    return tuple(merged)


def make_clip(plan: ClipPlan, out_dir: str, channels: tuple[str, ...], head_model: str) -> dict:
    """Synthesise, animate and caption one clip; write its files; return its manifest entry."""
    from .captions import render_captions
    from .teacher import Teacher

    audio, phones = speak(plan)
    rng = np.random.default_rng(plan.seed)
    seconds = len(audio) / SAMPLE_RATE
    segments = change_points(rng, seconds, ControlSegment(0.0, plan.style, plan.emotion))
    motion = Teacher(channels).animate(audio, phones, segments, rng, rate=plan.rate)
    captions = [render_captions(s, rng) for s in segments]

    shard = f"clips/{plan.index // 1000:04d}"
    audio_path, motion_path = f"{shard}/{plan.clip_id}.wav", f"{shard}/{plan.clip_id}.npz"
    save_audio(Path(out_dir) / audio_path, audio)
    save_motion(Path(out_dir) / motion_path, MotionClip(motion, channels, meta={"head_model": head_model, "source": "teacher"}))
    entry = {
        "id": plan.clip_id, "split": plan.split, "audio": audio_path, "motion": motion_path,
        "frames": int(len(motion)), "seconds": round(seconds, 3),
        "style": captions[0][0], "emotion": captions[0][1],
        "voice": plan.voice, "text": " ".join(plan.sentences),
        "rate": round(plan.rate, 3), "pitch": round(plan.pitch, 3),
        "phones": [[p.label, round(p.start, 3), round(p.end, 3)] for p in phones],
        "controls": [{"start": s.start, "style": asdict(s.style), "emotion": asdict(s.emotion)} for s in segments],
    }
    if len(segments) > 1:
        entry["segments"] = [{"start": round(s.start, 3), "style": c[0], "emotion": c[1]} for s, c in zip(segments, captions)]
    return entry


def _read_done(manifest: Path) -> dict[int, dict]:
    done: dict[int, dict] = {}
    if manifest.exists():
        for line in manifest.read_text().splitlines():
            try:
                entry = json.loads(line)
                done[int(entry["id"][1:])] = entry
            except (ValueError, KeyError):
                continue  # a line cut short by an interruption: that clip is made again
    return done


def _check_resume(out: Path, parameters: dict) -> None:
    """A folder is resumed only with the parameters it was started with (else clips would mix)."""
    run_file = out / RUN_FILE
    if run_file.exists():
        before = json.loads(run_file.read_text())
        if before != parameters:
            raise SynthError(f"'{out}' was started with {before}, not {parameters}: use another folder")
    elif (out / MANIFEST_FILE).exists():
        raise SynthError(f"'{out}' already holds a dataset not made by this command: use another folder")
    else:
        run_file.write_text(json.dumps(parameters))


def synthesize_dataset(out_dir: str | os.PathLike, hours: float, workers: int = 2, seed: int = 0,
                       voices: list[str] | None = None, progress: bool = True) -> dict:
    """Make (or resume) a dataset of at least ``hours`` of clips in ``out_dir``; returns a summary."""
    from ..open_head import OPEN_HEAD_ID
    from ..core.paths import default_open_head_file
    from ..core.head_model import HeadModel
    from ..speech.sentences import load_sentences, sentence_split
    from ..speech.voices import VOICES, available_voices

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    channels = tuple(HeadModel.load(default_open_head_file()).channel_names)
    chosen = voices or available_voices()
    unknown = [v for v in chosen if v not in VOICES]
    if unknown:
        raise SynthError(f"unknown voices {unknown}; known: {sorted(VOICES)}")
    sentences: dict[str, list[str]] = {s: [] for s in ("train", "val", "test")}
    for sentence in load_sentences():
        sentences[sentence_split(sentence)].append(sentence)
    planner = Planner(seed, sentences, {v: VOICES[v] for v in chosen})

    _check_resume(out, {"seed": seed, "voices": sorted(chosen)})
    manifest = out / MANIFEST_FILE
    done = _read_done(manifest)
    target = hours * 3600.0
    started = time.time()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=round(target / 3600, 2), unit="h", desc="synth", bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} h [{elapsed}<{remaining}, {rate_fmt}]")

    def total_in_order() -> tuple[float, int]:
        """Seconds covered by clips 0..k-1 with no gap, and k."""
        seconds, k = 0.0, 0
        while k in done and seconds < target:
            seconds += done[k]["seconds"] if done[k] else 0.0
            k += 1
        return seconds, k

    failures: list[str] = []
    with open(manifest, "a") as log, ProcessPoolExecutor(max_workers=workers) as pool:
        pending = {}
        next_index = 0
        while True:
            covered, _ = total_in_order()
            if bar is not None:
                bar.n = round(min(covered, target) / 3600, 3)
                bar.refresh()
            if covered >= target:
                break
            in_flight_estimate = sum(8.0 for _ in pending)
            while len(pending) < 2 * workers and covered + in_flight_estimate < target + 60 * workers:
                while next_index in done:
                    next_index += 1
                plan = planner.plan(next_index)
                pending[pool.submit(make_clip, plan, str(out), channels, OPEN_HEAD_ID)] = next_index
                next_index += 1
                in_flight_estimate += 8.0
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                index = pending.pop(future)
                try:
                    entry = future.result()
                except Exception as exc:  # one bad clip (an engine hiccup) must not end a long run
                    failures.append(f"clip {index}: {exc}")
                    done[index] = None
                    if len(failures) > max(20, 0.1 * len(done)):
                        raise RuntimeError("too many clips failed:\n" + "\n".join(failures[-5:])) from exc
                    continue
                done[index] = entry
                log.write(json.dumps(entry) + "\n")
                log.flush()
        for future in pending:
            future.cancel()
    for future in pending:  # clips that were still being made when the target was reached
        if not future.cancelled() and future.exception() is None:
            for key in ("audio", "motion"):
                (out / future.result()[key]).unlink(missing_ok=True)
    if bar is not None:
        bar.close()

    _, keep = total_in_order()
    kept = [done[k] for k in range(keep) if done[k]]
    for index in set(done) - set(range(keep)):  # finished after the target was reached
        if not done[index]:
            continue
        for key in ("audio", "motion"):
            (out / done[index][key]).unlink(missing_ok=True)
    temporary = manifest.with_suffix(".tmp")
    temporary.write_text("".join(json.dumps(e) + "\n" for e in kept))
    os.replace(temporary, manifest)

    seconds = sum(e["seconds"] for e in kept)
    elapsed = time.time() - started
    summary = {
        "clips": len(kept), "hours": round(seconds / 3600, 3), "seed": seed, "voices": sorted(chosen),
        "test_voices": [v for v in TEST_VOICES if v in chosen],
        "splits": {s: sum(e["split"] == s for e in kept) for s in ("train", "val", "test")},
        "emotion_changes": sum("segments" in e for e in kept),
        "failed_clips": failures[:20],
        "generator": "captalk model.data.synth (teacher animator)",
    }
    write_info(out, OPEN_HEAD_ID, channels, summary=summary)
    summary["wall_seconds_this_run"] = round(elapsed, 1)
    return summary
