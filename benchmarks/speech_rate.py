"""Benchmark: synthesis speed of every voice, and how well its phone timings agree with
forced alignment of its own audio.

    .venv/bin/python benchmarks/speech_rate.py [--sentences 20] [--repeat 3] [--out benchmarks/speech_rate.md]

Pinned to one CPU core (the engines' subprocesses inherit it; Piper runs one thread).
Speed is seconds of audio per second of wall time over the first --sentences sentences of
the test split (median of --repeat passes), after one untimed warm-up call per voice
(Piper's model load is reported separately). Agreement: pocketsphinx aligns the phone
sequence the voice reports (`align_phone_sequence`); we report the mean absolute and mean
signed difference of the phone onsets (voice minus pocketsphinx) and the 90th percentile
of the absolute one.
Also the speed of `align` on the LibriVox recordings of pocketsphinx-testdata.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from model.core.audio import SAMPLE_RATE, load_audio  # noqa: E402
from model.speech.alignment import align, align_phone_sequence, onset_differences  # noqa: E402
from model.speech.sentences import sentences_in  # noqa: E402
from model.speech.voices import VOICES, synthesize  # noqa: E402

from model.machine import cpu_name  # noqa: E402

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")



def engine_versions() -> str:
    flite = subprocess.run(["flite", "--version"], capture_output=True, text=True).stdout
    flite = re.search(r"version: (\S+)", flite).group(1)
    festival = subprocess.run(["festival", "--version"], capture_output=True, text=True).stdout
    festival = re.search(r"System: (\S+)", festival).group(1)
    return f"{flite}; festival {festival}; piper-tts {version('piper-tts')}; pocketsphinx {version('pocketsphinx')}"


def measure_voice(voice_id: str, sentences: list[str], repeat: int) -> dict:
    start = time.perf_counter()
    synthesize(voice_id, sentences[0])  # warm-up: loads Piper's model, fills OS caches
    warm_up = time.perf_counter() - start
    passes = []  # (audio seconds, wall seconds) of each pass over the sentences
    for _ in range(repeat):
        audio_s, wall_s, utterances = 0.0, 0.0, []
        for sentence in sentences:
            start = time.perf_counter()
            utterance = synthesize(voice_id, sentence)
            wall_s += time.perf_counter() - start
            audio_s += utterance.duration
            utterances.append(utterance)
        passes.append((audio_s, wall_s))
    audio_s, wall_s = sorted(passes, key=lambda p: p[0] / p[1])[len(passes) // 2]  # the median pass
    differences = np.concatenate([
        onset_differences(u.phones, align_phone_sequence(u.audio, [p.label for p in u.phones]))
        for u in utterances
    ])
    return {
        "warm_up": warm_up, "audio": audio_s, "wall": wall_s,
        "mean_abs": np.mean(np.abs(differences)), "bias": np.mean(differences),
        "p90": np.percentile(np.abs(differences), 90), "phones": differences.size,
    }


def measure_alignment() -> tuple[float, float, int]:
    """Seconds of LibriVox audio, seconds of wall time to align it, number of files."""
    transcripts = {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        words = line.replace("<s>", "").replace("</s>", "").split()
        transcripts[words[-1].strip("()")] = " ".join(words[:-1])
    align(load_audio(LIBRIVOX / f"{next(iter(transcripts))}.wav"), next(iter(transcripts.values())))  # warm-up
    audio_s = wall_s = 0.0
    for stem, transcript in transcripts.items():
        audio = load_audio(LIBRIVOX / f"{stem}.wav")
        start = time.perf_counter()
        align(audio, transcript)
        wall_s += time.perf_counter() - start
        audio_s += audio.size / SAMPLE_RATE
    return audio_s, wall_s, len(transcripts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3, help="passes over the sentences; the median is reported")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "speech_rate.md")
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    sentences = sentences_in("test")[: args.sentences]

    rows = []
    for voice_id, voice in VOICES.items():
        result = measure_voice(voice_id, sentences, args.repeat)
        print(voice_id, f"{result['audio'] / result['wall']:.1f}x real time", flush=True)
        rows.append(
            f"| {voice_id} | {voice.engine} | {result['audio']:.1f} | {result['wall']:.2f} "
            f"| **{result['audio'] / result['wall']:.1f}** | {1000 * result['wall'] / len(sentences):.0f} "
            f"| {result['warm_up']:.2f} | {1000 * result['mean_abs']:.0f} | {1000 * result['bias']:+.0f} "
            f"| {1000 * result['p90']:.0f} |"
        )
    align_audio, align_wall, files = measure_alignment()

    report = f"""# Speech synthesis benchmark

Command: `.venv/bin/python benchmarks/speech_rate.py --sentences {args.sentences} --repeat {args.repeat}`

Machine: {cpu_name()}, pinned to 1 core (of {os.cpu_count()}); Python {platform.python_version()};
{engine_versions()}.

Text: the first {len(sentences)} sentences of the test split of `model/speech/sentences.txt`.
Speed = seconds of audio / seconds of wall time for `synthesize()` (process start,
synthesis, reading the wave, phone mapping), median of {args.repeat} passes over the
sentences, after one untimed warm-up call.
Flite and Festival start one process per sentence; Piper runs in-process on one
onnxruntime thread (`model/speech/piper_engine.py`), warm-up = loading its model.
Agreement = phone onsets reported by the voice minus pocketsphinx forced alignment of
the same phones in the voice's audio (10 ms frames), over all non-pause phones.
Runs on this shared virtual machine differ by up to about 30 % from one another.

| voice | engine | audio s | wall s | audio s per wall s | ms per sentence | warm-up s | onset mean abs ms | onset bias ms | onset p90 ms |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Forced alignment (`model.speech.alignment.align`) of the {files} LibriVox recordings in
pocketsphinx-testdata: {align_audio:.1f} s of audio in {align_wall:.2f} s,
**{align_audio / align_wall:.1f}** s of audio per wall second.
"""
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
