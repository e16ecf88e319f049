"""Back-end command line: ``python -m model <command> ...`` (run from the extension root)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .core.head_model import HeadModel, HeadModelError
from .core.errors import BadInput, CapTalkError


def _build_open_head(args) -> None:
    from .open_head import ensure_open_head

    path = ensure_open_head(args.out, rebuild=args.rebuild)
    print(f"open head: {path}")


def _import_flame(args) -> None:
    from .core.flame_import import import_flame

    head = import_flame(args.file, n_expressions=args.expressions, shape=args.shape, masks=args.masks)
    out = Path(args.out) if args.out else Path(f"{head.model_id}.npz")
    head.save(out)
    print(f"FLAME head model: {out} ({head.num_channels} motion channels)")


def _flame_adapter(args) -> None:
    from .flame_bridge.command import run

    run(args.file, out=args.out, open_head=args.open_head, keep_shapes=not args.no_shapes,
        n_expressions=args.expressions, shape=args.shape, masks=args.masks)


def _info(args) -> None:
    meta = HeadModel.load(args.file).metadata()
    meta.pop("channel_names")
    print(json.dumps(meta, indent=2))


def _load_motion(path: str, head: HeadModel):
    from .core.motion_file import MotionFileError, load_motion

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
    from .core.paths import default_open_head_file

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
    from .core.audio import load_audio
    from .data.controls import ControlSegment, EmotionControls, StyleControls
    from .data.teacher import animate_recording
    from .core.motion_file import MotionClip, save_motion

    audio = load_audio(args.audio)
    transcript = Path(args.transcript).read_text() if Path(args.transcript).is_file() else args.transcript
    head = HeadModel.load(args.head or _default_head())
    style = StyleControls(mouth=args.mouth, head=args.head_motion, tempo=args.tempo, tone=args.tone)
    segment = ControlSegment(0.0, style, EmotionControls(args.emotion, args.intensity))
    motion, phones = animate_recording(audio, transcript, head.channel_names, segment, seed=args.seed)
    meta = {"head_model": head.model_id, "source": "teacher (forced alignment)", "audio": str(args.audio),
            "controls": {"style": style.__dict__, "emotion": segment.emotion.__dict__}}
    save_motion(args.out, MotionClip(motion, tuple(head.channel_names), meta=meta))
    print(f"teacher motion: {args.out} ({len(motion)} frames, {len(phones)} phones aligned)")


def _generate(args) -> None:
    from .core.contract import GenerationRequest
    from .core.motion_file import save_motion
    from .core.schedule import load_schedule, parse_schedule
    from .generate import Generator
    from .run import check_rig, prepare_request, run_prepared

    if args.schedule:
        schedule = load_schedule(args.schedule, args.style, args.emotion)
    else:
        schedule = parse_schedule(None, args.style, args.emotion)
    head = HeadModel.load(args.head) if args.head else None
    request = GenerationRequest(audio_path=os.path.abspath(args.audio), schedule=schedule,
                                head_model=head.model_id if head else None,
                                channels=tuple(head.channel_names) if head else None,
                                options=options_from_args(args), client="python -m model generate")
    prepared = prepare_request(request)  # bad audio fails before the model loads
    generator = Generator.load(args.checkpoint, device=args.device)
    takes = run_prepared(generator, check_rig(prepared, generator.manifest))
    out = Path(args.out)
    for clip in takes:
        path = out if len(takes) == 1 else out.with_name(f"{out.stem}_take{clip.meta['take']}{out.suffix or '.npz'}")
        clip.meta["audio"] = str(args.audio)
        save_motion(path, clip)
        seconds = clip.meta["timings"]["total_s"]
        print(f"motion: {path} ({clip.num_frames} frames at {clip.fps:g} fps, {len(clip.channels)} channels, "
              f"seed {clip.meta['seed']}; generated in {seconds:.1f} s on {clip.meta['device']})")


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per generation option (`model.core.contract.GenerationOptions`), with its
    default and help text; a switch that is on by default becomes ``--no-<name>``."""
    from .core.contract import option_specs

    for name, (default, spec) in option_specs().items():
        flag = name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(f"--no-{flag}", dest=name, action="store_false", help=f"no {spec.label.lower()}: "
                                f"{spec.description}")
            continue
        kind = int if isinstance(default, int) else float
        shown = "" if default is None else f" (default {default:g})"
        bounds = f"{spec.minimum} to {spec.maximum}" if kind is int else f"{spec.minimum:g} to {spec.maximum:g}"
        parser.add_argument(f"--{flag}", dest=name, type=kind, default=default,
                            help=f"{spec.description}{shown}; {bounds}")


def options_from_args(args):
    """The `GenerationOptions` that `add_option_arguments`' flags asked for."""
    from .core.contract import GenerationOptions, option_specs

    return GenerationOptions(**{name: getattr(args, name) for name in option_specs()})


def _evaluate(args) -> None:
    from .evaluate.report import ReportConfig, run_report
    from .core.paths import default_checkpoint_dir

    run_report(ReportConfig(checkpoint=Path(args.checkpoint) if args.checkpoint else default_checkpoint_dir(),
                            data=Path(args.data), out=Path(args.out), clips=args.clips,
                            control_audios=args.control_audios, device=args.device, seed=args.seed,
                            render=not args.no_render, speed_seconds=args.speed_seconds,
                            real_faces=Path(args.real_faces) if args.real_faces else None))


def _serve(args) -> None:
    from .link.launch import EXIT_ALREADY_RUNNING
    from .link.protocol import Limits
    from .serve.server import ServerConfig, WorkerStartError, serve

    limits = Limits(max_audio_seconds=args.max_audio_minutes * 60, max_body_bytes=int(args.max_body_mb * 2**20))
    config = ServerConfig(checkpoint=Path(args.checkpoint) if args.checkpoint else None, device=args.device,
                          port=args.port, session_file=Path(args.session_file) if args.session_file else None,
                          limits=limits, owners=tuple(args.owner), threads=args.threads)
    try:
        serve(config)
    except WorkerStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_ALREADY_RUNNING) from None


def _default_head() -> Path:
    from .core.paths import default_open_head_file

    return default_open_head_file()



def _train_config(args):
    from .train.config import TrainConfig

    return TrainConfig(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, val_every=args.val_every,
                       save_every=args.save_every, log_every=args.log_every, warmup_steps=args.warmup,
                       workers=args.workers, stop_after=args.stop_after)


def _run_training(train, *arguments) -> None:
    """A run stopped by a signal exits 130 (its state is saved: run it again to go on)."""
    from .core.errors import EXIT_CANCELLED

    if train(*arguments).interrupted:
        raise SystemExit(EXIT_CANCELLED)


def _train_codec(args) -> None:
    from .train.codec_stage import CodecRun, train_codec

    run = CodecRun(data=Path(args.data), out=Path(args.out), size=args.size, dropout=args.dropout,
                   head=Path(args.head) if args.head else None, device=args.device, val_windows=args.val_windows)
    _run_training(train_codec, run, _train_config(args))


def _train_ar(args) -> None:
    from .train.ar_stage import ARRun, train_ar

    run = ARRun(data=Path(args.data), checkpoint=Path(args.checkpoint), size=args.size, dropout=args.dropout,
                device=args.device, val_windows=args.val_windows, speech_encoder=args.speech_encoder,
                text_encoder=args.text_encoder, cache=Path(args.cache) if args.cache else None,
                head=Path(args.head) if args.head else None, generation_clips=args.generation_clips)
    _run_training(train_ar, run, _train_config(args))


class DataCommandError(BadInput):
    """A data command that finished but found a problem (exit status 2)."""


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

    adapter = commands.add_parser("flame-adapter", help="build the adapter that lets the bundled model drive a "
                                  "FLAME rig (cached in the data folder)")
    adapter.add_argument("file", help="FLAME .pkl / .npz, or the head-model file Import FLAME wrote")
    adapter.add_argument("--out", help="adapter file (default: <data folder>/adapters/<head-model id>.npz)")
    adapter.add_argument("--open-head", help="the open head's head-model file (default: the data folder's)")
    adapter.add_argument("--no-shapes", action="store_true", help="leave out the 52 transferred ARKit shapes")
    adapter.add_argument("--expressions", type=int, default=100, help="as import-flame (FLAME files only)")
    adapter.add_argument("--shape", help="as import-flame (FLAME files only)")
    adapter.add_argument("--masks", help="as import-flame (FLAME files only)")
    adapter.set_defaults(run=_flame_adapter)

    info = commands.add_parser("info", help="print a head-model file's metadata")
    info.add_argument("file")
    info.set_defaults(run=_info)

    metrics = commands.add_parser("metrics", help="LVE, MHD, FDD, LODD, HPDD of a prediction")
    metrics.add_argument("pred", help="predicted motion file (.npz, see model.core.motion_file)")
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

    train = commands.add_parser("train", help="train the motion codec (stage 1) or the AR model (stage 2)")
    train_commands = train.add_subparsers(dest="train_command", required=True)
    train_codec = train_commands.add_parser("codec", help="stage 1: the motion codec, into a new checkpoint folder")
    train_codec.add_argument("--out", required=True, help="checkpoint folder (resumed if it holds a training state)")
    train_codec.add_argument("--head", help="head-model file of the dataset's motion (default: the open head)")
    train_codec.set_defaults(run=_train_codec)
    train_ar = train_commands.add_parser("ar", help="stage 2: the AR model, on a checkpoint's trained codec")
    train_ar.add_argument("--checkpoint", required=True, help="checkpoint folder holding a trained codec")
    train_ar.add_argument("--speech-encoder", default="whisper-tiny.en",
                          help="whisper-tiny.en (default), logmel, or a transformers speech-model folder")
    train_ar.add_argument("--text-encoder", default="minilm",
                          help="minilm (default) or a transformers text-model folder")
    train_ar.add_argument("--cache", help="feature cache folder (default: DATA/.cache/features)")
    train_ar.add_argument("--generation-clips", type=int, default=2,
                          help="val clips generated at each validation for the metrics (0: none)")
    train_ar.add_argument("--head", help="head-model file for those metrics (default: the open head if it fits)")
    train_ar.set_defaults(run=_train_ar)
    from .train.config import TrainConfig  # the defaults of the flags below are the config's own

    for stage in (train_codec, train_ar):
        stage.add_argument("--data", required=True, help="dataset folder (python -m model data synth)")
        stage.add_argument("--steps", type=int, default=TrainConfig.steps,
                           help="optimiser steps; the LR schedule spans them")
        stage.add_argument("--batch", type=int, default=TrainConfig.batch,
                           help="global batch, split evenly across processes")
        stage.add_argument("--lr", type=float, default=TrainConfig.lr, help="peak learning rate (AdamW)")
        stage.add_argument("--warmup", type=int, default=TrainConfig.warmup_steps,
                           help="warm-up steps (at most a tenth of --steps)")
        stage.add_argument("--size", choices=("tiny", "small", "base"), default="small", help="model size preset")
        stage.add_argument("--dropout", type=float, help="dropout (default: the model's)")
        stage.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
        stage.add_argument("--seed", type=int, default=TrainConfig.seed)
        stage.add_argument("--val-every", type=int, default=TrainConfig.val_every,
                           help="validate every N steps (an 'epoch')")
        stage.add_argument("--val-windows", type=int, default=32, help="fixed validation windows")
        stage.add_argument("--save-every", type=int, default=TrainConfig.save_every,
                           help="save the training state every N steps")
        stage.add_argument("--log-every", type=int, default=TrainConfig.log_every,
                           help="log training losses every N steps")
        stage.add_argument("--workers", type=int, default=TrainConfig.workers,
                           help="threads building batches ahead (0: none)")
        stage.add_argument("--stop-after", type=int, help="stop after this step (state saved; rerun to go on)")

    generate = commands.add_parser("generate", help="animate speech audio with a trained checkpoint")
    generate.add_argument("--audio", required=True, help="speech recording (any rate/channels libsndfile reads)")
    generate.add_argument("--style", default="", help="style caption (free text; default none)")
    generate.add_argument("--emotion", default="", help="emotion caption (free text; default none)")
    generate.add_argument("--schedule", help="JSON caption schedule (see model/core/schedule.py); --style/--emotion "
                          "are then the captions before its first entry")
    generate.add_argument("--checkpoint", help="checkpoint folder (default: <repo>/checkpoints/default)")
    generate.add_argument("--head", help="head-model file of the target rig: refuse a checkpoint that does not fit it")
    generate.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    add_option_arguments(generate)  # --seed, --guidance, --takes (OUT_take<N>.npz each when > 1)...
    generate.add_argument("--out", required=True, help="motion file to write (.npz, see model.core.motion_file)")
    generate.set_defaults(run=_generate)

    evaluate = commands.add_parser("evaluate", help="the evaluation report of a checkpoint (markdown + plots)")
    evaluate.add_argument("--checkpoint", help="checkpoint folder (default: <repo>/checkpoints/default)")
    evaluate.add_argument("--data", required=True, help="dataset whose test split is evaluated (data synth)")
    evaluate.add_argument("--out", required=True, help="folder for report.md, summary.json and the plots")
    evaluate.add_argument("--clips", type=int, help="test clips for the metrics table (default: all)")
    evaluate.add_argument("--control-audios", type=int, default=3, help="test clips the controllability runs on")
    evaluate.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--speed-seconds", type=float, default=60.0, help="audio length of the speed run")
    evaluate.add_argument("--no-render", action="store_true", help="skip the Blender stills")
    evaluate.add_argument("--real-faces", help="folder of the GRID clips (grid/*.mpg + README.md; default: "
                          "$CAPTALK_REAL_FACES, else ../shared/real-faces beside the repo)")
    evaluate.set_defaults(run=_evaluate)

    serve = commands.add_parser("serve", help="the local worker the add-on talks to (loopback only, token file)")
    serve.add_argument("--checkpoint", help="checkpoint folder (default: <repo>/checkpoints/default)")
    serve.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="auto: CUDA (half precision) when available, else CPU")
    serve.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one, reported)")
    serve.add_argument("--session-file", help="where to write port and token (default: per user, checkpoint "
                       "and device, under $XDG_RUNTIME_DIR/captalk)")
    serve.add_argument("--owner", type=int, action="append", default=[],
                       help="exit when this process (and every other attached one) has exited; repeatable")
    serve.add_argument("--max-audio-minutes", type=float, default=30.0, help="longest audio accepted")
    serve.add_argument("--max-body-mb", type=float, default=256.0, help="largest request body accepted")
    serve.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    serve.set_defaults(run=_serve)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except CapTalkError as exc:  # bad input, a missing part...: one clear line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
