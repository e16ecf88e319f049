"""Bake CapTalk's NLA results into plain keys on any character, ready for export.

Reads the CapTalk rig's results (the tagged actions on its "CapTalk" NLA tracks, see
`captalk_addon.animation`) into numpy, lets `model.core.retarget` flatten, map, scale and
reduce them, and writes one new action per target data-block:
"<mesh> CapTalk bake" on the target mesh's shape keys and "<armature> CapTalk bake" on
the target armature (bone rotations, in each target bone's own rotation mode). They
play without the add-on and export with glTF/FBX/USD.

Where the bake goes, so an artist's work is never overwritten:
- the target has no active action: the bake becomes its active action;
- it has one (the artist's): the artist's action stays active and untouched, and the
  bake goes on an NLA track "CapTalk bake" below it (the artist's keys still win on the
  channels they animate). With ``replace_active_action`` the bake becomes the active
  action instead and the artist's action is stashed, untouched, on a muted NLA track
  "[Action Stash]", as Blender's Action editor does when you switch actions.
Bake actions are tagged (``PROP_BAKE``), so baking again removes the previous bake of
that data-block and nothing else. Everything is read and checked before the first
change, so a refused bake leaves the scene as it was.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import bpy
import numpy as np
from mathutils import Quaternion

from ..model.core.retarget import (BakeConfig, ResultStrip, TargetBake, bake_bones, bake_shape_keys, flatten_strips,
                              parse_mapping)
from ..model.core.rotations import quaternion_to_axis_angle
from .animation import (LINEAR_INTERPOLATION, action_fcurves, assign_action, captalk_strips, is_captalk_result,
                        new_keyed_action)
from .rig_builder import PROP_PART, find_rig
from ..model.core.errors import BadInput
from .compat import action_slot

PROP_BAKE = "captalk_bake"  # on bake actions: "shape_keys" or "bones"
BAKE_TRACK = "CapTalk bake"
STASH_TRACK = "[Action Stash]"  # Blender's own name for a stashed action's track
_SHAPE_PATH = re.compile(r'^key_blocks\["(.*)"\]\.value$')
_BONE_PATH = re.compile(r'^pose\.bones\["(.*)"\]\.rotation_quaternion$')


class BakeError(BadInput):
    """The bake cannot run (no results, a target without shape keys, nothing maps);
    the message says why and what to do. Nothing was changed."""


@dataclass(frozen=True, eq=False)
class BakeReport:
    """What a bake wrote: the new actions, where each went (one sentence each), the
    CapTalk channels and bones that found no target, mapping targets the character
    lacks, key counts (one per channel and frame, and written after reduction) and the
    results whose NLA settings the bake does not reproduce (``approximated``)."""

    actions: tuple
    placements: tuple[str, ...]
    unmapped: tuple[str, ...]
    missing_targets: tuple[str, ...]
    keys_sampled: int
    keys_written: int
    approximated: tuple[str, ...] = ()

    def summary(self) -> str:
        reduced = (f", {self.keys_written:,} of {self.keys_sampled:,} keys kept"
                   if self.keys_written != self.keys_sampled else f", {self.keys_written:,} keys")
        return "Baked " + "; ".join(self.placements) + reduced

    def warnings(self) -> list[str]:
        notes = []
        if self.unmapped:
            shown = ", ".join(self.unmapped[:8]) + (f" and {len(self.unmapped) - 8} more" if len(self.unmapped) > 8
                                                     else "")
            notes.append(f"Not baked, no matching shape key or bone on the target: {shown} "
                         "(add them to the name mapping)")
        if self.missing_targets:
            notes.append(f"The name mapping names what the target lacks: {', '.join(self.missing_targets[:8])}")
        if self.approximated:
            notes.append(f"Baked at full influence in Replace mode, playing forward: {', '.join(self.approximated)} "
                         "(their NLA blending, influence or reversal settings are not reproduced)")
        return notes


@dataclass(frozen=True, eq=False)
class _Plan:
    """A checked bake, computed but not written yet."""

    target_mesh: object
    target_armature: object
    shapes: TargetBake | None
    bones: TargetBake | None
    approximated: tuple[str, ...]


# ----------------------------------------------------------------------------- public API


def bake(source_mesh, source_armature, target_mesh, target_armature, config: BakeConfig,
         replace_active_action: bool = False) -> BakeReport:
    """Bake the CapTalk results of the rig (``source_mesh``, ``source_armature``) onto
    ``target_mesh``'s shape keys and ``target_armature``'s bones (either may be None, not
    both; they may be the rig itself). Raises `BakeError` with nothing changed when there
    is nothing to bake; otherwise replaces the targets' previous bake and reports."""
    plan = _plan(source_mesh, source_armature, target_mesh, target_armature, config)
    return _write(plan, replace_active_action)


def rigs_with_results(scene) -> list[tuple]:
    """(mesh, armature) of every CapTalk rig in ``scene`` that has generated results."""
    rigs = []
    for obj in scene.objects:
        if obj.get(PROP_PART) == "mesh":
            mesh, armature = find_rig(obj)
            if _has_results(mesh, armature):
                rigs.append((mesh, armature))
    return rigs


def find_source(context, name: str = "") -> tuple:
    """The CapTalk rig to bake from: the one ``name`` (its mesh or armature) belongs to;
    else the active object's rig if it has results; else the scene's only rig with results."""
    if name:
        mesh, armature = find_rig(_object(name))
        if mesh is None:
            raise BakeError(f"'{name}' is not part of a CapTalk rig")
        return mesh, armature
    mesh, armature = find_rig(context.active_object)
    if mesh is not None and _has_results(mesh, armature):
        return mesh, armature
    rigs = rigs_with_results(context.scene)
    if len(rigs) == 1:
        return rigs[0]
    if not rigs:
        raise BakeError("No CapTalk results in this scene to bake: generate animation first")
    raise BakeError(f"Several CapTalk rigs have results ({', '.join(m.name for m, _ in rigs)}): "
                    "select the one to bake from")


def choose_targets(context, source_mesh, source_armature, mesh_name: str = "", armature_name: str = "") -> tuple:
    """(mesh, armature) to bake onto: the objects named, where a name is given (an
    armature not named is the named mesh's own); else the active object's character when
    it is not a CapTalk rig (a mesh and its armature, or an armature and its first child
    mesh with shape keys); else the CapTalk rig itself."""
    mesh, armature = source_mesh, source_armature
    active = context.active_object
    if active is not None and PROP_PART not in active and active.type == "MESH":
        mesh, armature = active, _armature_of(active)
    elif active is not None and PROP_PART not in active and active.type == "ARMATURE":
        meshes = [c for c in active.children if c.type == "MESH" and c.data.shape_keys is not None]
        mesh, armature = (meshes[0] if meshes else None), active
    if mesh_name:
        mesh = _object(mesh_name)
        armature = _armature_of(mesh) if mesh.type == "MESH" else None
    if armature_name:
        armature = _object(armature_name)
    return mesh, armature


def mapping_from_text(text: str) -> dict[str, str]:
    """The name mapping from the operator's field: the name of a Text data-block holding
    JSON, or JSON itself, e.g. ``{"jawOpen": "Mouth_Open"}``; empty -> {}."""
    text = text.strip()
    if text in bpy.data.texts:
        return parse_mapping(bpy.data.texts[text].as_string())
    if text and not text.startswith("{"):
        raise BakeError(f"Name mapping: there is no text '{text}' in this file, and it is not JSON "
                        "like {\"jawOpen\": \"Mouth_Open\"}")
    return parse_mapping(text)


def remove_bake(id_block) -> None:
    """Remove the previous bake from ``id_block`` (as active action or NLA strip), the
    tracks it leaves empty and its actions once nothing else uses them; the rest stays."""
    data = id_block.animation_data if id_block else None
    if data is None:
        return
    old = set()
    if data.action is not None and PROP_BAKE in data.action:
        old.add(data.action)
        data.action = None
    for track in list(data.nla_tracks):
        ours = [s for s in track.strips if s.action is not None and PROP_BAKE in s.action]
        for strip in ours:
            old.add(strip.action)
            track.strips.remove(strip)
        if ours and not track.strips:
            data.nla_tracks.remove(track)
    for action in old:
        if action.users == 0:  # an artist may have reused it elsewhere: then it stays
            bpy.data.actions.remove(action)


# ----------------------------------------------------------------------------- reading and checking


def _plan(source_mesh, source_armature, target_mesh, target_armature, config: BakeConfig) -> _Plan:
    key = source_mesh.data.shape_keys if source_mesh is not None else None
    shape_strips, shape_notes = _read_results(key, _shape_channel)
    bone_strips, bone_notes = _read_results(source_armature, _bone_channel)
    if not shape_strips and not bone_strips:
        name = source_mesh.name if source_mesh is not None else "the rig"
        raise BakeError(f"'{name}' has no CapTalk results to bake: generate animation first")
    if target_mesh is None and target_armature is None:
        raise BakeError("Choose a target mesh (with shape keys) or armature to bake onto")
    if target_mesh is not None:
        if target_mesh.type != "MESH":
            raise BakeError(f"'{target_mesh.name}' is not a mesh")
        if not _target_key_names(target_mesh):
            raise BakeError(f"'{target_mesh.name}' has no shape keys to receive CapTalk's expressions: add "
                            "shape keys named as ARKit's (jawOpen, eyeBlinkLeft...) or give a name mapping")
    if target_armature is not None and target_armature.type != "ARMATURE":
        raise BakeError(f"'{target_armature.name}' is not an armature")

    shapes = bones = None
    if target_mesh is not None and shape_strips:
        blocks = target_mesh.data.shape_keys.key_blocks
        shapes = bake_shape_keys(flatten_strips(shape_strips), _target_key_names(target_mesh), config,
                                 {block.name: (block.slider_min, block.slider_max) for block in blocks})
    if target_armature is not None and bone_strips:
        timeline = flatten_strips(bone_strips)
        bones = bake_bones(timeline, [b.name for b in target_armature.pose.bones], config,
                           _bone_rests(source_armature), _bone_rests(target_armature))
    if not any(part is not None and part.curves for part in (shapes, bones)):
        unmapped = [name for part in (shapes, bones) if part is not None for name in part.match.unmapped]
        targets = " and ".join(f"'{t.name}'" for t in (target_mesh, target_armature) if t is not None)
        raise BakeError(f"Nothing on {targets} matches CapTalk's channels ({', '.join(unmapped[:6])}...): "
                        "name the shape keys and bones as CapTalk does (any case) or give a name mapping")
    return _Plan(target_mesh, target_armature, shapes, bones, tuple(shape_notes + bone_notes))


def _read_results(id_block, channel_of) -> tuple[list[ResultStrip], list[str]]:
    """CapTalk's NLA strips on ``id_block`` (unmuted tracks) with their actions sampled on
    whole action frames, and the names of those with settings `model.core.retarget` does not
    model (CapTalk never sets them; an artist may have). ``channel_of(fcurve)`` names a
    curve's channel, or None to skip it."""
    if not captalk_strips(id_block):
        return [], []
    strips, approximated = [], []
    for position, track in enumerate(id_block.animation_data.nla_tracks):
        if track.mute:
            continue
        for strip in track.strips:
            if not is_captalk_result(strip.action):
                continue
            curves = [(channel_of(fc), fc) for fc in action_fcurves(strip.action)]
            curves = [(channel, fc) for channel, fc in curves if channel is not None and len(fc.keyframe_points)]
            if not curves:
                continue
            if strip.blend_type != "REPLACE" or strip.use_reverse or strip.use_animated_influence \
                    or strip.blend_in > 0 or strip.blend_out > 0:
                approximated.append(f"'{strip.name}'")
            grid = np.arange(np.floor(strip.action_frame_start), np.ceil(strip.action_frame_end) + 1)
            strips.append(ResultStrip(
                track=position, frame_start=strip.frame_start, frame_end=strip.frame_end,
                action_start=strip.action_frame_start, action_end=strip.action_frame_end,
                channels=tuple(channel for channel, _ in curves), frames=grid,
                values=np.stack([_sample_fcurve(fc, grid) for _, fc in curves], axis=1),
                extrapolation=strip.extrapolation, scale=strip.scale, repeat=strip.repeat, muted=strip.mute))
    return strips, approximated


def _sample_fcurve(fcurve, frames: np.ndarray) -> np.ndarray:
    """An F-curve's values (N,) on ``frames`` (N,): read in bulk when it is plain LINEAR keys
    with constant extrapolation (CapTalk's own curves), else by Blender's evaluate."""
    points = fcurve.keyframe_points
    co = np.empty(2 * len(points), dtype=np.float32)
    points.foreach_get("co", co)
    interpolation = np.empty(len(points), dtype=np.int32)
    points.foreach_get("interpolation", interpolation)
    if (interpolation[:-1] == LINEAR_INTERPOLATION).all() and fcurve.extrapolation == "CONSTANT" \
            and not len(fcurve.modifiers):
        return np.interp(frames, co[0::2], co[1::2])
    return np.array([fcurve.evaluate(float(frame)) for frame in frames])


def _shape_channel(fcurve):
    match = _SHAPE_PATH.match(fcurve.data_path)
    return bpy.utils.unescape_identifier(match.group(1)) if match else None


def _bone_channel(fcurve):
    match = _BONE_PATH.match(fcurve.data_path)
    return (bpy.utils.unescape_identifier(match.group(1)), fcurve.array_index) if match else None


def _target_key_names(mesh_object) -> list[str]:
    """The mesh's shape keys that can receive values (all but the reference 'Basis')."""
    key = mesh_object.data.shape_keys
    if key is None:
        return []
    return [block.name for block in key.key_blocks if block != key.reference_key]


def _bone_rests(armature_object) -> dict[str, np.ndarray]:
    """Bone name -> (3, 3) rest rotation in armature space (``matrix_local``): the
    character's own axes, not the world's, so a character turned around in the scene
    still nods about its own ear-to-ear axis (both armatures in Blender's convention:
    Z up, the face looking along -Y)."""
    return {bone.name: np.array(bone.matrix_local.to_3x3().normalized()) for bone in armature_object.data.bones}


def _has_results(mesh, armature) -> bool:
    key = mesh.data.shape_keys if mesh is not None else None
    return bool(captalk_strips(key) or captalk_strips(armature))


def _object(name: str):
    if name not in bpy.data.objects:
        raise BakeError(f"There is no object named '{name}'")
    return bpy.data.objects[name]


def _armature_of(mesh_object):
    """The armature deforming ``mesh_object`` (its parent, else its first Armature modifier's)."""
    if mesh_object.parent is not None and mesh_object.parent.type == "ARMATURE":
        return mesh_object.parent
    return next((m.object for m in mesh_object.modifiers if m.type == "ARMATURE" and m.object is not None), None)


# ----------------------------------------------------------------------------- writing


def _write(plan: _Plan, replace_active_action: bool) -> BakeReport:
    actions, placements = [], []
    parts = [part for part in (plan.shapes, plan.bones) if part is not None]
    if plan.shapes is not None and plan.shapes.curves:
        key = plan.target_mesh.data.shape_keys
        curves = [(f'key_blocks["{bpy.utils.escape_identifier(c.target)}"].value', 0, "Shape keys", c.frames,
                   c.values[:, 0]) for c in plan.shapes.curves]
        action, where = _write_bake(key, "KEY", f"{plan.target_mesh.name} CapTalk bake", "shape_keys", curves,
                                    replace_active_action)
        actions.append(action)
        placements.append(f"{len(curves)} shape keys of '{plan.target_mesh.name}' into '{action.name}' ({where})")
    if plan.bones is not None and plan.bones.curves:
        armature = plan.target_armature
        curves = [curve for c in plan.bones.curves
                  for curve in _bone_curves(c.target, armature.pose.bones[c.target].rotation_mode, c.frames, c.values)]
        action, where = _write_bake(armature, "OBJECT", f"{armature.name} CapTalk bake", "bones", curves,
                                    replace_active_action)
        actions.append(action)
        placements.append(f"{len(plan.bones.curves)} bone(s) of '{armature.name}' into '{action.name}' ({where})")
    return BakeReport(
        actions=tuple(actions),
        placements=tuple(placements),
        unmapped=tuple(name for part in parts for name in part.match.unmapped),
        missing_targets=tuple(name for part in parts for name in part.match.missing_targets),
        keys_sampled=sum(part.keys_sampled for part in parts),
        keys_written=sum(part.keys_kept for part in parts),
        approximated=plan.approximated,
    )


def _write_bake(id_block, id_type: str, name: str, kind: str, curves: list, replace_active_action: bool):
    """Replace ``id_block``'s previous bake with a new tagged action; return (action, where it went)."""
    remove_bake(id_block)
    action, slot = new_keyed_action(id_block, id_type, name, curves)
    action[PROP_BAKE] = kind
    data = id_block.animation_data or id_block.animation_data_create()
    artist_action = data.action
    if artist_action is None:
        assign_action(id_block, action, slot)
        return action, "active action"
    if replace_active_action:
        _stash(data, artist_action)
        assign_action(id_block, action, slot)
        return action, f"active action; '{artist_action.name}' stashed on '{STASH_TRACK}'"
    track = data.nla_tracks.new()
    track.name = BAKE_TRACK
    strip = track.strips.new(name, round(min(frames[0] for _, _, _, frames, _ in curves)), action)
    strip.extrapolation = "HOLD"  # like an active action's constant extrapolation
    if slot is not None:
        strip.action_slot = slot
    return action, f"NLA track '{BAKE_TRACK}' under the active action '{artist_action.name}'"


def _stash(data, action) -> None:
    """Keep the artist's active ``action`` (and its slot) on a muted NLA track, untouched."""
    slot = action_slot(data)
    track = data.nla_tracks.new()
    track.name = STASH_TRACK
    strip = track.strips.new(action.name, round(action.frame_range[0]), action)
    if slot is not None:
        strip.action_slot = slot
    track.mute = True


def _bone_curves(bone: str, rotation_mode: str, frames: np.ndarray, quaternions: np.ndarray) -> list:
    """F-curves (path, index, group, frames, values) for a bone's rotation in its own
    rotation mode: quaternion, axis-angle or an Euler order (Euler angles kept continuous)."""
    base = f'pose.bones["{bpy.utils.escape_identifier(bone)}"]'
    if rotation_mode == "QUATERNION":
        path, columns = f"{base}.rotation_quaternion", quaternions
    elif rotation_mode == "AXIS_ANGLE":
        rotvecs = quaternion_to_axis_angle(quaternions)
        angles = np.linalg.norm(rotvecs, axis=1, keepdims=True)
        axes = np.where(angles > 1e-9, rotvecs / np.maximum(angles, 1e-9), [0.0, 1.0, 0.0])  # Blender's rest axis
        path, columns = f"{base}.rotation_axis_angle", np.hstack([angles, axes])
    else:
        eulers, previous = [], None
        for q in quaternions:
            rotation = Quaternion(q)
            euler = rotation.to_euler(rotation_mode) if previous is None else rotation.to_euler(rotation_mode,
                                                                                                  previous)
            eulers.append(tuple(euler))
            previous = euler
        path, columns = f"{base}.rotation_euler", np.array(eulers)
    return [(path, i, bone, frames, columns[:, i]) for i in range(columns.shape[1])]

