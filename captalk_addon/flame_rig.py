"""A FLAME rig driven by the bundled model: its adapter, built in the back end from the user's file.

The bundled model speaks the open head's channels; `python -m model flame-adapter` (it
needs scipy, so it runs in the back-end process) registers the open head onto the user's
FLAME template and writes an adapter into the data folder, which the back end then uses
to map every generation onto the rig's own channels (`model.core.flame_adapter`). The rig
records the outcome in ``captalk_drive_status``, so Generate can say why a rig that
cannot be driven is refused.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..model.core.flame_adapter import FlameAdapter, adapter_path
from ..model.core.head_model import HeadModel
from .backend_process import BackendCommand, BackendError

PROP_DRIVE_STATUS = "captalk_drive_status"


def attach_adapter(mesh, head_file: Path, python: str, arkit_shapes: bool = False) -> tuple[bool, list[str]]:
    """Build the adapter of the rig whose ``mesh`` came from ``head_file`` (a few seconds for
    a FLAME-sized head, waited for here) and record the outcome on the mesh. Returns
    (whether the bundled model drives the rig, lines to report). ``arkit_shapes``: also add
    the transferred ARKit shapes as named shape keys."""
    try:
        output = BackendCommand(["flame-adapter", str(head_file)], python).finish()
    except BackendError as exc:
        mesh[PROP_DRIVE_STATUS] = f"cannot be driven by the bundled model: {exc}"
        return False, [mesh[PROP_DRIVE_STATUS]]
    mesh[PROP_DRIVE_STATUS] = "driven by the bundled model through its FLAME adapter"
    if arkit_shapes:
        add_arkit_shape_keys(mesh, HeadModel.load(head_file).model_id)
    return True, output.strip().splitlines()[-3:]


def add_arkit_shape_keys(mesh, model_id: str) -> None:
    """The adapter's transferred ARKit shapes as shape keys named by channel (values 0)."""
    adapter = FlameAdapter.load(adapter_path(model_id))
    if adapter.shapes is None:
        return
    basis = np.empty(3 * len(mesh.data.vertices), dtype=np.float32)
    mesh.data.shape_keys.key_blocks[0].data.foreach_get("co", basis)
    for name, shape in zip(adapter.shape_names, adapter.shapes):
        key = mesh.data.shape_keys.key_blocks.get(name) or mesh.shape_key_add(name=name, from_mix=False)
        key.data.foreach_set("co", basis + shape.astype(np.float32).ravel())
