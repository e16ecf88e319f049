"""Model motion on a scene's timeline: 25 fps motion -> values on whole scene frames.

Pure numpy (no bpy, no torch): the Blender writer (`captalk_addon.animation`) only
copies these numbers into F-curves.

Time. Motion frame i shows time i / 25 s (`model.core.motion_file`). A sound strip starting
at scene frame ``frame_start`` in a scene running at ``fps / fps_base`` frames per
second (Blender's two numbers: 29.97 is 30 / 1.001) makes scene frame f show time

    t(f) = (f - frame_start) * fps_base / fps   seconds, i.e. motion position
    p(f) = t(f) * 25                            (fractional motion frame).

Every position is computed from its own frame number in float64, never by adding a
step per frame, so nothing drifts: at 29.97 fps the last frame of a 10-minute clip is
off by float64 round-off only (about 1e-12 frames).

Interpolation is linear between the two motion frames around p(f):
- expression channels are blend-shape weights, and the mesh is linear in them, so
  linear interpolation of the weights is linear interpolation of every vertex;
- joint rotations are axis-angle vectors. Lerping two rotation vectors differs from
  slerping the rotations only through their non-commuting part, which is tiny for the
  small rotations a head makes between two motion frames 40 ms apart: from 5 degrees
  about X, a 0.5 degree step about Y gives at most 1e-5 degrees of difference, and even
  a 5 degree jump between orthogonal axes only 0.001 degrees (measured with
  `model.core.rotations`); about a single axis it is exactly zero.
The rotation vectors are then turned into bone quaternions by the existing
`model.core.rig_layout.bone_local_quaternions` (sign-continuous for F-curves).

Captions go the other way: `caption_schedule` turns caption sections on timeline
markers into a caption schedule in seconds from the audio's start (`model.core.schedule`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from .audio import MOTION_FPS
from .head_model import ROTATION_AXES, rotation_channel_names
from .rig_layout import bone_local_quaternions
from .schedule import Schedule, parse_schedule, start_frame
from .errors import BadInput

# Positions are snapped to whole frames within this tolerance, so a frame that lands
# exactly on the clip's last motion frame (up to float round-off) is kept.
_FRAME_EPS = 1e-6


class TimelineError(BadInput):
    """Motion or a frame rate that cannot go on a timeline; the message says why."""


@dataclass(frozen=True)
class SceneRate:
    """A scene's frame rate as Blender stores it: ``fps`` (whole) / ``fps_base``."""

    fps: float
    fps_base: float = 1.0

    def __post_init__(self) -> None:
        if not (self.fps > 0 and self.fps_base > 0 and math.isfinite(self.fps) and math.isfinite(self.fps_base)):
            raise TimelineError(f"frame rate {self.fps}/{self.fps_base} is not a positive number")

    @classmethod
    def from_blender(cls, fps: int, fps_base: float) -> "SceneRate":
        """From ``scene.render.fps`` / ``fps_base``. Blender keeps fps_base as float32, so
        29.97's 1.001 reads back as 1.00100004673; rounding to 1e-6 recovers the rate the
        user picked (every preset's fps_base is 1 or 1.001)."""
        return cls(float(fps), round(float(fps_base), 6))

    @property
    def frames_per_second(self) -> float:
        return self.fps / self.fps_base


def motion_positions(frames: np.ndarray, frame_start: float, rate: SceneRate,
                     motion_fps: float = MOTION_FPS) -> np.ndarray:
    """Scene frames (N,) -> fractional motion frames (N,) float64 they show: p(f) above."""
    frames = np.asarray(frames, dtype=np.float64)
    return (frames - frame_start) * (rate.fps_base * motion_fps) / rate.fps


def scene_frames(num_motion_frames: int, frame_start: float, rate: SceneRate,
                 motion_fps: float = MOTION_FPS) -> np.ndarray:
    """Whole scene frames (N,) float64 that show a time within the motion, i.e. p(f) in
    [0, num_motion_frames - 1]: from the first whole frame at or after ``frame_start`` to
    the last one at or before the last motion frame (held after it by the F-curves)."""
    if num_motion_frames < 1:
        raise TimelineError("the motion has no frames")
    last_time_in_frames = (num_motion_frames - 1) / motion_fps * rate.frames_per_second
    first = math.ceil(frame_start - _FRAME_EPS)
    last = math.floor(frame_start + last_time_in_frames + _FRAME_EPS)
    if last < first:
        raise TimelineError("the motion ends before the first whole scene frame of the strip")
    return np.arange(first, last + 1, dtype=np.float64)


def sample_motion(motion: np.ndarray, frame_start: float, rate: SceneRate,
                  motion_fps: float = MOTION_FPS) -> tuple[np.ndarray, np.ndarray]:
    """Motion (T, C) at ``motion_fps`` -> (frames (N,) float64, values (N, C) float64):
    the motion linearly interpolated at the time each whole scene frame shows."""
    motion = np.asarray(motion, dtype=np.float64)
    if motion.ndim != 2:
        raise TimelineError(f"motion must be (frames, channels), got shape {motion.shape}")
    frames = scene_frames(len(motion), frame_start, rate, motion_fps)
    positions = np.clip(motion_positions(frames, frame_start, rate, motion_fps), 0.0, len(motion) - 1)
    # Snap positions within round-off of a whole frame, so a frame showing motion frame i
    # gets exactly motion[i].
    whole = np.round(positions)
    positions = np.where(np.abs(positions - whole) < _FRAME_EPS, whole, positions)
    lower = np.floor(positions).astype(np.int64)
    upper = np.minimum(lower + 1, len(motion) - 1)
    weight = (positions - lower)[:, None]
    return frames, (1.0 - weight) * motion[lower] + weight * motion[upper]


def channel_layout(channels: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(expression names, joints) of a motion's channels, laid out as `model.core.head_model`
    defines: the E expression channels first, then ``<joint>.rx/.ry/.rz`` per joint."""
    channels = list(channels)
    suffix = f".{ROTATION_AXES[0]}"
    first_rotation = next((i for i, name in enumerate(channels) if name.endswith(suffix)), len(channels))
    joints = tuple(name[: -len(suffix)] for name in channels[first_rotation::3])
    expected = [name for joint in joints for name in rotation_channel_names(joint)]
    if channels[first_rotation:] != expected:
        raise TimelineError("motion channels are not E expressions followed by <joint>.rx/.ry/.rz triples")
    return tuple(channels[:first_rotation]), joints


@dataclass(frozen=True)
class RigAnimation:
    """What the Blender writer keys, on whole scene frames.

    frames (N,) float64; shape_keys (E,) names and shape_values (N, E) float32;
    bones (J,) names and bone_quaternions (J, N, 4) float32 (w, x, y, z), pose-bone
    rotations in each bone's rest frame.
    """

    frames: np.ndarray
    shape_keys: tuple[str, ...]
    shape_values: np.ndarray
    bones: tuple[str, ...]
    bone_quaternions: np.ndarray


def rig_animation(motion: np.ndarray, channels: Sequence[str], bone_rest: Mapping[str, np.ndarray],
                  frame_start: float, rate: SceneRate, motion_fps: float = MOTION_FPS) -> RigAnimation:
    """Motion (T, C) with its channel names -> a `RigAnimation` on the scene's frames.

    bone_rest: joint name -> (3, 3) rotation part of that bone's ``matrix_local``, for
    every joint the motion rotates (see `bone_local_quaternions`).
    """
    expressions, joints = channel_layout(channels)
    missing = [joint for joint in joints if joint not in bone_rest]
    if missing:
        raise TimelineError(f"the rig has no bone for the motion's joint(s) {', '.join(missing)}")
    frames, values = sample_motion(motion, frame_start, rate, motion_fps)
    count = len(expressions)
    quaternions = [bone_local_quaternions(values[:, count + 3 * k: count + 3 * k + 3], bone_rest[joint])
                   for k, joint in enumerate(joints)]
    return RigAnimation(
        frames=frames,
        shape_keys=expressions,
        shape_values=values[:, :count].astype(np.float32),
        bones=joints,
        bone_quaternions=np.asarray(quaternions, dtype=np.float32).reshape(len(joints), len(frames), 4),
    )


def caption_schedule(sections: Iterable[tuple[float, str, str]], style: str, emotion: str,
                     audio_start_frame: float, rate: SceneRate, duration: float,
                     motion_fps: float = MOTION_FPS) -> Schedule:
    """Caption sections on timeline markers -> the caption schedule of one piece of audio.

    sections: (marker frame, style, emotion) per section, in any order; style / emotion:
    the default captions; audio_start_frame: the scene frame (may be fractional) at which
    the audio's time 0 plays; duration: the audio's length in seconds. Returns the
    `Schedule` (starts in seconds from the audio's start, the first at 0, every caption
    resolved); a caption it cannot use raises `ScheduleError`.

    Rules:
    - a marker at frame f is at t = (f - audio_start_frame) * fps_base / fps seconds;
    - an empty (or blank) caption in a section keeps the caption in force before it, so a
      section can change just the style or just the emotion ("" cannot switch a caption
      off mid-clip: write "neutral" for no particular emotion);
    - sections are applied in time order, and those that take effect on the same motion
      frame (`model.core.schedule.start_frame`) merge into one entry: the later marker wins
      for each caption it sets (on the very same frame, the later one in ``sections``);
    - sections at or before the audio's start set the captions in force from 0 s;
    - sections on or after the audio's last motion frame are ignored (they would change
      nothing that plays), as are sections that change neither caption.
    """
    if not (math.isfinite(audio_start_frame) and math.isfinite(duration) and duration > 0):
        raise TimelineError(f"the audio needs a finite start frame and a duration > 0 s, got start "
                            f"{audio_start_frame} and duration {duration}")
    num_motion_frames = max(1, int(round(duration * motion_fps)))  # as Schedule.check_duration counts
    timed = sorted(((float(frame) - audio_start_frame) * rate.fps_base / rate.fps, order, sec_style, sec_emotion)
                   for order, (frame, sec_style, sec_emotion) in enumerate(sections))
    current = {"style": style.strip(), "emotion": emotion.strip()}
    entries = [{"start": 0.0, **current}]
    for seconds, _, sec_style, sec_emotion in timed:
        frame = start_frame(max(seconds, 0.0), motion_fps)
        if frame >= num_motion_frames:
            break
        for key, caption in (("style", sec_style), ("emotion", sec_emotion)):
            if caption.strip():
                current[key] = caption.strip()
        last = entries[-1]
        if start_frame(last["start"], motion_fps) == frame:  # same motion frame: merge
            last.update(current)
        elif (last["style"], last["emotion"]) != (current["style"], current["emotion"]):
            entries.append({"start": seconds, **current})
    return parse_schedule(entries)


@dataclass(frozen=True)
class StripTiming:
    """Which part of a sound strip's audio plays, and where: audio second ``audio_start``
    shows at scene frame ``start_frame`` (fractional), which is where motion frame 0 goes."""

    audio_start: float
    audio_end: float
    start_frame: float

    @property
    def duration(self) -> float:
        return self.audio_end - self.audio_start


def strip_timing(frame_start: float, frame_final_start: float, frame_final_end: float, sound_offset: float,
                 rate: SceneRate, audio_seconds: float) -> StripTiming:
    """A sound strip's numbers as Blender keeps them -> the audio it plays (`StripTiming`).

    Blender plays audio second t of the strip's sound at scene frame

        f(t) = frame_start + (t + sound_offset) * fps / fps_base

    (``frame_start``: where the untrimmed strip begins; ``sound_offset``: seconds the sound
    is delayed within the strip, Blender 4.4+, else 0; measured with a mixdown), and only
    between ``frame_final_start`` and ``frame_final_end`` (the trimmed strip). So the part
    that plays is t in [t(frame_final_start), t(frame_final_end)] clipped to the sound's
    [0, audio_seconds]. Raises `TimelineError` when no audio plays at all.
    """
    seconds_per_frame = rate.fps_base / rate.fps
    audio_start = max(0.0, (frame_final_start - frame_start) * seconds_per_frame - sound_offset)
    audio_end = min(float(audio_seconds), (frame_final_end - frame_start) * seconds_per_frame - sound_offset)
    if not audio_end - audio_start >= 1.0 / MOTION_FPS:
        raise TimelineError(f"the strip plays no audio (it is trimmed or offset past its sound: from "
                            f"{audio_start:.2f} s to {audio_end:.2f} s of {audio_seconds:.2f} s)")
    return StripTiming(audio_start, audio_end, frame_start + (audio_start + sound_offset) / seconds_per_frame)
