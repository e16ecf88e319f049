"""Where the lip-sync gap comes from (issue 17, part 2): the same real-speech and real-face
figures under one factor changed at a time.

    .venv/bin/python benchmarks/lip_sync_factors.py [--checkpoint checkpoints/default] \
        [--real-faces ../shared/real-faces] [--out benchmarks/lip_sync_factors.md]

LibriVox (Debian's pocketsphinx test recordings, real read speech): the lip events of
`model.evaluate.lip_events` on the forced alignment, for the teacher, the teacher's motion
passed through the codec only (encode + decode, window by window with the decoded frames
as the next window's prefix, as generation decodes), and the model with neutral captions
under each sampling setting (temperatures, smoothing on and off; seeds 0-2 where it
samples, pooled). Domain gap: the model on the same sentences spoken by the held-out
synthetic voice (Flite rms), scored on the engine's own phones, clean and through each
recording degradation of `DEGRADATIONS` (telephone band, 8 kHz, MP3 at 32 kbit/s, Opus at
12 kbit/s, reverberation, noise and babble at 10 dB SNR, -18 dB level): if the model's
lips fail on degraded synthetic speech as on real recordings, the recording conditions
are the gap (and augmentation the fix); if they hold, the gap is the voices.

GRID real faces (`model.evaluate.real_faces`): Pearson r at lag 0 of the model's jawOpen
and mouth opening against the human's MediaPipe jawOpen, mean over the calibration clips
(where a setting may be chosen) and over the held-out clips (where it is reported),
mean over the seeds. One torch thread.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.core.audio import load_audio  # noqa: E402
from model.core.head_model import HeadModel  # noqa: E402
from model.core.paths import default_open_head_file  # noqa: E402
from model.core.schedule import parse_schedule  # noqa: E402
from model.evaluate import real_faces  # noqa: E402
from model.evaluate.controllability import NEUTRAL  # noqa: E402
from model.evaluate.lip_events import LipEvents, lip_events  # noqa: E402
from model.evaluate.real_speech import librivox_items, mouth_opening, rest_gap  # noqa: E402

SETTINGS = (  # (label, temperature, smoothing, seeds)
    ("temperature 1 (old default), smoothing on", 1.0, True, (0, 1, 2)),
    ("temperature 1, smoothing off", 1.0, False, (0, 1, 2)),
    ("temperature 0.5, smoothing on", 0.5, True, (0, 1, 2)),
    ("temperature 0.3, smoothing on", 0.3, True, (0, 1, 2)),
    ("temperature 0 (greedy), smoothing on", 0.0, True, (0,)),
    ("temperature 0 (greedy), smoothing off", 0.0, False, (0,)),
)
TTS_VOICE = "flite_rms"  # the voice the default model's test split holds out
SAMPLE_RATE = 16000


def _butter(audio: np.ndarray, band) -> np.ndarray:
    from scipy import signal

    kind = "bandpass" if isinstance(band, tuple) else "lowpass"
    return signal.sosfilt(signal.butter(8, band, kind, fs=SAMPLE_RATE, output="sos"), audio)


def _codec(audio: np.ndarray, arguments: list[str], suffix: str) -> np.ndarray:
    """Through ffmpeg's encoder (imageio-ffmpeg's binary) and back to 16 kHz float32."""
    import imageio_ffmpeg
    import soundfile

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    with tempfile.TemporaryDirectory() as tmp:
        clean, coded, back = (Path(tmp) / name for name in ("in.wav", f"coded{suffix}", "out.wav"))
        soundfile.write(clean, audio, SAMPLE_RATE)
        for command in ([ffmpeg, "-v", "error", "-i", str(clean), *arguments, str(coded)],
                        [ffmpeg, "-v", "error", "-i", str(coded), "-ar", str(SAMPLE_RATE), "-ac", "1", str(back)]):
            subprocess.run(command, check=True, capture_output=True)
        return load_audio(back)[:len(audio)]


def _reverb(audio: np.ndarray, seconds: float = 0.6) -> np.ndarray:
    """Convolution with exponentially decaying noise (RT60 ``seconds``), direct path kept."""
    from scipy import signal

    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    response = np.random.default_rng(0).standard_normal(len(t)) * np.exp(-6.9 * t / seconds) * 0.1
    response[0] = 1.0
    wet = signal.fftconvolve(audio, response)[:len(audio)]
    return wet * (np.abs(audio).max() / max(np.abs(wet).max(), 1e-9))


def _at_snr(audio: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    noise = np.resize(noise, len(audio))
    scale = np.sqrt(np.mean(audio ** 2) / max(np.mean(noise ** 2), 1e-12) / 10 ** (snr_db / 10))
    return audio + scale * noise


def _babble(others: list[np.ndarray]) -> np.ndarray:
    length = max(len(o) for o in others)
    return sum(np.resize(o, length) for o in others)


# name -> f(audio, the other recordings) -> degraded audio
DEGRADATIONS = {
    "telephone band 300-3400 Hz": lambda a, _: _butter(a, (300.0, 3400.0)),
    "8 kHz sampling (4 kHz band)": lambda a, _: _butter(a, 3800.0),
    "MP3 32 kbit/s": lambda a, _: _codec(a, ["-c:a", "libmp3lame", "-b:a", "32k"], ".mp3"),
    "Opus 12 kbit/s": lambda a, _: _codec(a, ["-c:a", "libopus", "-b:a", "12k"], ".opus"),
    "reverberation, RT60 0.6 s": lambda a, _: _reverb(a),
    "white noise, 10 dB SNR": lambda a, _: _at_snr(a, np.random.default_rng(1).standard_normal(len(a)), 10.0),
    "babble of 3 other voices, 10 dB SNR": lambda a, others: _at_snr(a, _babble(others), 10.0),
    "level -18 dB": lambda a, _: a * 10 ** (-18 / 20),
}


def codec_roundtrip(generator, motion: np.ndarray) -> np.ndarray:
    """(T, C) motion -> (T, C) after the codec alone: normalised, encoded and decoded window
    by window, each window decoded with the previous decoded window as its prefix."""
    import torch

    window, frames = generator.window, len(motion)
    padded = np.concatenate([motion, np.repeat(motion[-1:], -frames % window, axis=0)])
    x = generator.stats.normalise(torch.from_numpy(padded).float()[None])
    out, previous = [], None
    with torch.inference_mode():
        for start in range(0, x.shape[1], window):
            codes = generator.codec.encode(x[:, start:start + window])
            decoded = generator.codec.decode(codes, previous).float()
            out.append(decoded)
            previous = decoded
    return generator.stats.denormalise(torch.cat(out, dim=1))[0, :frames].numpy()


def _without_out(arguments: list[str]) -> list[str]:
    """The command line without ``--out FILE`` / ``--out=FILE`` (the report names itself)."""
    kept, skip = [], False
    for argument in arguments:
        if skip or argument.startswith("--out="):
            skip = False
        elif argument == "--out":
            skip = True
        else:
            kept.append(argument)
    return kept


def events_row(head, rest, motions_and_phones) -> LipEvents:
    total = LipEvents()
    for name, motion, phones in motions_and_phones:
        total += lip_events(mouth_opening(head, motion), rest, phones, recording=name)
    return total


def fmt(events: LipEvents) -> str:
    return (f"{events.closure_share:.0%} ({events.closed}/{events.closures}) | "
            f"{events.open_share:.0%} ({events.opened}/{events.vowels}) | "
            f"{events.pause_share:.0%} ({events.rested}/{events.pause_frames})")


def main() -> None:
    import torch

    from model.data.teacher import animate_recording
    from model.core.contract import GenerationOptions
    from model.generate import Generator
    from model.speech.voices import synthesize

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "default"))
    parser.add_argument("--real-faces", default=None, help="GRID folder (default: model.evaluate.real_faces)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "lip_sync_factors.md"))
    parser.add_argument("--parts", default="librivox,tts,degraded,grid",
                        help="comma list of librivox, tts, degraded (needs tts), grid")
    parser.add_argument("--settings", default=",".join(str(i) for i in range(len(SETTINGS))),
                        help="comma list of indices into SETTINGS (default: all)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    settings = [SETTINGS[int(i)] for i in args.settings.split(",")]
    torch.set_num_threads(1)
    started = time.perf_counter()
    generator = Generator.load(args.checkpoint, device="cpu")
    head = HeadModel.load(default_open_head_file())
    rest = rest_gap(head)
    schedule = parse_schedule(None, *NEUTRAL)

    def model_motion(audio, temperature, smoothing, seed):
        options = GenerationOptions(seed=seed, temperature=temperature, smoothing=smoothing)
        return generator.generate(audio, schedule, options)[0].motion

    real = []  # (name, audio, teacher motion, phones)
    tts = []  # (name, audio, engine phones)
    for wav, transcript in librivox_items():
        audio = load_audio(wav)
        motion, phones = animate_recording(audio, transcript, head.channel_names)
        real.append((wav.stem, audio, motion, phones))
        if parts & {"tts", "degraded"}:
            spoken = synthesize(TTS_VOICE, transcript)
            tts.append((wav.stem, spoken.audio, spoken.phones))

    lines = [f"# Lip-sync factors of `{Path(args.checkpoint).name}`", "",
             "Regenerate: `.venv/bin/python benchmarks/lip_sync_factors.py "
             f"{' '.join(_without_out(sys.argv[1:]))}` (one torch thread).", ""]
    if "librivox" in parts:
        lines += ["## Real speech (LibriVox, forced alignment): lip events", "",
                  "| system | lips close on /p b m/ | open on open vowels | rest in pauses (frames) |",
                  "|---|---:|---:|---:|"]
        lines.append(f"| teacher | {fmt(events_row(head, rest, [(n, m, p) for n, _, m, p in real]))} |")
        print(lines[-1], flush=True)
        coded = [(n, codec_roundtrip(generator, m), p) for n, _, m, p in real]
        lines.append(f"| teacher -> codec encode/decode only | {fmt(events_row(head, rest, coded))} |")
        print(lines[-1], flush=True)
    for label, temperature, smoothing, seeds in settings if "librivox" in parts else ():
        rows = [(n, model_motion(a, temperature, smoothing, s), p) for s in seeds for n, a, _, p in real]
        lines.append(f"| model, {label}, seeds {','.join(map(str, seeds))} | {fmt(events_row(head, rest, rows))} |")
        print(lines[-1], flush=True)
    if "tts" in parts:
        lines += ["", f"### The same sentences spoken by the held-out synthetic voice ({TTS_VOICE}), engine phones",
                  "", "| system | lips close on /p b m/ | open on open vowels | rest in pauses (frames) |",
                  "|---|---:|---:|---:|"]
    for label, temperature, smoothing, seeds in (SETTINGS[3], SETTINGS[4]) if "tts" in parts else ():
        rows = [(n, model_motion(a, temperature, smoothing, s), p) for s in seeds for n, a, p in tts]
        lines.append(f"| model, {label}, seeds {','.join(map(str, seeds))} | {fmt(events_row(head, rest, rows))} |")
        print(lines[-1], flush=True)
    if "degraded" in parts:
        lines += ["", f"### The LibriVox sentences spoken by {TTS_VOICE} through recording degradations (engine "
                  "phones; model at the default options, seed 0; no pause of 300 ms in these)", "", "| degradation | lips close on /p b m/ | open on open vowels | rest in pauses (frames) |",
                  "|---|---:|---:|---:|"]
        default = GenerationOptions()
        for label, degrade in {"none (clean)": lambda a, _: a, **DEGRADATIONS}.items():
            rows = []
            for n, a, p in tts:
                others = [o for m, o, _ in tts if m != n][:3]
                degraded = np.asarray(degrade(np.asarray(a, np.float64), others), np.float32)
                rows.append((n, model_motion(degraded, default.temperature, default.smoothing, 0), p))
            lines.append(f"| {label} | {fmt(events_row(head, rest, rows))} |")
            print(lines[-1], flush=True)

    if "grid" not in parts:
        Path(args.out).write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
        return
    clips = real_faces.grid_clips(args.real_faces)
    tracker = real_faces.default_tracker(args.real_faces)
    lines += ["", "## GRID real faces: r at lag 0 against the human's jawOpen, mean over clips and seeds", "",
              f"Calibration clips: {', '.join(real_faces.CALIBRATION_CLIPS)}; held-out: the other "
              f"{len(clips) - len(real_faces.CALIBRATION_CLIPS)}.", "",
              "| system | jawOpen, calibration | mouth opening, calibration | jawOpen, held-out | "
              "mouth opening, held-out |", "|---|---:|---:|---:|---:|"]

    def grid_row(label, results_per_seed):
        cells = []
        for part in (True, False):
            for system in ("model jawOpen", "model mouth opening") if label != "teacher" else \
                    ("teacher jawOpen", "teacher mouth opening"):
                values = [real_faces.aggregate([r for r in results if r.calibration == part], system)["mean_r0"]
                          for results in results_per_seed]
                cells.append(float(np.mean(values)))
        cells = [cells[0], cells[1], cells[2], cells[3]]
        lines.append(f"| {label} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
        print(lines[-1], flush=True)

    grid_row("teacher", [real_faces.evaluate_real_faces(clips, head, tracker)])
    for label, temperature, smoothing, seeds in settings:
        grid_row(f"model, {label}, seeds {','.join(map(str, seeds))}", [
            real_faces.evaluate_real_faces(clips, head, tracker, teacher=False,
                                           generate=lambda a, s=s: model_motion(a, temperature, smoothing, s))
            for s in seeds])
    lines += ["", f"Took {time.perf_counter() - started:.0f} s."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
