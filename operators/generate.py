"""generate operators (being written)."""
classes = ()
