"""`model.core.audio` against hostile files (issue 20 item 4): memory follows the 16 kHz
mono result, rates and lengths are checked from the header first, special files are
refused without being read, and times never overflow."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile
from scipy.signal import resample_poly

from model.core.audio import MAX_RATE, MIN_RATE, SAMPLE_RATE, AudioError, Resampler, crop_audio, load_audio

REPO_ROOT = Path(__file__).resolve().parents[1]


def wav_header(rate: int, channels: int, data_bytes: int, bits: int = 16) -> bytes:
    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", min(2**32 - 1, 36 + data_bytes)) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, bits)
            + b"data" + struct.pack("<I", min(2**32 - 1, data_bytes)))


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000, 383_999, MIN_RATE, MAX_RATE])
def test_streamed_resampling_equals_resample_poly_bit_for_bit(rate):
    signal = np.random.default_rng(rate).standard_normal(rate * 3 + 17).astype(np.float32)
    divisor = np.gcd(rate, SAMPLE_RATE)
    whole = resample_poly(signal, SAMPLE_RATE // divisor, rate // divisor).astype(np.float32)
    resampler, pieces, at = Resampler(rate), [], 0
    for size in [1, 999, 65536, 7, 300_000] * 10:  # pieces of every size, as a decoder gives them
        pieces += resampler.push(signal[at:at + size])
        at += size
    pieces += resampler.push(signal[at:]) + resampler.finish()
    np.testing.assert_array_equal(np.concatenate(pieces), whole)


def test_decoding_memory_follows_the_result_not_the_file(tmp_path):
    """10 min of 96 kHz 6-channel audio (a sparse 690 MB WAV): the whole file as float32
    frames would be 1.4 GB and the old decoder peaked near 3 GB; the 16 kHz mono result
    is 38 MB."""
    path = tmp_path / "wide.wav"
    frames = 10 * 60 * 96000
    with open(path, "wb") as handle:
        handle.write(wav_header(96000, 6, frames * 12))
        handle.truncate(44 + frames * 12)
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's (pytest's) peak
    child = ("import json, re, sys; sys.path.insert(0, sys.argv[1]); import numpy, scipy.signal, soundfile;"
             "from model.core.audio import load_audio;"
             "hwm = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1));"
             "base = hwm(); n = load_audio(sys.argv[2]).size;"
             "print(json.dumps({'samples': n, 'peak_mb': (hwm() - base) / 1024}))")
    out = subprocess.run([sys.executable, "-c", child, str(REPO_ROOT), str(path)], capture_output=True, text=True,
                         timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout)
    print(f"\n10 min 96 kHz 6 ch: {figures['peak_mb']:.0f} MB above the interpreter")
    assert figures["samples"] == 10 * 60 * SAMPLE_RATE
    assert figures["peak_mb"] < 200


@pytest.mark.parametrize("rate", [9_999_991, 2**31 - 1, MAX_RATE + 1, MIN_RATE - 1, 1])
def test_sample_rates_outside_the_range_are_refused_from_the_header(rate):
    data = wav_header(rate, 1, 2 * 48000) + np.zeros(48000, "<i2").tobytes()
    with pytest.raises(AudioError, match=f"its sample rate is {rate} Hz; CapTalk reads 4000 to 384000 Hz"):
        load_audio(data)


def test_a_header_longer_than_the_limit_is_refused_unread(tmp_path):
    path = tmp_path / "long.wav"
    seconds = 30 * 60 + 0.5
    with open(path, "wb") as handle:
        handle.write(wav_header(SAMPLE_RATE, 1, int(seconds * SAMPLE_RATE) * 2))
        handle.truncate(44 + int(seconds * SAMPLE_RATE) * 2)
    with pytest.raises(AudioError, match="30 min 0.5 s is longer than the limit of 30 min"):
        load_audio(path)


def test_special_files_are_refused_without_blocking_or_reading(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    outcome = {}

    def read() -> None:
        try:
            load_audio(fifo)
        except AudioError as exc:
            outcome["error"] = str(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=60)
    if reader.is_alive():  # unblock the reader so the test process can end
        with open(fifo, "wb"):
            pass
    assert "is a pipe (FIFO), not an audio file" in outcome.get("error", "blocked on the FIFO")
    for path, message in (("/dev/zero", "is a device"), (str(tmp_path), "is a folder"),
                          ("/proc/self/status", "the file is empty")):
        with pytest.raises(AudioError, match=message):
            load_audio(path)


def test_an_error_names_no_python_object():
    with pytest.raises(AudioError) as caught:
        load_audio(b"\x00" * 1000)
    assert "BytesIO" not in str(caught.value) and "0x" not in str(caught.value)
    assert str(caught.value).startswith("the audio bytes: not a readable audio file")


@pytest.mark.parametrize("start, end, message", [
    (1e308, None, "holds less than one motion frame"),
    (float("inf"), None, "start must be a number of seconds >= 0"),
    (float("nan"), None, "start must be a number of seconds >= 0"),
    (0.0, float("nan"), "end must be a number of seconds after its start"),
    (2.0, 1.0, "end must be a number of seconds after its start"),
])
def test_crop_times_are_compared_before_they_become_indices(start, end, message):
    with pytest.raises(AudioError, match=message):
        crop_audio(np.zeros(SAMPLE_RATE * 2, np.float32), start, end)


def test_a_crop_past_the_end_plays_to_the_end():
    samples = np.arange(SAMPLE_RATE * 2, dtype=np.float32)
    np.testing.assert_array_equal(crop_audio(samples, 1.0, 1e308), samples[SAMPLE_RATE:])
    np.testing.assert_array_equal(crop_audio(samples, 0.5, float("inf")), samples[SAMPLE_RATE // 2:])


def test_files_decode_as_before(tmp_path):
    """Block decoding gives the samples whole-file decoding gave (stereo mean, 44.1 kHz)."""
    speech, rate = soundfile.read(REPO_ROOT / "samples" / "speech_sample.wav", dtype="float32")
    wide = resample_poly(speech, 441, 160).astype(np.float32)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([wide, wide * 0.5], 1), 44100, subtype="FLOAT")
    whole = soundfile.read(path, dtype="float32", always_2d=True)[0].mean(axis=1)
    np.testing.assert_array_equal(load_audio(path), resample_poly(whole, 160, 441).astype(np.float32))
