"""Stage 2: the speech- and caption-conditioned autoregressive model over codec codes."""
