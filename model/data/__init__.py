"""The training-data engine: control attributes, captions, the teacher animator, the
dataset format and the synthesis job (``python -m model data ...``)."""
