"""Headless CapTalk job: add a head, put speech on the timeline, animate, save, render.

Runs the same both ways:
    blender -b [scene.blend] --python scripts/captalk_batch.py -- [options]
    python scripts/captalk_batch.py [options]              (PyPI bpy)

Uses the scene's CapTalk rig (else adds the open head) and the sound strip already
playing the audio (else adds one at --start-frame); generates motion with the back end in
its own process (torch never loads here); writes it as CapTalk's actions on NLA strips
(`captalk_addon.animation`: an artist's own actions are never changed, and a second run
replaces only CapTalk's earlier result for that strip); saves OUT/captalk_demo.blend, the
raw 25 fps motion OUT/captalk_demo_motion.npz and, unless --no-render, renders
OUT/captalk_demo.mp4 (Workbench, H.264 + AAC) over the audio's frames.

Exit status: 0 done; 1 the back end failed unexpectedly; 2 bad input (nothing is
written); 3 a required part (the motion model, audio support in this Blender build, the
back end's Python) is missing (nothing is written).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import bpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from source_addon import REPO_ROOT, register_from_source, script_args  # noqa: E402

DEFAULT_AUDIO = REPO_ROOT / "samples" / "speech_sample.wav"
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_MISSING_PART = 3
PREVIEW_SIZE = 480  # pixels, square: an 8 s preview renders in well under a minute on a CPU


class JobError(Exception):
    """Stops the job with ``status`` after printing the message."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="captalk_batch", description=__doc__.split("\n")[0])
    parser.add_argument("--audio", default=str(DEFAULT_AUDIO), help="speech file to animate")
    parser.add_argument("--out", default="out", help="folder for the .blend, the motion and the preview")
    parser.add_argument("--style", default="a calm teacher, small head movements", help="style caption")
    parser.add_argument("--emotion", default="neutral", help="emotion caption")
    parser.add_argument("--schedule", help="JSON caption schedule (see model/schedule.py): captions that change "
                        "at given seconds; --style/--emotion hold before its first entry")
    parser.add_argument("--checkpoint", help="motion model checkpoint folder (default: <repo>/checkpoints/default)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same motion)")
    parser.add_argument("--start-frame", type=int, default=1, help="where a new sound strip starts")
    parser.add_argument("--render", action=argparse.BooleanOptionalAction, default=True,
                        help="render OUT/captalk_demo.mp4 (default: on)")
    return parser.parse_args(argv)


def check_inputs(args) -> tuple[Path, Path]:
    """(audio, checkpoint) after every check that needs no scene: bad input changes nothing."""
    from captalk.captalk_addon.sequencer import AudioError, NoAudioSupport, check_audio
    from captalk.model.paths import default_checkpoint_dir

    audio = Path(args.audio).resolve()
    if not audio.is_file():
        raise JobError(f"audio file not found: {audio}", EXIT_BAD_INPUT)
    try:
        check_audio(str(audio))
    except AudioError as exc:
        raise JobError(str(exc), EXIT_MISSING_PART if isinstance(exc, NoAudioSupport) else EXIT_BAD_INPUT) from None
    if args.schedule and not Path(args.schedule).is_file():
        raise JobError(f"schedule file not found: {args.schedule}", EXIT_BAD_INPUT)
    checkpoint = Path(args.checkpoint).resolve() if args.checkpoint else default_checkpoint_dir()
    if not (checkpoint / "captalk.json").is_file():
        why = ("" if args.checkpoint else " The default model is not bundled yet (it arrives with the default-model "
               "issue): train one (README, 'Training') and pass --checkpoint DIR.")
        raise JobError(f"no motion model at {checkpoint}.{why} Nothing was animated or written.", EXIT_MISSING_PART)
    return audio, checkpoint


def find_or_add_head(context):
    """(mesh, armature) of the scene's CapTalk rig, or of a newly added open head."""
    from captalk.captalk_addon.rig_builder import PROP_PART, find_rig

    for obj in context.scene.objects:
        if obj.get(PROP_PART) == "mesh":
            print(f"CapTalk: using the rig already in the scene: {obj.name}")
            return find_rig(obj)
    try:
        bpy.ops.captalk.add_open_head()
    except RuntimeError as exc:  # the operator's ERROR report; it already left the scene as it was
        raise JobError(f"could not add the open head: {exc}", EXIT_MISSING_PART) from None
    print(f"CapTalk: added the open head: {context.active_object.name}")
    return find_rig(context.active_object)


def find_or_add_strip(scene, audio: Path, frame_start: int):
    from captalk.captalk_addon.sequencer import add_sound_strip, find_sound_strip

    strip = find_sound_strip(scene, str(audio))
    if strip is not None:
        print(f"CapTalk: using the sound strip already in the scene: '{strip.name}' at frame {strip.frame_start:g}")
        return strip
    strip = add_sound_strip(scene, str(audio), frame_start)
    print(f"CapTalk: sound strip '{strip.name}' at frame {frame_start}, frames up to {scene.frame_end}")
    return strip


def generate_motion(args, audio: Path, checkpoint: Path, head_file: str, out: Path) -> None:
    """Run ``python -m model generate`` in the back-end process; map its failures to exit codes."""
    from captalk.captalk_addon.backend_process import BackendCommand, BackendError, backend_python

    command = ["generate", "--audio", str(audio), "--style", args.style, "--emotion", args.emotion,
               "--checkpoint", str(checkpoint), "--seed", str(args.seed), "--out", str(out)]
    if args.schedule:
        command += ["--schedule", str(Path(args.schedule).resolve())]
    if head_file and Path(head_file).is_file():  # the back end refuses a model that does not fit the rig
        command += ["--head", head_file]
    print(f"CapTalk: generating motion ({checkpoint.name}, seed {args.seed})...", flush=True)
    try:
        process = BackendCommand(command, backend_python())
    except BackendError as exc:
        raise JobError(str(exc), EXIT_MISSING_PART) from None
    try:
        output = process.finish()
    except BackendError as exc:
        status = process.process.returncode
        if status == 2:  # the back end's "bad input" (schedule, captions, a model for another head...)
            raise JobError(str(exc).removeprefix("CapTalk back end failed: ").removeprefix("error: "),
                           EXIT_BAD_INPUT) from None
        raise JobError(str(exc), EXIT_MISSING_PART if "No module named" in str(exc) else EXIT_FAILED) from None
    for line in output.strip().splitlines():
        print(f"  back end: {line}")


def render_preview(scene, strip, out: Path) -> Path:
    import preview_video
    import stills

    stills.use_workbench(scene, PREVIEW_SIZE)
    scene.display.render_aa = "5"  # anti-aliasing samples: a third faster than the default 8, plenty for a preview
    first, last = int(strip.frame_final_start), int(strip.frame_final_end) - 1
    print(f"CapTalk: rendering frames {first}-{last} to {out}...", flush=True)
    return preview_video.render_mp4(scene, out, first, last)


def run(args) -> None:
    if not bpy.data.filepath:
        bpy.ops.wm.read_factory_settings(use_empty=True)
    register_from_source()
    from captalk.captalk_addon.animation import AnimationError, animate_rig
    from captalk.captalk_addon.rig_builder import PROP_HEAD_FILE
    from captalk.model.atomic import atomic_write
    from captalk.model.motion_file import load_motion
    from captalk.model.timeline import TimelineError

    audio, checkpoint = check_inputs(args)  # before the scene is touched
    context = bpy.context
    scene = context.scene
    mesh_object, armature = find_or_add_head(context)
    strip = find_or_add_strip(scene, audio, args.start_frame)
    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory(prefix="captalk-") as tmp:
        motion_file = Path(tmp) / "motion.npz"
        generate_motion(args, audio, checkpoint, mesh_object.get(PROP_HEAD_FILE, ""), motion_file)
        clip = load_motion(motion_file)
        try:
            actions = animate_rig(scene, mesh_object, armature, clip.motion, clip.channels, strip.name,
                                  strip.frame_start)
        except (AnimationError, TimelineError) as exc:
            raise JobError(str(exc), EXIT_BAD_INPUT) from None
        print(f"CapTalk: {clip.num_frames} motion frames at {clip.fps:g} fps -> "
              f"{', '.join(a.name for a in actions)} at {scene.render.fps / scene.render.fps_base:.3f} fps")
        atomic_write(out / "captalk_demo_motion.npz", lambda name: shutil.copyfile(motion_file, name))
    if args.render and scene.camera is None:
        import stills

        stills.add_front_camera(scene, mesh_object)  # kept in the .blend: it shows what the preview shows
    blend = out / "captalk_demo.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    print(f"CapTalk: saved {blend}")
    if args.render:
        video = render_preview(scene, strip, out / "captalk_demo.mp4")
        print(f"CapTalk: rendered {video}")


def main() -> int:
    args = parse_args(script_args())
    try:
        run(args)
    except JobError as exc:
        print(f"CapTalk: {exc}", file=sys.stderr)
        return exc.status
    return 0


if __name__ == "__main__":
    sys.exit(main())
