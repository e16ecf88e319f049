"""Fuzz the worker's request parser: `GenerationRequest.from_json` on ``json.loads`` of the input.

JSON the json module refuses is skipped (the worker answers 400 before the parser runs);
anything from the parser but a `RequestError` is a crash.

    .venv/bin/python tests/fuzz/fuzz_request.py NEW_DIR tests/fuzz/corpus/request -max_total_time=60
"""
import json

from _harness import atheris, run

with atheris.instrument_imports(include=["model"]):
    from model.link.protocol import GenerationRequest, RequestError


def test_one_input(data: bytes) -> None:
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return
    try:
        GenerationRequest.from_json(body)
    except RequestError:
        pass


if __name__ == "__main__":
    run(test_one_input)
