"""Retarget CapTalk's results onto any character: the numbers behind "Bake to shape keys".

Pure numpy (no bpy): the Blender layer (`captalk_addon.bake`) reads CapTalk's NLA strips
into `ResultStrip`s, calls the functions here and copies what they return into F-curves.

1. `flatten_strips`: NLA strips -> one value per channel on every whole scene frame,
   by Blender's NLA rules for strips in REPLACE mode at full influence (what CapTalk
   writes): tracks are evaluated bottom to top and an upper track's value replaces the
   lower one for the channels it animates; within a track the strip covering a frame
   plays, the earlier one where two touch; between strips the previous one holds its
   last pose unless its extrapolation is NOTHING; before the first strip it holds its
   first pose only with HOLD. A held strip shows its first or last frame.
2. `match_names`: source channel (or bone) names -> the target's names: a user mapping
   table first, then the same name, then the same name ignoring case ("JawOpen" or
   "jawopen" receives "jawOpen"); the rest is reported as unmapped.
3. Region strengths (`BakeConfig`): shape-key values are multiplied by their region's
   strength (then clamped to the target key's slider range, as Blender plays them);
   bone rotations have their rotation angle multiplied (q -> q^s, i.e. slerp from the
   identity by s).
4. Optional keyframe reduction (`reduce_keys`, `reduce_rotation_keys`): Douglas-Peucker
   on the key values, so every dropped key is reproduced by linear interpolation of the
   kept keys within the tolerance; the first and last keys always stay.

`bake_shape_keys` and `bake_bones` chain the steps for one target.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np

from .rotations import axis_angle_to_matrix, matrix_to_quaternion, quaternion_to_axis_angle
from .errors import BadInput

REGIONS = ("mouth", "brows", "eyes", "head")
EXTRAPOLATIONS = ("HOLD", "HOLD_FORWARD", "NOTHING")

# ARKit channels by FACS face half, matched on the lower-case name's start: upper face
# (AU1/2/4 brows; AU5/6/7 and gaze: eyes, so cheekSquint = AU6 goes with the eyes),
# lower face (AU9 nose wrinkler and below: mouth, jaw, cheek puff, tongue). Names that
# match none (FLAME's PCA channels expr000...) are not scaled.
_CHANNEL_REGIONS = (
    ("brow", "brows"),
    ("eye", "eyes"),
    ("cheeksquint", "eyes"),
    ("jaw", "mouth"),
    ("mouth", "mouth"),
    ("tongue", "mouth"),
    ("cheekpuff", "mouth"),
    ("nosesneer", "mouth"),
)


class RetargetError(BadInput):
    """Input the bake cannot use (a bad mapping table, bad settings); the message says why."""


@dataclass(frozen=True)
class BakeConfig:
    """How a bake retargets: region strengths, keyframe reduction and the name mapping.

    mouth, brows, eyes: factors on the shape-key values of those regions (see
    `channel_region`); head: factor on the rotation angle of the head/neck bones (jaw and
    eye bones follow mouth and eyes, see `bone_region`). reduce: drop keys that linear
    interpolation reproduces within ``tolerance`` (shape-key value units) or, for bones,
    ``rotation_tolerance`` (radians of rotation). mapping: source name -> target name
    (source names match ignoring case); an empty target name leaves that channel out.
    """

    mouth: float = 1.0
    brows: float = 1.0
    eyes: float = 1.0
    head: float = 1.0
    reduce: bool = False
    tolerance: float = 0.002
    rotation_tolerance: float = math.radians(0.1)
    mapping: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.mapping, Mapping):  # accept a dict; keep the config hashable
            object.__setattr__(self, "mapping", tuple(self.mapping.items()))
        for region in REGIONS:
            value = getattr(self, region)
            if not (math.isfinite(value) and value >= 0):
                raise RetargetError(f"{region} strength must be a number >= 0, got {value}")
        for name in ("tolerance", "rotation_tolerance"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise RetargetError(f"{name} must be a number >= 0, got {getattr(self, name)}")

    def strength(self, region: str | None) -> float:
        """The factor for ``region`` (1 for channels in no region)."""
        return 1.0 if region is None else float(getattr(self, region))


def parse_mapping(text: str) -> dict[str, str]:
    """A mapping table as JSON text, e.g. ``{"jawOpen": "Mouth_Open", "tongueOut": ""}``
    -> {source name: target name}; empty text -> {}. Raises `RetargetError` saying what
    is wrong."""
    if not text.strip():
        return {}
    try:
        table = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RetargetError(f"the name mapping is not valid JSON ({exc.msg}, line {exc.lineno} "
                            f"column {exc.colno}); write it as {{\"jawOpen\": \"Mouth_Open\"}}") from None
    if not isinstance(table, dict):
        raise RetargetError("the name mapping must be a JSON object: {\"CapTalk name\": \"your name\", ...}")
    bad = [key for key, value in table.items() if not isinstance(value, str)]
    if bad:
        raise RetargetError(f"the name mapping's targets must be names (text): see {', '.join(bad[:5])}")
    seen: dict[str, str] = {}
    for source, target in table.items():
        if target and target in seen:
            raise RetargetError(f"the name mapping sends both '{seen[target]}' and '{source}' to '{target}'")
        seen[target] = source
    return dict(table)


@dataclass(frozen=True)
class NameMatch:
    """Which source name goes to which target name.

    pairs: (source, target) in source order; unmapped: sources with no target;
    excluded: sources the mapping leaves out (mapped to ""); missing_targets: names the
    mapping asks for that the target does not have.
    """

    pairs: tuple[tuple[str, str], ...]
    unmapped: tuple[str, ...]
    excluded: tuple[str, ...] = ()
    missing_targets: tuple[str, ...] = ()


def match_names(sources: Sequence[str], targets: Sequence[str],
                mapping: Mapping[str, str] | Sequence[tuple[str, str]] = ()) -> NameMatch:
    """Map ``sources`` onto ``targets``: mapping table (keys ignore case), then the exact
    name, then the name ignoring case (the first such target, in target order). Each
    target receives one source at most: the mapping table claims its targets first."""
    table = {key.lower(): value for key, value in dict(mapping).items()}
    exact = set(targets)
    folded: dict[str, str] = {}
    for name in targets:
        folded.setdefault(name.lower(), name)

    def find(name: str) -> str | None:
        return name if name in exact else folded.get(name.lower())

    chosen: dict[str, str] = {}
    excluded, missing = [], []
    for source in sources:  # the mapping table first, so it can claim any target
        if source.lower() not in table:
            continue
        wanted = table[source.lower()]
        if not wanted:
            excluded.append(source)
        elif find(wanted) is None:
            missing.append(wanted)
        elif find(wanted) not in chosen.values():
            chosen[source] = find(wanted)
    claimed = set(chosen.values())
    for source in sources:
        if source in chosen or source.lower() in table:
            continue
        target = find(source)
        if target is not None and target not in claimed:
            chosen[source] = target
            claimed.add(target)
    return NameMatch(
        pairs=tuple((s, chosen[s]) for s in sources if s in chosen),
        unmapped=tuple(s for s in sources if s not in chosen and s not in excluded),
        excluded=tuple(excluded),
        missing_targets=tuple(missing),
    )


def channel_region(name: str) -> str | None:
    """Region ("mouth", "brows", "eyes") of an ARKit expression channel, or None."""
    lower = name.lower()
    return next((region for prefix, region in _CHANNEL_REGIONS if lower.startswith(prefix)), None)


def bone_region(name: str) -> str:
    """Region of a rotated bone: "mouth" for the jaw, "eyes" for eye bones, else "head"
    (head, neck, FLAME's global)."""
    lower = name.lower()
    if lower.startswith("jaw"):
        return "mouth"
    return "eyes" if lower.startswith("eye") else "head"


# ----------------------------------------------------------------------------- NLA strips


@dataclass(frozen=True, eq=False)
class ResultStrip:
    """One NLA strip of CapTalk's results, its action sampled on a grid of action frames.

    track: position of its NLA track, bottom (evaluated first) = 0. frame_start,
    frame_end: the scene frames it spans; action_start, action_end: the action frames
    they show; scale, repeat: as Blender's NLA strip; extrapolation: one of
    `EXTRAPOLATIONS`; muted: Blender still picks a muted strip for its frames (and its
    holds) but it contributes nothing there, so lower tracks show.
    channels (C,) hashable ids (the Blender layer uses shape-key names and (bone,
    quaternion component) pairs); frames (K,) increasing action frames; values (K, C).
    """

    track: int
    frame_start: float
    frame_end: float
    action_start: float
    action_end: float
    channels: tuple[Hashable, ...]
    frames: np.ndarray
    values: np.ndarray
    extrapolation: str = "HOLD"
    scale: float = 1.0
    repeat: float = 1.0
    muted: bool = False

    def __post_init__(self) -> None:
        if self.extrapolation not in EXTRAPOLATIONS:
            raise RetargetError(f"unknown NLA extrapolation {self.extrapolation!r}")
        if np.shape(self.values) != (len(self.frames), len(self.channels)) or len(self.frames) == 0:
            raise RetargetError(f"strip values {np.shape(self.values)} do not fit "
                                f"{len(self.frames)} frames x {len(self.channels)} channels")

    def action_frames(self, scene_frames: np.ndarray) -> np.ndarray:
        """Scene frames (N,) -> the action frames (N,) this strip shows there, as Blender
        maps them (held frames clamped to the strip's ends):

            a(f) = action_start + fmod(f - frame_start, L * scale) / scale,  L = action_end - action_start

        except a(frame_end) = action_end when ``repeat`` is whole (no jump back to the start)."""
        f = np.clip(np.asarray(scene_frames, dtype=np.float64), self.frame_start, self.frame_end)
        period = (self.action_end - self.action_start) * self.scale
        local = np.fmod(f - self.frame_start, period) / self.scale if period > 0 else np.zeros_like(f)
        at_end = np.isclose(f, self.frame_end, rtol=0, atol=1e-6) & (self.repeat == math.floor(self.repeat))
        return np.where(at_end, self.action_end, self.action_start + local)

    def sample(self, action_frames: np.ndarray) -> np.ndarray:
        """Values (N, C) at fractional action frames (N,), linear between grid frames."""
        return _interp_rows(self.frames, np.asarray(self.values, dtype=np.float64), action_frames)


@dataclass(frozen=True, eq=False)
class Timeline:
    """One value per channel on whole scene frames: frames (N,) float64, channels (C,),
    values (N, C) float64, NaN where nothing plays that channel."""

    frames: np.ndarray
    channels: tuple[Hashable, ...]
    values: np.ndarray

    def column(self, channel: Hashable) -> np.ndarray:
        return self.values[:, self.channels.index(channel)]


def strips_frame_range(strips: Sequence[ResultStrip]) -> np.ndarray:
    """Whole scene frames (N,) from the first strip's start to the last strip's end."""
    first = math.floor(min(s.frame_start for s in strips) + 1e-6)
    last = math.ceil(max(s.frame_end for s in strips) - 1e-6)
    return np.arange(first, last + 1, dtype=np.float64)


def flatten_strips(strips: Sequence[ResultStrip], frames: np.ndarray | None = None) -> Timeline:
    """NLA strips -> the `Timeline` Blender plays on ``frames`` (default: the whole
    frames the strips span), by the NLA rules in the module docstring."""
    if not strips:
        raise RetargetError("there are no strips to flatten")
    frames = strips_frame_range(strips) if frames is None else np.asarray(frames, dtype=np.float64)
    channels: list[Hashable] = []
    for strip in strips:
        channels += [c for c in strip.channels if c not in channels]
    column = {channel: k for k, channel in enumerate(channels)}
    values = np.full((len(frames), len(channels)), np.nan)
    for track in sorted({s.track for s in strips}):  # bottom to top: upper tracks overwrite
        track_strips = sorted((s for s in strips if s.track == track), key=lambda s: s.frame_start)
        playing = _playing_strip(track_strips, frames)
        for index, strip in enumerate(track_strips):
            rows = np.flatnonzero(playing == index)
            if strip.muted or not len(rows):
                continue
            cols = [column[c] for c in strip.channels]
            values[np.ix_(rows, cols)] = strip.sample(strip.action_frames(frames[rows]))
    return Timeline(frames=frames, channels=tuple(channels), values=values)


def _playing_strip(track_strips: Sequence[ResultStrip], frames: np.ndarray) -> np.ndarray:
    """Index (N,) of the strip a track plays (or holds) on each frame, -1 where none."""
    starts = np.array([s.frame_start for s in track_strips])
    ends = np.array([s.frame_end for s in track_strips])
    holds_after = np.array([s.extrapolation != "NOTHING" for s in track_strips])
    # First strip ending at or after f: it plays if it has started (the earlier one
    # where two touch); otherwise f lies before it, in the gap after the previous one.
    after = np.searchsorted(ends, frames, side="left")
    within = after < len(starts)
    within[within] = starts[after[within]] <= frames[within]
    previous = after - 1
    held = (previous >= 0) & holds_after[np.maximum(previous, 0)]
    playing = np.where(within, after, np.where(held, previous, -1))
    before_first = (after == 0) & ~within
    if track_strips[0].extrapolation == "HOLD":
        playing[before_first] = 0
    return playing


def _interp_rows(grid: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Rows of ``values`` (K, C) on ``grid`` (K,) linearly interpolated at ``at`` (N,),
    clamped to the grid's ends -> (N, C)."""
    grid = np.asarray(grid, dtype=np.float64)
    at = np.clip(np.asarray(at, dtype=np.float64), grid[0], grid[-1])
    lower = np.clip(np.searchsorted(grid, at, side="right") - 1, 0, len(grid) - 1)
    upper = np.minimum(lower + 1, len(grid) - 1)
    span = grid[upper] - grid[lower]
    weight = np.divide(at - grid[lower], span, out=np.zeros_like(at), where=span > 0)[:, None]
    return (1.0 - weight) * values[lower] + weight * values[upper]


# ----------------------------------------------------------------------------- rotations


def scale_rotations(quaternions: np.ndarray, strength: float) -> np.ndarray:
    """Quaternions (N, 4) (w, x, y, z) -> (N, 4) unit quaternions turning by ``strength``
    times the angle about the same axis (q^s, slerp from the identity); sign-continuous.
    Strength 1 returns the input unchanged."""
    quaternions = np.asarray(quaternions, dtype=np.float64)
    if strength == 1.0:
        return quaternions
    rotvecs = quaternion_to_axis_angle(_normalized(quaternions)) * strength
    return _continuous(matrix_to_quaternion(axis_angle_to_matrix(rotvecs)))


def retarget_rotations(quaternions: np.ndarray, source_rest: np.ndarray, target_rest: np.ndarray) -> np.ndarray:
    """Pose-bone quaternions (N, 4) of a source bone -> those giving a target bone the same
    rotation in its armature's space, whatever its rest orientation: q_t = T^T S q S^T T,
    with S and T the (3, 3) rest rotations of the source and target bones in their
    armatures' spaces (``matrix_local``). Identical rests return the input unchanged."""
    quaternions = np.asarray(quaternions, dtype=np.float64)
    source_rest, target_rest = np.asarray(source_rest, float), np.asarray(target_rest, float)
    if np.allclose(source_rest, target_rest, atol=1e-6):
        return quaternions
    local = axis_angle_to_matrix(quaternion_to_axis_angle(_normalized(quaternions)))
    to_target = target_rest.T @ source_rest
    return _continuous(matrix_to_quaternion(to_target @ local @ to_target.T))


def _normalized(quaternions: np.ndarray) -> np.ndarray:
    return quaternions / np.maximum(np.linalg.norm(quaternions, axis=-1, keepdims=True), 1e-12)


def _continuous(quaternions: np.ndarray) -> np.ndarray:
    """Flip signs so consecutive quaternions (N, 4) are in the same hemisphere: F-curve
    interpolation then never takes the long way round."""
    flips = np.cumsum(np.r_[0, np.einsum("ti,ti->t", quaternions[1:], quaternions[:-1]) < 0]) % 2
    return np.where(flips[:, None] == 1, -quaternions, quaternions)


# ----------------------------------------------------------------------------- keyframe reduction


def reduce_keys(frames: np.ndarray, values: np.ndarray, tolerance: float) -> np.ndarray:
    """Which keys to keep, per column: frames (N,) increasing, values (N, C) finite ->
    kept (N, C) bool such that linear interpolation between the kept keys of a column
    reproduces every value within ``tolerance`` (absolute); first and last kept."""
    values = np.asarray(values, dtype=np.float64)
    return _douglas_peucker(frames, values[:, :, None], tolerance,
                            lambda interpolated, exact: np.abs(interpolated - exact)[:, 0])


def reduce_rotation_keys(frames: np.ndarray, quaternions: np.ndarray, tolerance: float) -> np.ndarray:
    """Keys to keep for one bone: frames (N,), quaternions (N, 4) -> kept (N,) bool, shared by
    the four curves, such that the rotation Blender plays between kept keys (componentwise
    lerp, normalized) is within ``tolerance`` radians of every dropped key's rotation:

        angle(p, q) = 2 acos |<p/|p|, q/|q|>|
    """
    def angle(interpolated, exact):
        cosine = np.abs(np.einsum("nd,nd->n", _normalized(interpolated), _normalized(exact)))
        return 2.0 * np.arccos(np.clip(cosine, 0.0, 1.0))

    return _douglas_peucker(frames, np.asarray(quaternions, dtype=np.float64)[:, None, :], tolerance, angle)[:, 0]


def _douglas_peucker(frames: np.ndarray, values: np.ndarray, tolerance: float,
                     error: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Douglas-Peucker on G curves at once: values (N, G, D) -> kept (N, G).

    Every span between two kept keys whose worst error (``error(interpolated (n, D),
    exact (n, D)) -> (n,)``) exceeds ``tolerance`` keeps its worst key and is split
    there; spans within tolerance are done. All spans of one depth are handled in one
    vectorized pass, so the work is the total length of the spans still open."""
    frames = np.asarray(frames, dtype=np.float64)
    count, curves = values.shape[:2]
    kept = np.zeros((count, curves), dtype=bool)
    kept[[0, -1]] = True
    span_curve = np.arange(curves)
    span_start = np.zeros(curves, dtype=np.int64)
    span_end = np.full(curves, count - 1, dtype=np.int64)
    while True:
        lengths = span_end - span_start - 1  # keys strictly inside each span
        open_spans = lengths > 0
        span_curve, span_start, span_end, lengths = (a[open_spans] for a in (span_curve, span_start, span_end,
                                                                               lengths))
        if not len(lengths):
            return kept
        offsets = np.cumsum(lengths) - lengths
        run = np.repeat(np.arange(len(lengths)), lengths)
        point = span_start[run] + 1 + np.arange(lengths.sum()) - offsets[run]
        start, end, curve = span_start[run], span_end[run], span_curve[run]
        weight = ((frames[point] - frames[start]) / (frames[end] - frames[start]))[:, None]
        first, last = values[start, curve], values[end, curve]
        err = error(first + weight * (last - first), values[point, curve])
        worst = np.maximum.reduceat(err, offsets)
        hits = np.flatnonzero(err == worst[run])
        pivot = point[hits[np.r_[True, run[hits[1:]] != run[hits[:-1]]]]]  # the first worst key of each span
        split = worst > tolerance
        pivot, curve, start, end = pivot[split], span_curve[split], span_start[split], span_end[split]
        kept[pivot, curve] = True
        span_curve = np.r_[curve, curve]
        span_start, span_end = np.r_[start, pivot], np.r_[pivot, end]


# ----------------------------------------------------------------------------- bake plans


@dataclass(frozen=True, eq=False)
class CurveKeys:
    """Keys for one target channel: target and source names, frames (K,) float64 and values
    (K, D) float64 (D = 1 for a shape key, 4 for a bone's quaternion w, x, y, z)."""

    target: str
    source: str
    frames: np.ndarray
    values: np.ndarray


@dataclass(frozen=True, eq=False)
class TargetBake:
    """What to key on one target: its curves, how names matched, and key counts
    (``keys_sampled``: one per channel and frame; ``keys_kept``: after reduction)."""

    curves: tuple[CurveKeys, ...]
    match: NameMatch
    keys_sampled: int
    keys_kept: int


def bake_shape_keys(timeline: Timeline, target_keys: Sequence[str], config: BakeConfig,
                    ranges: Mapping[str, tuple[float, float]] | None = None) -> TargetBake:
    """Shape-key timeline (channels = shape-key names) -> keys for the target's shape keys
    ``target_keys``: mapped by name, scaled by region strength, clamped to the target
    key's (min, max) in ``ranges`` where given (Blender plays a shape key within its slider
    range, so the keys say what plays, for exporters too), reduced if asked."""
    match = match_names([str(c) for c in timeline.channels], target_keys, config.mapping)
    curves, sampled, kept_total = [], 0, 0
    if match.pairs:
        columns = [timeline.channels.index(source) for source, _ in match.pairs]
        strengths = np.array([config.strength(channel_region(source)) for source, _ in match.pairs])
        values = timeline.values[:, columns] * strengths
        limits = np.array([(ranges or {}).get(target, (-np.inf, np.inf)) for _, target in match.pairs]).reshape(-1, 2)
        values = np.clip(values, limits[:, 0], limits[:, 1])
        kept = _kept_keys(timeline.frames, values, config)
        for j, (source, target) in enumerate(match.pairs):
            rows = kept[:, j]
            curves.append(CurveKeys(target, source, timeline.frames[rows], values[rows, j][:, None]))
        sampled, kept_total = int(np.isfinite(values).sum()), int(kept.sum())
    return TargetBake(tuple(curves), match, sampled, kept_total)


def bake_bones(timeline: Timeline, target_bones: Sequence[str], config: BakeConfig,
               source_rest: Mapping[str, np.ndarray], target_rest: Mapping[str, np.ndarray]) -> TargetBake:
    """Bone timeline (channels = (bone, component) for the w, x, y, z of each bone's
    quaternion) -> quaternion keys for the target's bones ``target_bones``: mapped by
    name, turned into the target bone's rest frame (`retarget_rotations`; rests are
    (3, 3) armature-space rest rotations per bone name), angle scaled by region strength,
    reduced if asked."""
    bones = [c[0] for c in timeline.channels if isinstance(c, tuple) and c[1] == 0
             and all((c[0], i) in timeline.channels for i in range(4))]
    match = match_names(bones, target_bones, config.mapping)
    curves, sampled, kept_total = [], 0, 0
    for source, target in match.pairs:
        quaternions = np.stack([timeline.column((source, i)) for i in range(4)], axis=1)
        rows = np.flatnonzero(np.isfinite(quaternions).all(axis=1))
        frames, quaternions = timeline.frames[rows], quaternions[rows]
        if not len(rows):
            continue
        quaternions = scale_rotations(quaternions, config.strength(bone_region(source)))
        quaternions = retarget_rotations(quaternions, source_rest[source], target_rest[target])
        kept = (reduce_rotation_keys(frames, quaternions, config.rotation_tolerance) if config.reduce
                else np.ones(len(frames), dtype=bool))
        curves.append(CurveKeys(target, source, frames[kept], quaternions[kept]))
        sampled, kept_total = sampled + 4 * len(frames), kept_total + 4 * int(kept.sum())
    return TargetBake(tuple(curves), match, sampled, kept_total)


def _kept_keys(frames: np.ndarray, values: np.ndarray, config: BakeConfig) -> np.ndarray:
    """(N, C) bool: every finite value, or with ``config.reduce`` only those `reduce_keys`
    keeps. A channel with gaps (frames where nothing plays it) is reduced on its own."""
    finite = np.isfinite(values)
    if not config.reduce:
        return finite
    whole = finite.all(axis=0)
    kept = np.zeros_like(finite)
    if whole.any():
        kept[:, whole] = reduce_keys(frames, values[:, whole], config.tolerance)
    for j in np.flatnonzero(~whole & finite.any(axis=0)):
        rows = np.flatnonzero(finite[:, j])
        kept[rows, j] = reduce_keys(frames[rows], values[rows, j][:, None], config.tolerance)[:, 0]
    return kept
