"""Add-on preferences: where the back end lives and what it may use."""
from __future__ import annotations

import bpy

# The extension's top-level package (``bl_ext.<repo>.captalk`` when installed,
# ``captalk`` when a batch script registers it from a source checkout).
ADDON_PACKAGE = __package__.rpartition(".")[0]


class CAPTALK_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_PACKAGE

    backend_python: bpy.props.StringProperty(
        name="Back-end Python",
        description="Python interpreter with torch and the CapTalk back end (set-up writes a default)",
        subtype="FILE_PATH",
    )
    checkpoint_dir: bpy.props.StringProperty(
        name="Checkpoint folder",
        description="Folder of a CapTalk model checkpoint; empty uses the bundled default",
        subtype="DIR_PATH",
    )
    device: bpy.props.EnumProperty(
        name="Device",
        items=(
            ("AUTO", "Auto", "CUDA when available, else CPU"),
            ("CPU", "CPU", "Always run on the CPU"),
            ("CUDA", "CUDA", "Run on an NVIDIA GPU"),
        ),
        default="AUTO",
    )

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "backend_python")
        layout.prop(self, "checkpoint_dir")
        layout.prop(self, "device")


def get_preferences(context=None) -> CAPTALK_AddonPreferences | None:
    """The add-on's preferences, or None when it runs unregistered in preferences (batch)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon else None


classes = (CAPTALK_AddonPreferences,)
