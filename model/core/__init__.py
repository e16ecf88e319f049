"""The pure core: numpy and the standard library only, never torch, never Blender.

Everything the Blender side imports from the back end lives here (and in `model.link`):
the generation contract and its errors, caption schedules, timeline planning, motion
files, rig layout and rotations, head models and the FLAME reader, retargeting for
Bake, audio decoding. `tests/test_core_imports.py` imports every module here with torch
made unimportable and no bpy, so the rule is checked, not only written down.
"""
