"""Fuzz the audio decoder: `model.core.audio.load_audio` on the input bytes, at most 2 s.

Anything but samples or an `AudioError` is a crash (an escaping exception, a segfault in
libsndfile, a hang or memory past -rss_limit_mb).

    .venv/bin/python tests/fuzz/fuzz_audio.py NEW_DIR tests/fuzz/corpus/audio -max_total_time=60
"""
from _harness import atheris, run

with atheris.instrument_imports(include=["model"]):
    from model.core.audio import AudioError, load_audio

MAX_SECONDS = 2.0


def test_one_input(data: bytes) -> None:
    try:
        load_audio(data, max_seconds=MAX_SECONDS)
    except AudioError:
        pass


if __name__ == "__main__":
    run(test_one_input)
