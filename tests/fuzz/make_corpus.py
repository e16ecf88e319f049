"""Write the fuzzers' seed corpus (tests/fuzz/corpus/<target>/): small well-formed inputs
and the hostile inputs of the readers' tests and issue 20, each at most a few KB.

    .venv/bin/python tests/fuzz/make_corpus.py      # rewrites the seeds; found crashes stay
"""
from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE.parent)]

import hostile_files as hostile  # noqa: E402
from flame_fixtures import Py2Call  # noqa: E402


def unpickler_seeds() -> dict[str, bytes]:
    seeds = dict(hostile.plain_pickles())
    small = {"deep_list": lambda: hostile.deep_list(300), "deep_tuple_key": lambda: hostile.deep_tuple_key(300),
             "repeated_array_data": lambda: hostile.repeated_array_data(times=4, size=256)}
    for name, build in hostile.HOSTILE_PICKLES.items():
        seeds[name] = small.get(name, build)()
    evil = Py2Call("numpy", "ndarray", ((1,), "O", hostile.binbytes(b"\x41" * 8)))
    seeds["object_buffer_csc"] = hostile.py2_pickle({"J_regressor": hostile.csc(
        {"_shape": (5, 8), "data": evil, "indices": np.zeros(1, np.int32), "indptr": np.zeros(9, np.int32)})})
    indptr = np.zeros(9, np.int64)
    indptr[1:] = 2**40
    seeds["indptr_bomb_csc"] = hostile.py2_pickle({"J_regressor": hostile.csc(
        {"_shape": (5, 8), "data": np.ones(1), "indices": np.zeros(1, np.int32), "indptr": indptr})})
    return seeds


def _wav(rate: int, samples: np.ndarray, subtype: str = "PCM_16", file_format: str = "WAV") -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, subtype=subtype, format=file_format)
    return buffer.getvalue()


def audio_seeds() -> dict[str, bytes]:
    tone = lambda rate, seconds, channels=1: np.sin(np.arange(int(rate * seconds))[:, None] * 0.05
                                                    * np.arange(1, channels + 1)).astype(np.float32) * 0.5
    seeds = {
        "pcm16_16k_mono": _wav(16000, tone(16000, 0.05)),
        "pcm8_8k": _wav(8000, tone(8000, 0.05), "PCM_U8"),
        "pcm24_48k_stereo": _wav(48000, tone(48000, 0.02, 2), "PCM_24"),
        "float_44k": _wav(44100, tone(44100, 0.02), "FLOAT"),
        "flac_22k": _wav(22050, tone(22050, 0.05), "PCM_16", "FLAC"),
        "ogg_16k": _wav(16000, tone(16000, 0.1), "VORBIS", "OGG"),
        "zero_samples": _wav(16000, np.zeros((0, 1), np.float32)),
    }
    header = bytearray(seeds["pcm16_16k_mono"])
    header[40:44] = (2**31 - 2).to_bytes(4, "little")  # data chunk claiming 2 GB
    seeds["wav_huge_declared_length"] = bytes(header)
    return seeds


def request_seeds() -> dict[str, bytes]:
    wav = base64.b64encode(audio_seeds()["pcm16_16k_mono"]).decode()
    good = {"audio_bytes": wav, "audio_start": 0.0, "audio_end": 0.04,
            "schedule": [{"start": 0, "style": "A calm teacher", "emotion": "happy"},
                         {"start": 0.02, "style": "", "emotion": "sad"}],
            "options": {"seed": 3, "takes": 2, "temperature": 1.0},
            "channels": ["jawOpen", "head.rx"], "head_model": "captalk-open-head-v1", "client": "fuzz"}
    seeds = {
        "good_bytes": good,
        "good_path": {"audio_path": "/tmp/speech.wav", "schedule": [{"start": 0, "style": "", "emotion": ""}]},
        "seed_2_63": {**good, "options": {"seed": 2**63}},
        "lone_surrogate": '{"audio_path": "/a.wav", "schedule": [{"start": 0, "style": "\\ud800"}]}',
        "start_1e308": {**good, "audio_start": 1e308},
        "start_infinity": '{"audio_path": "/a.wav", "audio_start": Infinity}',
        "end_nan": '{"audio_path": "/a.wav", "audio_end": NaN}',
        "start_huge_int": '{"audio_path": "/a.wav", "audio_start": 1' + "0" * 400 + "}",
        "nested": '{"audio_path": "/a.wav", "options": ' + "[" * 200 + "]" * 200 + "}",
        "list_body": [],
        "bad_base64": {"audio_bytes": "@@@"},
        "takes_100": {**good, "options": {"takes": 100}},
    }
    return {name: (value if isinstance(value, str) else json.dumps(value)).encode() for name, value in seeds.items()}


def main() -> None:
    for target, seeds in (("unpickler", unpickler_seeds()), ("audio", audio_seeds()), ("request", request_seeds())):
        folder = HERE / "corpus" / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (folder / name).write_bytes(data)
        print(f"{target}: {len(seeds)} seeds, largest {max(map(len, seeds.values()))} bytes")


if __name__ == "__main__":
    main()
