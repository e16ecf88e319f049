"""Write generated motion into Blender as CapTalk's own actions on NLA strips.

For one sound strip and one rig, CapTalk writes two NEW actions named after the strip:
"CapTalk <strip> shape keys" (one F-curve per expression channel on
``key_blocks["<channel>"].value``, animated on the mesh's shape-key data-block) and
"CapTalk <strip> bones" (the four ``rotation_quaternion`` F-curves of each rotated bone,
e.g. the open head's ``head``). Each is placed as an NLA strip at the sound strip's start
on an NLA track "CapTalk" (results of several sound strips share it in time order; one
that overlaps another goes on a new track), so an artist's active action, which plays on
top, and their NLA tracks are never changed. Actions are tagged (``PROP_STRIP``: the
sound strip's name), so generating the same strip again removes CapTalk's previous result
for that strip and nothing else.

Keys are written in bulk (``keyframe_points.add`` + ``foreach_set``), with LINEAR
interpolation like the sampling in `model.core.timeline`. Keys sit on scene frames and the NLA
strip maps action frames 1:1 onto the scene. Blender 4.4+ gets slotted actions (one slot
named after the animated data-block); 4.2 gets classic actions. The same bulk writer
(`new_keyed_action`) serves the bake (`captalk_addon.bake`).
"""
from __future__ import annotations

import bpy
import numpy as np

from ..model.core.timeline import RigAnimation, SceneRate, rig_animation
from .compat import SLOTTED_ACTIONS
from ..model.core.errors import BadInput

PROP_STRIP = "captalk_strip"  # on CapTalk's actions: the sound strip they were generated for
PROP_TARGET = "captalk_target"  # "shape_keys" or "bones"
TRACK_NAME = "CapTalk"
_LINEAR = bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value
LINEAR_INTERPOLATION = _LINEAR  # Keyframe.interpolation's value for LINEAR, as foreach_get/set read it


class AnimationError(BadInput):
    """The motion does not fit the rig; nothing was written."""


def animate_rig(scene, mesh_object, armature_object, motion: np.ndarray, channels, strip_name: str,
                frame_start: float) -> list:
    """Motion (T, C) at 25 fps for the sound strip ``strip_name`` starting at scene frame
    ``frame_start`` -> CapTalk's actions on the rig, keyed on the scene's frames (at its
    fps / fps_base, which is never changed). Returns the new actions."""
    rate = SceneRate.from_blender(scene.render.fps, scene.render.fps_base)
    bones = armature_object.data.bones if armature_object else ()
    rest = {bone.name: np.array(bone.matrix_local)[:3, :3] for bone in bones}
    animation = rig_animation(motion, channels, rest, frame_start, rate)
    return write_animation(mesh_object, armature_object, animation, strip_name)


def write_animation(mesh_object, armature_object, animation: RigAnimation, strip_name: str) -> list:
    """Replace CapTalk's result for ``strip_name`` on this rig with ``animation``."""
    key = mesh_object.data.shape_keys
    missing = [n for n in animation.shape_keys if key is None or n not in key.key_blocks]
    if missing:  # checked before anything is touched
        raise AnimationError(f"'{mesh_object.name}' has no shape key(s) {', '.join(missing[:5])}: "
                             "the motion is for another head model")
    if animation.bones and armature_object is None:
        raise AnimationError(f"'{mesh_object.name}' has no armature for the bones {', '.join(animation.bones)}")

    actions = []
    remove_result(key, strip_name)
    curves = [(f'key_blocks["{name}"].value', 0, "Shape keys", animation.shape_values[:, k])
              for k, name in enumerate(animation.shape_keys)]
    actions.append(_write_action(key, "KEY", f"CapTalk {strip_name} shape keys", strip_name, "shape_keys",
                                 animation.frames, curves))
    if animation.bones:
        remove_result(armature_object, strip_name)
        curves = [(f'pose.bones["{bone}"].rotation_quaternion', i, bone, animation.bone_quaternions[j, :, i])
                  for j, bone in enumerate(animation.bones) for i in range(4)]
        for bone in animation.bones:  # the rig's bones are quaternion-driven; make sure
            armature_object.pose.bones[bone].rotation_mode = "QUATERNION"
        actions.append(_write_action(armature_object, "OBJECT", f"CapTalk {strip_name} bones", strip_name,
                                     "bones", animation.frames, curves))
    return actions


def action_fcurves(action) -> list:
    """Every F-curve of ``action``, slotted (4.4+: all layers, strips and slots) or classic."""
    if not SLOTTED_ACTIONS:
        return list(action.fcurves)
    return [fcurve for layer in action.layers for strip in layer.strips for bag in strip.channelbags
            for fcurve in bag.fcurves]


def is_captalk_result(action) -> bool:
    """Whether ``action`` is one of CapTalk's generated results (not an artist's, not a bake)."""
    return action is not None and PROP_STRIP in action


def captalk_strips(id_block, strip_name: str | None = None) -> list:
    """NLA strips on ``id_block`` holding CapTalk's actions (for ``strip_name``, if given)."""
    data = id_block.animation_data if id_block else None
    if data is None:
        return []
    return [s for track in data.nla_tracks for s in track.strips
            if is_captalk_result(s.action) and (strip_name is None or s.action[PROP_STRIP] == strip_name)]


def new_keyed_action(id_block, id_type: str, name: str, curves) -> tuple:
    """A new action for ``id_block`` (of ``id_type``: "KEY", "OBJECT"), keyed in bulk: one
    LINEAR F-curve per (data path, index, group name, frames (K,), values (K,)), each
    curve with its own frames. Slotted on 4.4+ (one slot named after ``id_block``),
    classic on 4.2. Returns (action, slot or None); nothing is assigned or placed."""
    action = bpy.data.actions.new(name)
    if SLOTTED_ACTIONS:
        slot = action.slots.new(id_type=id_type, name=id_block.name)
        channelbag = action.layers.new("CapTalk").strips.new(type="KEYFRAME").channelbag(slot, ensure=True)
        groups = {}
        for path, index, group, frames, values in curves:
            fcurve = channelbag.fcurves.new(path, index=index)
            if group not in groups:
                groups[group] = channelbag.groups.new(group)
            fcurve.group = groups[group]
            _key(fcurve, frames, values)
        return action, slot
    action.id_root = id_type
    for path, index, group, frames, values in curves:
        _key(action.fcurves.new(path, index=index, action_group=group), frames, values)
    return action, None


def assign_action(id_block, action, slot) -> None:
    """Make ``action`` (with ``slot`` on 4.4+) the active action of ``id_block``."""
    data = id_block.animation_data or id_block.animation_data_create()
    data.action = action
    if slot is not None:
        data.action_slot = slot  # set explicitly: not picked for a shape-key Key


def remove_result(id_block, strip_name: str) -> None:
    """Remove CapTalk's NLA strips for ``strip_name`` from ``id_block``, the tracks they
    leave empty and their actions once nothing else uses them; the rest stays."""
    if id_block is None or id_block.animation_data is None:
        return
    old_actions = set()
    for track in list(id_block.animation_data.nla_tracks):
        ours = [s for s in track.strips if s.action is not None and s.action.get(PROP_STRIP) == strip_name]
        for nla_strip in ours:
            old_actions.add(nla_strip.action)
            track.strips.remove(nla_strip)
        if ours and not track.strips:
            id_block.animation_data.nla_tracks.remove(track)
    if old_actions:
        _set_extrapolation(id_block.animation_data)
    for action in old_actions:
        if action.users == 0:  # an artist may have reused it elsewhere: then it stays
            bpy.data.actions.remove(action)


def _write_action(id_block, id_type: str, name: str, strip_name: str, target: str, frames, curves):
    """A new tagged action with one bulk-keyed F-curve per (path, index, group, values),
    placed as an NLA strip at frames[0]."""
    action, slot = new_keyed_action(id_block, id_type, name,
                                    [(path, index, group, frames, values) for path, index, group, values in curves])
    action[PROP_STRIP] = strip_name
    action[PROP_TARGET] = target
    _place(id_block, action, slot, name, int(frames[0]))
    return action


def _place(id_block, action, slot, name: str, frame: int) -> None:
    """Put ``action`` as an NLA strip at ``frame`` on a CapTalk track with room for it
    (one track holds the results of several sound strips in time order), else a new one."""
    data = id_block.animation_data or id_block.animation_data_create()
    for track in data.nla_tracks:
        if _is_ours(track):
            try:
                nla_strip = track.strips.new(name, frame, action)
                break
            except RuntimeError:  # overlaps a result already there
                continue
    else:
        track = data.nla_tracks.new()
        track.name = TRACK_NAME
        nla_strip = track.strips.new(name, frame, action)
    if slot is not None:
        nla_strip.action_slot = slot  # set explicitly: not every version picks it for every ID type
    _set_extrapolation(data)


def _is_ours(track) -> bool:
    """A track holding only CapTalk's results (its name is only a label: Blender may number it)."""
    return len(track.strips) > 0 and all(s.action is not None and PROP_STRIP in s.action for s in track.strips)


def _set_extrapolation(animation_data) -> None:
    """On the lowest CapTalk track, the first result holds its first pose before it and each
    holds its last pose until the next: where no strip plays, Blender would reset the
    channels to their defaults (1.0 for a shape key's value in Blender 5.0). Tracks above
    it (results that overlap others) play only where their strips are, so they never hide
    the results below them."""
    ours = [track for track in animation_data.nla_tracks if _is_ours(track)]
    for level, track in enumerate(ours):
        for index, nla_strip in enumerate(track.strips):
            nla_strip.extrapolation = "NOTHING" if level else ("HOLD" if index == 0 else "HOLD_FORWARD")


def _key(fcurve, frames: np.ndarray, values: np.ndarray) -> None:
    """Bulk keys: (N,) frames and values -> N LINEAR keyframes."""
    points = fcurve.keyframe_points
    points.add(len(frames))
    points.foreach_set("co", np.column_stack([frames, values]).astype(np.float32).ravel())
    points.foreach_set("interpolation", np.full(len(frames), _LINEAR, dtype=np.int32))
    fcurve.update()
