"""bake operators (being written)."""
classes = ()
