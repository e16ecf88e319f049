"""The teacher's articulation against real faces (issue 17, part 2): how each calibrated
constant of `model.data.articulation` moves the agreement of the teacher's jawOpen with the
human's on the GRID clips, chosen on the calibration clips and reported on the held-out ones.

    .venv/bin/python benchmarks/teacher_calibration.py [--real-faces ../shared/real-faces] \
        [--out benchmarks/teacher_calibration.md]

Rows: the calibrated teacher, the teacher with one calibration undone at a time (its
constant set back to the value it had before), and all of them undone (the teacher the
default model was first trained on). Figures: mean Pearson r at lag 0 of the teacher's
jawOpen (transcript by pocketsphinx forced alignment, neutral controls, seed 0) against the
human's MediaPipe jawOpen (`model.evaluate.real_faces`), over `CALIBRATION_CLIPS` and over
the others.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.core.head_model import HeadModel  # noqa: E402
from model.core.paths import default_open_head_file  # noqa: E402
from model.data import articulation  # noqa: E402
from model.evaluate import real_faces  # noqa: E402

# constant -> its value before the calibration
UNCALIBRATED = {
    "ONSET_ANTICIPATION_S": articulation.ANTICIPATION_S,
    "CONSONANT_JAW_DOMINANCE_GAIN": 1.0,
    "VOWEL_JAW_EXPONENT": 1.0,
}


@contextmanager
def constants(**values):
    """Set articulation constants (and rebuild its phone table) for the block."""
    saved = {name: getattr(articulation, name) for name in values}
    try:
        for name, value in values.items():
            setattr(articulation, name, value)
        articulation._TABLE = {label: articulation.phone_targets(label) for label in articulation.PHONES}
        yield
    finally:
        for name, value in saved.items():
            setattr(articulation, name, value)
        articulation._TABLE = {label: articulation.phone_targets(label) for label in articulation.PHONES}


def teacher_agreement(clips, head, tracker) -> tuple[float, float]:
    """(mean r0 over the calibration clips, mean r0 over the held-out clips) of teacher jawOpen."""
    results = real_faces.evaluate_real_faces(clips, head, tracker, generate=None, teacher=True)
    r0 = {r.name: r.agreement["teacher jawOpen"].r0 for r in results}
    calibration = [v for k, v in r0.items() if k in real_faces.CALIBRATION_CLIPS]
    held_out = [v for k, v in r0.items() if k not in real_faces.CALIBRATION_CLIPS]
    return float(np.mean(calibration)), float(np.mean(held_out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real-faces")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "teacher_calibration.md"))
    args = parser.parse_args()
    clips = real_faces.grid_clips(args.real_faces)
    tracker = real_faces.default_tracker(args.real_faces)
    head = HeadModel.load(default_open_head_file())

    rows = [("calibrated teacher (model/data/articulation.py)", {})]
    rows += [(f"{name} back to {value:g}", {name: value}) for name, value in UNCALIBRATED.items()]
    rows.append(("all three back (the teacher before calibration)", dict(UNCALIBRATED)))
    lines = ["| teacher | calibration clips: mean r | held-out clips: mean r |", "|---|---:|---:|"]
    for label, values in rows:
        with constants(**values):
            calibration, held_out = teacher_agreement(clips, head, tracker)
        lines.append(f"| {label} | {calibration:.3f} | {held_out:.3f} |")
        print(lines[-1], flush=True)
    text = "\n".join([
        "# Teacher calibration against real faces", "",
        "Command: `.venv/bin/python benchmarks/teacher_calibration.py`", "",
        "Pearson r at lag 0 of the teacher's jawOpen (transcript by forced alignment, neutral controls) "
        "against the human's MediaPipe jawOpen on the GRID clips. Calibration clips: "
        + ", ".join(real_faces.CALIBRATION_CLIPS) + "; the constants were chosen on these alone "
        "(a grid over onset anticipation 0.25-0.5 s, consonant jaw dominance x0.5-x2, vowel jaw "
        "exponent 0.5-1, carry-over 30-80 ms, silence dominance, loudness weight), the held-out "
        "column is the report.", "", *lines, ""])
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
