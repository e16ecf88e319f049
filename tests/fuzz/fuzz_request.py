"""Fuzz the worker's request parser: `model.link.protocol.request_from_json` on ``json.loads`` of the input.

JSON the json module refuses is skipped (the worker answers 400 before the parser runs);
anything from the parser but a `BadInput` (a refusal the worker answers with 400) is a crash.

    .venv/bin/python tests/fuzz/fuzz_request.py NEW_DIR tests/fuzz/corpus/request -max_total_time=60
"""
import json

from _harness import atheris, run

with atheris.instrument_imports(include=["model"]):
    from model.core.errors import BadInput
    from model.link.protocol import request_from_json


def test_one_input(data: bytes) -> None:
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return
    try:
        request_from_json(body)
    except BadInput:
        pass


if __name__ == "__main__":
    run(test_one_input)
