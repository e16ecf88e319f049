"""Frozen encoders that condition the motion model: speech -> features per motion frame,
captions -> token states. Importing this package loads no weights; encoders load theirs
on first use and are shared per process through `speech_encoder` / `text_encoder`.

    from model.encoders import speech_encoder, text_encoder
    speech = speech_encoder("whisper-tiny.en").features(audio)   # (T, 384), T = frame_count(N)
    states, mask = text_encoder("minilm").encode(["a calm old man"])  # (1, L, 384), (1, L)

`encoder.stream(audio)` gives the same rows chunk by chunk (`FeatureStream`: generation
reads long audio this way). Row i of every speech encoder describes the 40 ms of audio centred on i / 25 s (see
`model.encoders.speech`).
"""
from .speech import (
    ALIGNMENT_VERSION,
    DEFAULT_SPEECH_ENCODER,
    FeatureStream,
    HFSpeechConfig,
    HFSpeechEncoder,
    LogMelConfig,
    LogMelEncoder,
    SpeechEncoder,
    WhisperConfig,
    WhisperEncoder,
    plan_chunks,
    speech_encoder,
    to_motion_frames,
)
from .text import (
    DEFAULT_TEXT_ENCODER,
    MAX_TOKENS,
    HFTextEncoder,
    MiniLMEncoder,
    T5Encoder,
    TextConfig,
    TextEncoder,
    text_encoder,
)

__all__ = [
    "ALIGNMENT_VERSION",
    "DEFAULT_SPEECH_ENCODER",
    "DEFAULT_TEXT_ENCODER",
    "FeatureStream",
    "MAX_TOKENS",
    "HFSpeechConfig",
    "HFSpeechEncoder",
    "HFTextEncoder",
    "LogMelConfig",
    "LogMelEncoder",
    "MiniLMEncoder",
    "SpeechEncoder",
    "T5Encoder",
    "TextConfig",
    "TextEncoder",
    "WhisperConfig",
    "WhisperEncoder",
    "plan_chunks",
    "speech_encoder",
    "text_encoder",
    "to_motion_frames",
]
