"""Back-end command line: ``python -m model <command> ...`` (run from the extension root)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from .head_model import HeadModel, HeadModelError


def _build_open_head(args) -> None:
    from .open_head import ensure_open_head

    path = ensure_open_head(args.out, rebuild=args.rebuild)
    print(f"open head: {path}")


def _import_flame(args) -> None:
    from .flame_import import import_flame

    head = import_flame(args.file, n_expressions=args.expressions, shape=args.shape, masks=args.masks)
    out = Path(args.out) if args.out else Path(f"{head.model_id}.npz")
    head.save(out)
    print(f"FLAME head model: {out} ({head.num_channels} motion channels)")


def _info(args) -> None:
    meta = HeadModel.load(args.file).metadata()
    meta.pop("channel_names")
    print(json.dumps(meta, indent=2))


def _load_motion(path: str, head: HeadModel):
    from .motion_file import MotionFileError, load_motion

    try:
        clip = load_motion(path)
    except MotionFileError as exc:
        raise HeadModelError(str(exc)) from None
    if list(clip.channels) != head.channel_names:
        raise HeadModelError(
            f"'{path}' has {len(clip.channels)} channels that are not those of head model "
            f"'{head.model_id}' ({head.num_channels} channels); pass the right --head"
        )
    return head.check_motion(clip.motion)


def _metrics(args) -> None:
    from .metrics import sequence_metrics
    from .paths import default_open_head_file

    head = HeadModel.load(args.head or default_open_head_file())
    result = sequence_metrics(head, _load_motion(args.pred, head), _load_motion(args.truth, head))
    for name, value in result.as_dict().items():
        print(f"{name:10s} {value:10.4f}")


def _data_synth(args) -> None:
    from .data.synth import synthesize_dataset

    voices = args.voices.split(",") if args.voices else None
    summary = synthesize_dataset(args.out, args.hours, workers=args.workers, seed=args.seed, voices=voices)
    print(json.dumps(summary, indent=2))


def _data_check(args) -> None:
    from .data.dataset import open_dataset

    dataset = open_dataset(args.dir)
    print(dataset.report())
    if dataset.bad:
        raise DataCommandError(f"{len(dataset.bad)} clips cannot be used (listed above)")


def _data_teach(args) -> None:
    from .audio import load_audio
    from .data.controls import ControlSegment, EmotionControls, StyleControls
    from .data.teacher import Teacher
    from .motion_file import MotionClip, save_motion
    from .speech.alignment import align

    audio = load_audio(args.audio)
    transcript = Path(args.transcript).read_text() if Path(args.transcript).is_file() else args.transcript
    phones = align(audio, transcript)
    head = HeadModel.load(args.head or _default_head())
    style = StyleControls(mouth=args.mouth, head=args.head_motion, tempo=args.tempo, tone=args.tone)
    segment = ControlSegment(0.0, style, EmotionControls(args.emotion, args.intensity))
    motion = Teacher(head.channel_names).animate(audio, phones, [segment], np.random.default_rng(args.seed))
    meta = {"head_model": head.model_id, "source": "teacher (forced alignment)", "audio": str(args.audio),
            "controls": {"style": style.__dict__, "emotion": segment.emotion.__dict__}}
    save_motion(args.out, MotionClip(motion, tuple(head.channel_names), meta=meta))
    print(f"teacher motion: {args.out} ({len(motion)} frames, {len(phones)} phones aligned)")


def _default_head() -> Path:
    from .paths import default_open_head_file

    return default_open_head_file()


class DataCommandError(ValueError):
    """A data command that finished but found a problem (exit status 2)."""


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors that mean bad input, not a bug: printed as one clear line with exit status 2."""
    from .audio import AudioError
    from .data.controls import ControlError
    from .data.dataset import DatasetError
    from .data.synth import SynthError
    from .motion_file import MotionFileError

    return (HeadModelError, DataCommandError, AudioError, ControlError, DatasetError, SynthError, MotionFileError)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build-open-head", help="build (or find) the open default head")
    build.add_argument("--out", required=True, help="head-model file to write")
    build.add_argument("--rebuild", action="store_true", help="rebuild even if the file exists")
    build.set_defaults(run=_build_open_head)

    flame = commands.add_parser("import-flame", help="convert a user's FLAME file to a head model")
    flame.add_argument("file", help="FLAME .pkl (2020/2023) or .npz conversion")
    flame.add_argument("--out", help="head-model file to write")
    flame.add_argument("--expressions", type=int, default=100, help="expression channels to keep")
    flame.add_argument("--shape", help="identity coefficients (.npy, .npz or .txt); zero if absent")
    flame.add_argument("--masks", help="FLAME_masks.pkl for the lip / upper-face regions")
    flame.set_defaults(run=_import_flame)

    info = commands.add_parser("info", help="print a head-model file's metadata")
    info.add_argument("file")
    info.set_defaults(run=_info)

    metrics = commands.add_parser("metrics", help="LVE, MHD, FDD, LODD, HPDD of a prediction")
    metrics.add_argument("pred", help="predicted motion file (.npz, see model.motion_file)")
    metrics.add_argument("truth", help="ground-truth motion file")
    metrics.add_argument("--head", help="head-model file (default: the open head)")
    metrics.set_defaults(run=_metrics)

    data = commands.add_parser("data", help="training data: synthesise, check, teacher animation")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    synth = data_commands.add_parser("synth", help="make a dataset from synthetic speech + the teacher")
    synth.add_argument("--out", required=True, help="dataset folder (resumed if it exists)")
    synth.add_argument("--hours", type=float, required=True, help="total length of the clips")
    synth.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--voices", help="comma-separated voice ids (default: every installed voice)")
    synth.set_defaults(run=_data_synth)
    check = data_commands.add_parser("check", help="validate a dataset and list unusable clips")
    check.add_argument("dir")
    check.set_defaults(run=_data_check)
    teach = data_commands.add_parser("teach", help="teacher animation of a recording with its transcript")
    teach.add_argument("--audio", required=True)
    teach.add_argument("--transcript", required=True, help="the words spoken (text or a text file)")
    teach.add_argument("--out", required=True, help="motion file to write (.npz)")
    teach.add_argument("--head", help="head-model file with ARKit channels (default: the open head)")
    teach.add_argument("--emotion", default="neutral")
    teach.add_argument("--intensity", default="medium")
    teach.add_argument("--mouth", default="normal")
    teach.add_argument("--head-motion", default="moderate")
    teach.add_argument("--tempo", default="normal")
    teach.add_argument("--tone", default="neutral")
    teach.add_argument("--seed", type=int, default=0)
    teach.set_defaults(run=_data_teach)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except _user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
