"""Inputs of the UI tier, made on the host with the back end's Python (numpy, soundfile):

- ``flame_2020.pkl``: a FLAME-2020-format file (a synthetic head, `tests.flame_fixtures`;
  FLAME itself may not be redistributed);
- ``long_speech.wav``: the speech sample repeated to 60 s, so a Generate runs long enough
  to be cancelled by a real ESC or click while it runs.

Usage: python tests/ui/make_inputs.py OUT_DIR   (from the repository root)
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.flame_fixtures import write_flame_2020_pickle  # noqa: E402

LONG_SECONDS = 60.0


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # FLAME-sized (5,023 vertices) so the import takes as long as a real one
    write_flame_2020_pickle(out / "flame_2020.pkl", num_vertices=5023, n_expressions=50)
    speech, rate = soundfile.read(ROOT / "samples" / "speech_sample.wav", dtype="float32")
    repeats = int(np.ceil(LONG_SECONDS * rate / len(speech)))
    soundfile.write(out / "long_speech.wav", np.tile(speech, repeats)[: int(LONG_SECONDS * rate)], rate)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
