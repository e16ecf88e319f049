"""The bridge from the open head's ARKit motion to a user's FLAME rig (back end: scipy).

`registration` (correspondence), `build` (the adapter), `command` (``python -m model
flame-adapter``); the per-frame mapping is torch- and scipy-free in `model.core.flame_adapter`.
"""
