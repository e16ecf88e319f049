"""Evaluation of a trained checkpoint, the way the paper does it (issue 5).

`python -m model evaluate` regenerates the report (markdown plus PNG plots). One module
per part of the report:

- `conditions`: LVE, MHD, FDD, LODD, HPDD on the test split under caption conditions;
- `controllability`: captions in phrasings the caption generator never produces;
- `real_speech`: mouth opening on real recordings against the teacher on forced alignment;
- `lip_events`: closures, open vowels and rest in pauses on the alignment of real speech;
- `real_faces`: jawOpen of tracked real talking faces (GRID, MediaPipe) against each system;
- `dynamic`: a caption change mid-sentence, time to take effect and the jump at the switch;
- `speed`: real-time factor and where the time goes;
- `report`: runs them all and writes the report.
"""
from pathlib import Path

from ..core.errors import BadInput


class EvaluationError(BadInput):
    """The checkpoint or dataset cannot be evaluated as asked; the message says why."""


def save_figure(figure, path) -> Path:
    """Lay out a matplotlib ``figure``, write it to ``path`` (PNG, 120 dpi; folders made) and
    close it (the report makes many: open figures would pile up). Returns the path."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
