"""Back-end command line: ``python -m model <command> ...`` (run from the extension root)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except HeadModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
