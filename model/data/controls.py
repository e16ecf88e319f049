"""The hidden control attributes of the data engine: what the teacher animator obeys and
what the captions describe in words. The model never sees these, only the captions.

Vocabulary (each attribute's levels, in increasing order where that makes sense):

=============== ================================================ ==========================
attribute       levels                                           what the teacher does
=============== ================================================ ==========================
speaker         `SPEAKERS` (persona nouns)                       nothing visible: who speaks
mouth           narrow, normal, wide                             lip/jaw amplitude gain
head            still, subtle, moderate, lively                  head-rotation amplitude
tempo           slow, normal, fast                               speaking rate, head tempo
tone            calm, neutral, serious, cheerful, energetic      mild brow/smile/blink bias
emotion         neutral, happy, sad, angry, surprised, fear,     the emotion layer
                disgust, contempt (the paper's eight)
intensity       slight, medium, strong                           the emotion layer's weight
=============== ================================================ ==========================
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import BadInput

SPEAKERS_MALE = ("man", "young man", "older man", "male teacher", "male presenter", "gentleman", "guy")
SPEAKERS_FEMALE = ("woman", "young woman", "older woman", "female teacher", "female presenter", "lady")
SPEAKERS_ANY = ("person", "speaker", "teacher", "news anchor", "narrator", "presenter", "character")
SPEAKERS = SPEAKERS_MALE + SPEAKERS_FEMALE + SPEAKERS_ANY

MOUTH_GAIN = {"narrow": 0.6, "normal": 1.0, "wide": 1.45}
HEAD_GAIN = {"still": 0.06, "subtle": 0.35, "moderate": 1.0, "lively": 2.0}
TEMPO_RATE = {"slow": 0.82, "normal": 1.0, "fast": 1.22}  # speaking-rate factor (>1 is faster)
TONES = ("calm", "neutral", "serious", "cheerful", "energetic")

EMOTIONS = ("neutral", "happy", "sad", "angry", "surprised", "fear", "disgust", "contempt")
INTENSITY_WEIGHT = {"slight": 0.35, "medium": 0.65, "strong": 1.0}


class ControlError(BadInput):
    """A control attribute outside its vocabulary."""


def _check(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ControlError(f"{name} '{value}' is not one of {', '.join(allowed)}")


@dataclass(frozen=True)
class StyleControls:
    speaker: str = "person"
    mouth: str = "normal"
    head: str = "moderate"
    tempo: str = "normal"
    tone: str = "neutral"

    def __post_init__(self) -> None:
        _check("speaker", self.speaker, SPEAKERS)
        _check("mouth", self.mouth, MOUTH_GAIN)
        _check("head", self.head, HEAD_GAIN)
        _check("tempo", self.tempo, TEMPO_RATE)
        _check("tone", self.tone, TONES)


@dataclass(frozen=True)
class EmotionControls:
    label: str = "neutral"
    intensity: str = "medium"

    def __post_init__(self) -> None:
        _check("emotion", self.label, EMOTIONS)
        _check("intensity", self.intensity, INTENSITY_WEIGHT)

    @property
    def weight(self) -> float:
        """0 for neutral, else the intensity's weight."""
        return 0.0 if self.label == "neutral" else INTENSITY_WEIGHT[self.intensity]


@dataclass(frozen=True)
class ControlSegment:
    """Controls in force from ``start`` seconds until the next segment (or the clip's end)."""

    start: float
    style: StyleControls
    emotion: EmotionControls


def controls_from_dict(entry: dict) -> ControlSegment:
    return ControlSegment(
        start=float(entry["start"]),
        style=StyleControls(**entry["style"]),
        emotion=EmotionControls(**entry["emotion"]),
    )
