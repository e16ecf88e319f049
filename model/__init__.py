"""CapTalk's back end: head models, data, the motion model and its server.

Never imports Blender. Modules that need torch import it themselves, so that the
Blender side can use the numpy-only parts (the head-model format, rig maths).
"""
