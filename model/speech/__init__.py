"""Speech for the data engine: voices with phoneme timings, forced alignment, sentences."""
