"""CapTalk for Blender: speech-driven, caption-directed head animation.

The repository root is the extension's source root. Blender-side code lives in
`captalk_addon` (logic), `operators` and `panels` (UI); `model` is the back end and is
only imported here for its numpy-only parts (never torch).
"""
from . import captalk_addon, operators, panels

_modules = (captalk_addon, operators, panels)


def register() -> None:
    for module in _modules:
        module.register()


def unregister() -> None:
    for module in reversed(_modules):
        module.unregister()
