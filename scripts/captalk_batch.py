"""Headless CapTalk job: add a head, put speech on the timeline, animate, save, render.

Runs the same both ways:
    blender -b [scene.blend] --python scripts/captalk_batch.py -- [options]
    python scripts/captalk_batch.py [options]              (PyPI bpy)

Exit status: 0 done; 2 bad input; 3 a required part (the motion model, audio support in
this Blender build) is missing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import bpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from source_addon import REPO_ROOT, register_from_source, script_args  # noqa: E402

DEFAULT_AUDIO = REPO_ROOT / "samples" / "speech_sample.wav"
EXIT_BAD_INPUT = 2
EXIT_MISSING_PART = 3


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="captalk_batch", description=__doc__.split("\n")[0])
    parser.add_argument("--audio", default=str(DEFAULT_AUDIO), help="speech file to animate")
    parser.add_argument("--out", default="out", help="folder for the .blend and the preview")
    parser.add_argument("--style", default="a calm teacher, small head movements", help="style caption")
    parser.add_argument("--emotion", default="neutral", help="emotion caption")
    parser.add_argument("--start-frame", type=int, default=1, help="where the sound strip starts")
    return parser.parse_args(argv)


def find_or_add_head(context) -> bpy.types.Object:
    from captalk.captalk_addon.rig_builder import PROP_PART

    for obj in context.scene.objects:
        if obj.get(PROP_PART) == "mesh":
            print(f"CapTalk: using the rig already in the scene: {obj.name}")
            return obj
    try:
        bpy.ops.captalk.add_open_head()
    except RuntimeError as exc:  # the operator's ERROR report; it already left the scene as it was
        print(f"CapTalk: could not add the open head: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_MISSING_PART) from None
    print(f"CapTalk: added the open head: {context.active_object.name}")
    return context.active_object


def main() -> int:
    args = parse_args(script_args())
    audio = Path(args.audio).resolve()
    if not audio.is_file():
        print(f"CapTalk: audio file not found: {audio}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not bpy.data.filepath:
        bpy.ops.wm.read_factory_settings(use_empty=True)
    register_from_source()
    from captalk.captalk_addon.sequencer import AudioError, NoAudioSupport, add_sound_strip, check_audio

    try:
        check_audio(str(audio))  # before the head, so bad audio changes nothing at all
    except AudioError as exc:
        print(f"CapTalk: {exc}", file=sys.stderr)
        return EXIT_MISSING_PART if isinstance(exc, NoAudioSupport) else EXIT_BAD_INPUT
    context = bpy.context
    find_or_add_head(context)
    strip = add_sound_strip(context.scene, str(audio), args.start_frame)
    print(f"CapTalk: sound strip '{strip.name}' at frame {args.start_frame}, frames up to {context.scene.frame_end}")

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    blend = out / "captalk_demo.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    print(f"CapTalk: saved {blend}")
    print(
        "CapTalk: STOPPED before animation: no CapTalk motion model is bundled yet (it arrives with "
        "the model and default-model issues). Nothing was animated and no preview was rendered; "
        "the saved scene holds the rig and the sound strip only.",
        file=sys.stderr,
    )
    return EXIT_MISSING_PART


if __name__ == "__main__":
    sys.exit(main())
