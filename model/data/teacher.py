"""The teacher animator: timed phones + audio + control segments -> motion (T, C).

A rule-based animator for heads with ARKit-52 expression channels and a head joint
(the open head): it makes the training data the bundled model learns from, and a
reference animation for any recording with a transcript (phones from forced alignment).

Layers, added in this order (each in its own module):
  lips      `articulation`: visemes with coarticulation, loudness-scaled, style mouth gain
  emotion   `expressions`: the segment's emotion pose x intensity, cross-faded at changes
  accents   brows and emotion accents on prominent syllables (`prosody.find_accents`)
  eyes      blinks (rate from emotion and tone), small gaze fixations
  closure   bilabials shut the lips whatever the layers above did
  head      nods/tilts on accents + slow drift, scaled by the style's head gain, plus
            the emotion's posture

Control segments cross-fade over `TeacherConfig.transition_s` after their start time.
Shapes: audio (N,) float32 16 kHz; motion (T, C) float32 at 25 fps, T = frame_count(N).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..core.audio import MOTION_FPS, frame_count
from ..speech.phones import Phone
from .articulation import PARAMETERS, articulate
from .controls import HEAD_GAIN, MOUTH_GAIN, TEMPO_RATE, ControlSegment, EmotionControls, StyleControls
from .expressions import EMOTION_EXPRESSIONS, TONE_EXPRESSIONS, pose_vector
from .prosody import analyse, find_accents, speech_activity

HEAD_JOINT = "head"
HEAD_CHANNELS = (f"{HEAD_JOINT}.rx", f"{HEAD_JOINT}.ry", f"{HEAD_JOINT}.rz")
# channels that part the lips; a bilabial closure cancels them
LIP_PARTING = (
    "mouthFunnel", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "mouthRollUpper", "mouthShrugUpper", "jawForward", "tongueOut",
)


@dataclass(frozen=True)
class TeacherConfig:
    transition_s: float = 0.4  # cross-fade of a control change
    jaw_scale: float = 0.5  # jawOpen at full articulatory opening and normal mouth
    blinks_per_minute: float = 16.0
    gaze_fixation_s: float = 1.6  # mean duration of a gaze fixation
    nod_deg: float = 3.0  # accent nod at strength 1, moderate head
    drift_deg: tuple[float, float, float] = (1.6, 1.0, 2.4)  # pitch, roll, yaw
    emotion_wobble: float = 0.12  # slow relative fluctuation of the emotion pose


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def segment_weights(segments: Sequence[ControlSegment], times: np.ndarray, transition_s: float) -> np.ndarray:
    """(T, S) weights summing to 1: each segment fades in over ``transition_s`` from its start."""
    weights = np.zeros((len(times), len(segments)))
    weights[:, 0] = 1.0
    for index, segment in enumerate(segments[1:], start=1):
        ramp = _smoothstep((times - segment.start) / transition_s)[:, None]
        weights *= 1 - ramp
        weights[:, index:index + 1] += ramp
    return weights


def _bump(times: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Raised cosine of total ``width`` seconds centred on ``centre``, peak 1."""
    x = np.clip((times - centre) / (0.5 * width), -1.0, 1.0)
    return 0.5 * (1 + np.cos(np.pi * x))


def _blink_curve(times: np.ndarray, start: float) -> np.ndarray:
    """Lid closure of one blink: 70 ms down, 30 ms shut, 150 ms up."""
    t = times - start
    down = _smoothstep(t / 0.07)
    up = 1 - _smoothstep((t - 0.1) / 0.15)
    return np.where(t < 0.07, down, np.where(t < 0.1, 1.0, up)) * (t >= 0) * (t < 0.25)


def _slow_noise(rng: np.random.Generator, phase: np.ndarray, frequencies=(0.09, 0.17, 0.31)) -> np.ndarray:
    """Smooth zero-mean noise of unit-ish std along ``phase`` (seconds, time-warped by tempo)."""
    total = np.zeros_like(phase)
    for base in frequencies:
        f = base * rng.uniform(0.7, 1.4)
        total += np.sin(2 * np.pi * f * phase + rng.uniform(0, 2 * np.pi))
    return total / np.sqrt(len(frequencies) / 2)


class Teacher:
    """Animates clips on one channel layout (ARKit-52 names + ``head.rx/ry/rz``)."""

    def __init__(self, channels: Sequence[str], config: TeacherConfig = TeacherConfig()):
        self.channels = tuple(channels)
        missing = [c for c in HEAD_CHANNELS if c not in self.channels]
        if missing:
            raise ValueError(f"the teacher needs head rotation channels {missing}")
        self.config = config
        self.index = {name: i for i, name in enumerate(self.channels)}
        self.expression_channels = [c for c in self.channels if c not in HEAD_CHANNELS]
        self._emotion_poses = {k: pose_vector(e.pose, self.channels) for k, e in EMOTION_EXPRESSIONS.items()}
        self._emotion_accents = {k: pose_vector(e.accent_pose, self.channels) for k, e in EMOTION_EXPRESSIONS.items()}
        self._tone_poses = {k: pose_vector(e.pose, self.channels) for k, e in TONE_EXPRESSIONS.items()}
        self._tone_accents = {k: pose_vector(e.accent_pose, self.channels) for k, e in TONE_EXPRESSIONS.items()}
        self._base_accent = pose_vector({"browInnerUp": 0.12, "browOuterUpLeft": 0.08, "browOuterUpRight": 0.08},
                                        self.channels)

    def animate(self, audio: np.ndarray, phones: Sequence[Phone], segments: Sequence[ControlSegment],
                rng: np.random.Generator, rate: float = 1.0) -> np.ndarray:
        """(N,) audio + phones + control segments (first at 0) -> (T, C) float32 motion."""
        if not segments:
            raise ValueError("at least one control segment is needed")
        fps = MOTION_FPS
        num_frames = frame_count(len(audio))
        times = np.arange(num_frames) / fps
        weights = segment_weights(segments, times, self.config.transition_s)  # (T, S)
        blend = lambda values: weights @ np.asarray(values, dtype=np.float64)  # noqa: E731
        emotions = [EMOTION_EXPRESSIONS[s.emotion.label] for s in segments]
        tones = [TONE_EXPRESSIONS[s.style.tone] for s in segments]
        intensity = [s.emotion.weight for s in segments]

        prosody = analyse(audio, num_frames, fps)
        accents = find_accents(tuple(phones), prosody, fps)
        activity = speech_activity(tuple(phones), num_frames, fps)

        motion = np.zeros((num_frames, len(self.channels)))
        mouth_gain = blend([MOUTH_GAIN[s.style.mouth] * (1 + w * (e.mouth_gain - 1)) * t.mouth_gain
                            for s, e, t, w in zip(segments, emotions, tones, intensity)])
        tracks, closure = articulate(tuple(phones), num_frames, fps, rate)
        motion += self._lips(tracks, mouth_gain, prosody.loudness)

        # emotion + tone poses, breathing slowly in strength so they look alive
        wobble = 1 + self.config.emotion_wobble * _slow_noise(rng, times)
        emotion_pose = weights @ np.stack([w * self._emotion_poses[s.emotion.label] for s, w in zip(segments, intensity)])
        motion += emotion_pose * wobble[:, None]
        motion += weights @ np.stack([self._tone_poses[s.style.tone] for s in segments])

        head_energy = blend([HEAD_GAIN[s.style.head] * (1 + w * (e.head_energy - 1)) * t.head_energy
                             for s, e, t, w in zip(segments, emotions, tones, intensity)])
        accent_track = np.zeros(num_frames)
        for accent in accents:
            accent_track = np.maximum(accent_track, accent.strength * _bump(times, accent.time, 0.45))
        accent_pose = weights @ np.stack([
            self._base_accent + w * self._emotion_accents[s.emotion.label] + self._tone_accents[s.style.tone]
            for s, w in zip(segments, intensity)])
        motion += accent_track[:, None] * accent_pose * np.clip(0.4 + 0.6 * head_energy, 0.3, 1.6)[:, None]

        blink_rate = blend([e.blink_rate ** w * t.blink_rate for e, t, w in zip(emotions, tones, intensity)])
        self._eyes(motion, times, blink_rate, rng)
        self._close_lips(motion, closure)

        tempo = blend([TEMPO_RATE[s.style.tempo] for s in segments])
        posture = blend([np.array(e.posture_deg) * w for e, w in zip(emotions, intensity)])
        head_deg = self._head(times, accents, head_energy, tempo, activity, rng) + posture
        expressions = [self.index[c] for c in self.expression_channels]
        motion[:, expressions] = np.clip(motion[:, expressions], 0.0, 1.0)
        motion[:, [self.index[c] for c in HEAD_CHANNELS]] = np.deg2rad(head_deg)
        return motion.astype(np.float32)

    def _lips(self, tracks: np.ndarray, mouth_gain: np.ndarray, loudness: np.ndarray) -> np.ndarray:
        """Articulatory tracks (T, A) -> (T, C) lip and jaw channels."""
        num_frames = len(tracks)
        track = {name: tracks[:, k] for k, name in enumerate(PARAMETERS)}
        kernel = np.hanning(5) / np.hanning(5).sum()
        loud_gain = np.clip(0.7 + 0.4 * np.convolve(loudness, kernel, mode="same"), 0.6, 1.25)
        opening = mouth_gain * loud_gain
        rounding = 0.7 + 0.3 * mouth_gain
        values = {
            "jawOpen": self.config.jaw_scale * track["jaw"] * opening,
            "mouthLowerDownLeft": 0.35 * track["lower"] * opening,
            "mouthLowerDownRight": 0.35 * track["lower"] * opening,
            "mouthPucker": 0.8 * track["round"] * rounding,
            "mouthFunnel": 0.55 * track["funnel"] * rounding,
            "mouthStretchLeft": 0.3 * track["spread"] * opening,
            "mouthStretchRight": 0.3 * track["spread"] * opening,
            "mouthRollLower": 0.55 * track["tuck"],
            "mouthUpperUpLeft": 0.2 * track["tuck"],
            "mouthUpperUpRight": 0.2 * track["tuck"],
            "tongueOut": 0.3 * track["tongue"],
        }
        lips = np.zeros((num_frames, len(self.channels)))
        for name, value in values.items():
            lips[:, self.index[name]] = value
        return lips

    def _close_lips(self, motion: np.ndarray, closure: np.ndarray) -> None:
        """Shut the lips on /p b m/ (``closure`` (T,)) against everything that opened them."""
        for name in LIP_PARTING:
            motion[:, self.index[name]] *= 1 - closure
        jaw = np.clip(motion[:, self.index["jawOpen"]], 0.0, 1.0)
        # in ARKit, mouthClose = jawOpen holds the lips together; a touch more presses them
        motion[:, self.index["mouthClose"]] = np.maximum(motion[:, self.index["mouthClose"]], 1.05 * jaw * closure)
        for side in ("Left", "Right"):
            press = self.index[f"mouthPress{side}"]
            motion[:, press] = np.maximum(motion[:, press], 0.25 * closure)

    def _eyes(self, motion: np.ndarray, times: np.ndarray, blink_rate: np.ndarray, rng) -> None:
        duration = times[-1] + 1 / MOTION_FPS
        base = self.config.blinks_per_minute / 60.0
        blinks = np.zeros_like(times)
        t = rng.uniform(0.2, 2.0)
        while t < duration:
            blinks = np.maximum(blinks, _blink_curve(times, t) * rng.uniform(0.85, 1.0))
            frame = min(int(t * MOTION_FPS), len(times) - 1)
            t += max(0.6, rng.exponential(1.0 / (base * blink_rate[frame])))
        for side in ("Left", "Right"):
            motion[:, self.index[f"eyeBlink{side}"]] = np.maximum(motion[:, self.index[f"eyeBlink{side}"]], blinks)
            motion[:, self.index[f"eyeWide{side}"]] *= 1 - blinks

        horizontal, vertical = np.zeros_like(times), np.zeros_like(times)
        t = 0.0
        while t < duration:
            hold = rng.exponential(self.config.gaze_fixation_s) + 0.3
            inside = (times >= t) & (times < t + hold)
            horizontal[inside], vertical[inside] = rng.normal(0, 0.12), rng.normal(0, 0.07)
            t += hold
        kernel = np.hanning(3) / np.hanning(3).sum()  # saccades take about a frame
        horizontal = np.convolve(horizontal, kernel, mode="same")
        vertical = np.convolve(vertical, kernel, mode="same")
        # the character's own left: left eye looks out, right eye looks in
        for name, value in (("eyeLookOutLeft", horizontal), ("eyeLookInRight", horizontal),
                            ("eyeLookInLeft", -horizontal), ("eyeLookOutRight", -horizontal),
                            ("eyeLookUpLeft", vertical), ("eyeLookUpRight", vertical),
                            ("eyeLookDownLeft", -vertical), ("eyeLookDownRight", -vertical)):
            motion[:, self.index[name]] += np.maximum(value, 0.0)

    def _head(self, times, accents, energy, tempo, activity, rng) -> np.ndarray:
        """(T, 3) degrees: pitch (nod down +), roll, yaw."""
        config = self.config
        phase = np.cumsum(tempo) / MOTION_FPS  # tempo speeds the drift up
        drift = np.stack([_slow_noise(rng, phase) * a for a in config.drift_deg], axis=1)
        head = drift * (0.6 + 0.4 * activity)[:, None]
        for accent in accents:
            width = 0.5 / np.interp(accent.time, times, tempo)
            # the head leads the voice a little
            nod = accent.strength * config.nod_deg * _bump(times, accent.time - 0.06, width)
            head[:, 0] += nod * rng.uniform(0.6, 1.2)
            if rng.random() < 0.4:
                head[:, 1] += nod * rng.normal(0, 0.5)
                head[:, 2] += nod * rng.normal(0, 0.6)
        return head * energy[:, None]


NEUTRAL_SEGMENT = ControlSegment(0.0, StyleControls(), EmotionControls())


def animate_recording(audio: np.ndarray, transcript: str, channels: Sequence[str],
                      segment: ControlSegment = NEUTRAL_SEGMENT, seed: int = 0,
                      config: TeacherConfig = TeacherConfig()) -> tuple[np.ndarray, tuple[Phone, ...]]:
    """A real recording's reference animation: (N,) 16 kHz audio + the words it says ->
    ((T, C) float32 motion, the aligned phones), phones from forced alignment
    (`model.speech.alignment.align`), controls held at ``segment`` (default neutral)."""
    from ..speech.alignment import align  # pocketsphinx loads only when a recording is animated

    phones = align(audio, transcript)
    motion = Teacher(channels, config).animate(audio, phones, [segment], np.random.default_rng(seed))
    return motion, phones
