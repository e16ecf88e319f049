"""The evaluation report of a checkpoint: ``python -m model evaluate``.

    python -m model evaluate --checkpoint checkpoints/default --data data/synth-v1 --out docs/eval

Writes OUT/report.md, OUT/summary.json (every figure, machine-readable) and the PNG plots
and stills it links. Everything runs on the dataset's test split (its held-out voice and
sentences), on the LibriVox recordings of Debian's pocketsphinx test data and on the GRID
real-face clips (``--real-faces``; the section says why when they are absent), with one
generation seed, so a rerun on the same machine gives the same figures (timings aside).
The stills are rendered by Blender (`scripts/render_caption_stills.py`) in a separate
process, because the back end never imports Blender.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.audio import SAMPLE_RATE, load_audio
from ..core.schedule import CaptionSegment
from ..data.dataset import open_dataset
from ..core.head_model import HeadModel
from ..core.motion_file import load_motion, save_motion
from ..core.schedule import parse_schedule
from . import EvaluationError, conditions, controllability, dynamic, real_faces, real_speech, speed

REPO_ROOT = Path(__file__).resolve().parents[2]
STILLS_SCRIPT = REPO_ROOT / "scripts" / "render_caption_stills.py"

# the captions of the stills and of the dynamic-caption cases, worded as the caption
# generator words them, so they show the trained behaviour, not generalisation
STILL_CAPTIONS = (
    ("neutral", "A person is speaking.", "Neutral"),
    ("wide mouth, lively head, extremely happy", "A man speaking with a wide open mouth and lively head movements.",
     "extremely happy"),
    ("small mouth, still head, very sad", "A woman with a small mouth and a still head.", "very sad"),
)
SWITCH_STYLE = "A person is speaking."
SWITCH_CASES = (("Neutral", "extremely happy", "smile", ("mouthSmileLeft", "mouthSmileRight")),)
SWITCH_TIMES = (1.3, 4.0, 5.5, 7.9)  # before the first window ends, on a border, mid-window, just before one
SPEED_SECONDS = 60.0


@dataclass(frozen=True)
class ReportConfig:
    checkpoint: Path
    data: Path
    out: Path
    clips: int | None = None  # test clips for the condition table; None = all
    control_audios: int = 3
    device: str = "auto"
    seed: int = 0
    render: bool = True
    speed_seconds: float = SPEED_SECONDS
    python: str = sys.executable  # runs the stills script (bpy from PyPI in the same environment)
    real_faces: Path | None = None  # GRID clips folder; None = `real_faces.default_folder()`


def clip_generate(generator, options):
    """generate(audio, segments) -> (T, C) motion for `conditions` and `dynamic`."""
    def generate(audio, segments: Sequence[CaptionSegment]) -> np.ndarray:
        return generator.generate(audio, parse_schedule(list(segments)), options)[0].motion
    return generate


def concatenated_audio(paths: Sequence[Path], seconds: float) -> np.ndarray:
    """Test clips one after another, cut to ``seconds`` (for the speed run)."""
    pieces, total = [], 0
    for path in paths:
        pieces.append(load_audio(path))
        total += pieces[-1].size
        if total >= seconds * SAMPLE_RATE:
            break
    audio = np.concatenate(pieces)
    if audio.size < seconds * SAMPLE_RATE:
        raise EvaluationError(f"the test split holds only {audio.size / SAMPLE_RATE:.0f} s of audio, {seconds:g} s needed")
    return audio[:int(seconds * SAMPLE_RATE)]


def render_stills(config: ReportConfig, generator, options, audio: Path, times: Sequence[float]) -> Path | None:
    """Stills of STILL_CAPTIONS on the same audio, as one labelled PNG; None if Blender fails."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for index, (_, style, emotion) in enumerate(STILL_CAPTIONS):
            take = generator.generate(audio, parse_schedule(None, style, emotion), options)[0]
            files.append(Path(tmp) / f"caption{index}.npz")
            save_motion(files[-1], take)
        command = [config.python, str(STILLS_SCRIPT), "--out", tmp, "--times", ",".join(f"{t:g}" for t in times),
                   *map(str, files)]
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"stills not rendered (Blender failed):\n{done.stderr[-2000:]}", file=sys.stderr)
            return None
        strips = [plt.imread(Path(tmp) / f"caption{index}.png") for index in range(len(STILL_CAPTIONS))]
    fig, axes = plt.subplots(len(strips), 1, figsize=(2.2 * len(times), 2.35 * len(strips)))
    for ax, strip, (label, style, emotion) in zip(axes, strips, STILL_CAPTIONS):
        ax.imshow(strip)
        ax.set_axis_off()
        ax.set_title(f"style: \"{style}\"   emotion: \"{emotion}\"", fontsize=8)
    fig.suptitle(f"{audio.stem}, at {', '.join(f'{t:g} s' for t in times)}", fontsize=9)
    fig.tight_layout()
    path = config.out / "stills.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_report(config: ReportConfig, log=print) -> dict:
    from ..core.contract import GenerationOptions
    from ..generate import Generator

    started = time.perf_counter()
    generator = Generator.load(config.checkpoint, device=config.device)
    head = HeadModel.load(_head_file(generator))
    options = GenerationOptions(seed=config.seed)
    dataset = open_dataset(config.data, tuple(head.channel_names))
    test = sorted((r for r in dataset.clips if r.split == "test"), key=lambda r: r.clip_id)
    if not test:
        raise EvaluationError(f"dataset '{config.data}' has no test split")
    config.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"checkpoint": str(config.checkpoint), "data": str(config.data), "seed": config.seed,
                     "training": generator.manifest.get("training", {})}
    sections: list[str] = []
    generate = clip_generate(generator, options)

    log("conditions (a)-(e) on the test split ...")
    picked = test[:config.clips] if config.clips else test
    truths = [load_motion(r.motion).motion for r in picked]
    table = conditions.evaluate_conditions(generate, head, picked, truths, progress=log)
    summary["conditions"] = table.summary()
    sections += ["## Metrics under caption conditions (test split)", "",
                 "Each test clip generated with its own timed captions (a), none (b), the style captions only (c), "
                 "the emotion captions only (d), and the neutral face held still (e); metrics as `model.metrics` "
                 "defines them, mean over clips, against the teacher's motion.", "",
                 conditions.conditions_markdown(table)]

    log("controllability on unseen phrasings ...")
    by_length = sorted(test, key=lambda r: -_frames(r))  # the longest clips: most speech per generation
    audios = [r.audio for r in by_length[:config.control_audios]]
    control = controllability.measure_controllability(controllability.generator_fn(generator, options), audios,
                                                      controllability.load_control_captions())
    summary["controllability"] = control.summary()
    sections += ["## Controllability on phrasings the caption generator never produces", "",
                 f"Audio: {', '.join(Path(a).stem for a in audios)} (test split).", "",
                 controllability.controllability_markdown(control)]

    log("real speech (LibriVox) ...")
    neutral_style, neutral_emotion = controllability.NEUTRAL
    real = real_speech.evaluate_real_speech(
        lambda path: generator.generate(path, parse_schedule(None, neutral_style, neutral_emotion), options)[0].motion,
        head, real_speech.librivox_items())
    real_speech.plot_real_speech(real, config.out / "real_speech.png")
    summary["real_speech"] = real.summary()
    sections += ["## Real speech: mouth opening against the teacher on forced alignment", "",
                 f"Captions: style \"{neutral_style}\", emotion \"{neutral_emotion}\".", "",
                 real_speech.real_speech_markdown(real), "", "![real speech](real_speech.png)"]

    log("real faces (GRID) ...")
    sections += real_faces_section(config, generator, head, options, summary, log)

    log("dynamic captions ...")
    switch_audio = by_length[0].audio
    times = [t for t in SWITCH_TIMES if t < _frames(by_length[0]) / 25.0 - 1.0]  # a second left to watch
    switches = [dynamic.measure_switch(generate, head, switch_audio,
                                       dynamic.SwitchCase(t, SWITCH_STYLE, before, after, attribute, channels))
                for before, after, attribute, channels in SWITCH_CASES for t in times]
    dynamic.plot_switches(switches, config.out / "dynamic_captions.png")
    summary["dynamic"] = [{"switch_s": r.case.switch_s, "take_effect_s": r.take_effect_s, "jump_mm": r.jump_mm,
                           "normal_max_mm": r.normal_max_mm, "normal_p99_mm": r.normal_p99_mm,
                           "untouched_before": r.untouched_before} for r in switches]
    sections += ["## Captions that change mid-sentence", "", f"Audio: {Path(switch_audio).stem}. "
                 + dynamic.__doc__.split("\n\n")[1].replace("\n", " "), "", dynamic.switches_markdown(switches), "",
                 "![dynamic captions](dynamic_captions.png)"]

    log("speed ...")
    import torch

    audio = concatenated_audio([r.audio for r in test], config.speed_seconds)
    schedule = parse_schedule(None, *controllability.NEUTRAL)
    runs = []
    for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        runs.append(speed.measure_speed(generator, audio, schedule, options))
        torch.set_num_threads(previous)
    summary["speed"] = [r.summary() for r in runs]
    long_run = generator.generate(audio, schedule, options)[0]
    seam, other_max, other_p99 = dynamic.border_steps(head, long_run.motion, generator.window)
    offsets = long_run.meta["border_offsets"]
    summary["window_borders"] = {"max_step_at_borders_mm": seam, "max_step_elsewhere_mm": other_max,
                                 "p99_step_elsewhere_mm": other_p99, "border_offsets_std": offsets}
    sections += ["## Window borders", "",
                 f"On the same {config.speed_seconds:g} s: the largest frame-to-frame change at a window border "
                 f"(every {generator.window} frames) is {seam:.3f} mm, against {other_max:.3f} mm (99th percentile "
                 f"{other_p99:.3f} mm) at all other frames (mean vertex step, `dynamic.border_steps`). The offset "
                 "between where the motion was heading and where the decoded window starts, before the border "
                 f"blend fades it (`model.generate`), in data standard deviations: median "
                 f"{np.median(offsets) if offsets else 0:.3f}, max {max(offsets, default=0):.3f}."]
    sections += ["## Speed", "", f"Real-time factor (generation seconds / audio seconds) for {config.speed_seconds:g} s "
                 "of test speech, encoders included, checkpoint load excluded; the split is the generator's own "
                 "timings (`model.evaluate.speed`).", "", speed.speed_markdown(runs)]

    if config.render:
        log("stills ...")
        stills = render_stills(config, generator, options, test[0].audio, (0.8, 1.6, 2.4, 3.2))
        if stills is not None:
            sections += ["## Three captions, same audio", "", "![stills](stills.png)"]

    summary["report_s"] = round(time.perf_counter() - started, 1)
    (config.out / "summary.json").write_text(json.dumps(summary, indent=1, default=_plain) + "\n")
    header = [f"# Evaluation of `{config.checkpoint}`", "",
              f"Regenerate: `python -m model evaluate --checkpoint {config.checkpoint} --data {config.data} "
              f"--out {config.out}`" + (f" --clips {config.clips}" if config.clips else "") + "; took "
              f"{summary['report_s'] / 60:.0f} min. Teacher motion is the reference throughout; "
              "`summary.json` holds every figure.", ""]
    lines = [part for line in header + sections for part in (["", line] if line.startswith("## ") else [line])]
    (config.out / "report.md").write_text("\n".join(lines) + "\n")
    log(f"report: {config.out / 'report.md'}")
    return summary


def real_faces_section(config: ReportConfig, generator, head: HeadModel, options, summary: dict, log) -> list[str]:
    """The report's real-face section (`model.evaluate.real_faces`), with its plot; a
    section saying why when the clips or the tracker are not there (nothing else stops)."""
    folder = config.real_faces or real_faces.default_folder()
    title = ["## Real faces: jawOpen of tracked GRID videos against each system", ""]
    try:
        clips = real_faces.grid_clips(folder)
        schedule = parse_schedule(None, *controllability.NEUTRAL)
        results = real_faces.evaluate_real_faces(
            clips, head, real_faces.default_tracker(folder),
            generate=lambda audio: generator.generate(audio, schedule, options)[0].motion, progress=log)
    except real_faces.RealFacesError as exc:
        summary["real_faces"] = {"skipped": str(exc)}
        return title + [f"Skipped: {exc}"]
    summary["real_faces"] = real_faces.real_faces_summary(results)
    real_faces.write_real_faces(results, config.out)
    return title + [f"{len(results)} GRID clips from `{folder}`, tracked by MediaPipe FaceLandmarker; model "
                    f"captions: style \"{controllability.NEUTRAL[0]}\", emotion \"{controllability.NEUTRAL[1]}\".", "",
                    real_faces.real_faces_markdown(results), "", "![real faces](real_faces.png)"]


def _frames(record) -> int:
    return len(load_motion(record.motion).motion)


def _head_file(generator) -> Path:
    from ..core.paths import default_open_head_file

    if generator.manifest.get("head_model") != "captalk-open-head-v1":
        raise EvaluationError("the evaluation runs on the open head; this checkpoint drives "
                              f"{generator.manifest.get('head_model')!r}")
    return default_open_head_file()


def _plain(value):
    """JSON for numpy scalars and infinities in the summary."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")
