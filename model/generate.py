"""Generation: audio + caption schedule -> motion, with a trained checkpoint.

    generator = Generator.load("checkpoints/default", device="auto")
    takes = generator.generate("speech.wav", parse_schedule(None, "a calm old man", "happy"),
                               GenerationOptions(seed=1))
    takes[0].motion  # (T, C) float32 in real units, T = model.core.audio.frame_count(samples), 25 fps

(Requests from the add-on, the worker, the CLI and the batch go through
`model.run.run_request`, which decodes and crops their audio and calls `generate`.)

Windows. Speech features stream (`model.encoders.speech.FeatureStream`): each encoder
chunk (Whisper: 30 s) is encoded when the first window that needs its rows comes, so the
first window follows one encoder call, a cancel is seen before every chunk as well as
every window, and memory does not grow with the clip's length; the rows are
bit-identical to the whole clip's `features`. The clip is cut into
windows of W frames; each window's codes are predicted scale by scale (CFG batched) and
decoded by the codec with the previous W generated frames as its prefix, so the motion
runs on continuously across window borders. The last window runs past the audio (speech
marked invalid there) and is cropped.

Caption changes re-window. A segment taking effect at frame c (`model.core.schedule`) ends the
window in progress at c (its frames from c on are discarded) and starts a new window at
c, whose prefix is the W frames generated before c. So the frames before c come from
windows that never saw the new captions (bit-identical to a run without the change), the
new captions act from frame c itself, and the codec's prefix keeps the motion continuous
through c. Windows therefore never span a change and always carry a single caption
segment; the AR model's coverage mixing (`model.ar.attention`) is used in training only.
A change before frame W has fewer than W frames before it: the prefix is left-padded by
repeating the first frame (a still start). The new window is cross-faded in over the cut
window's continuation under the old captions (`crossfade`, `CAPTION_CROSSFADE_FRAMES` =
0.6 s): a change then eases in as the teacher's own control cross-fades do, instead of
snapping to the new expression (and an emotion's head posture) within a few frames; the
border blend is not needed there (the fade starts on the old motion). When the cut
window has fewer frames than that past the change (a change on or near a window border),
one more window is made at the change under the old captions, for the fade only.

Border blending (``GenerationOptions.border_blend``, frames). The codec decodes each
window with the frames before it as context, which a trained codec continues smoothly;
what is left of a jump (an imperfect model, a sampled code far from the prefix) is faded
out over the first frames of the new window, as inertialization does in game animation:
the offset o = (p_-1 + v_p) - x_0 between where the motion was heading (last frame p_-1
plus its last step v_p) and where the new window starts (x_0) is added with a
raised-cosine weight from 1 at the border to 0 after ``border_blend`` frames (default
8 = 0.32 s), so the step across the border is the step before it. Only the new window's
frames change, so the guarantees above hold; 0 turns it off. ``meta["border_offsets"]``
records max |o| per border in data standard deviations: large values flag a checkpoint
whose decoder does not continue its prefix.

Smoothing (``GenerationOptions.smoothing``, `model.smoothing`): Savitzky-Golay, as ARTalk.
It runs per caption section (between changes), so it never carries a later caption back
in time (a section's first frames look back at the raw frames before the change, which the
cross-fade continues, rather than taking the edge rule, whose fitted polynomial overshoots
there): the last frames before a change are smoothed with the cut window's continuation
under the old captions (what a run without the change shows there), so they too stay
identical, unless the change falls within 8 frames of the end of the window in progress:
then the look-ahead is the window made at the change for the cross-fade (identical when
the change is on the border itself), or, with the cross-fade off, the edge rule for the
last 4 frames (turn smoothing off for exact identity everywhere). It streams with a delay
of 4 frames.

Streaming: `Generator.iter_windows` yields each window's final frames as soon as they are
made (`MotionChunk`); `Generator.generate` is that stream concatenated, so the two give
identical motion. Takes: take i samples with seed ``seed + i`` (`model.ar.sampling`); all
takes run in the same batch.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .ar.model import ARConfig, CapTalkAR
from .ar.sampling import generators, guidance_terms, guide, sample_bits
from .core.audio import MOTION_FPS, SAMPLE_RATE, frame_count, load_audio, to_mono_16k
from .checkpoint import load_module
from .core.checkpoint_manifest import CheckpointError, check_fits, checkpoint_folder, read_manifest
from .codec.codec import CodecConfig, MotionCodec
from .codec.normalise import ChannelStats
from .core.motion_file import MotionClip
from .core.schedule import Schedule
from .smoothing import StreamingSmoother, smoothing_windows
from .core.contract import GenerationError, GenerationOptions
from .core.errors import Cancelled

# 0.6 s: the teacher fades its controls over 0.4 s, but a new window moves to its captions'
# pose within its first frames, and an emotion's head posture then turned the head faster
# than it ever moves in speech (the report's caption-switch "jump"); over 0.6 s it does not
CAPTION_CROSSFADE_FRAMES = 15
ENCODER_SHARE = 0.05  # progress given to the speech and text encoders; windows share the rest

Progress = Callable[[float, str], None]


class GenerationCancelled(Cancelled):
    """Raised between windows or speech-encoder chunks when the ``cancel`` event is set."""


@dataclass(frozen=True)
class MotionChunk:
    start: int  # clip frame of the first frame in ``motion``
    motion: np.ndarray  # (takes, n, C) float32, real units, final (smoothed if asked)
    window: int  # index of the window just finished
    windows: int  # windows in the clip


# ----------------------------------------------------------------------------- windows


def blend_border(previous: torch.Tensor, window: torch.Tensor, frames: int) -> tuple[torch.Tensor, float]:
    """Fade a jump at a window border out over ``frames`` (module docstring, border blending).

    previous: (takes, P, C) frames before the border (P >= 1); window: (takes, n, C) the new
    window (n >= 2), both normalised. Returns the blended window and max |offset|.
    """
    last = previous[:, -1]
    before = last - previous[:, -2] if previous.shape[1] > 1 else torch.zeros_like(last)
    offset = last + before - window[:, 0]  # (takes, C)
    count = min(frames, window.shape[1])
    weight = 0.5 * (1 + torch.cos(torch.pi * torch.arange(count, device=window.device) / frames))
    blended = window.clone()
    blended[:, :count] += weight[None, :, None].to(window.dtype) * offset[:, None]
    return blended, float(offset.abs().max())


def crossfade(old: torch.Tensor, new: torch.Tensor, frames: int) -> torch.Tensor:
    """The new captions' window faded in over the old captions' continuation (module
    docstring, caption changes): old (takes, m, C), new (takes, n, C), both normalised,
    from the change frame on. Frame i of the first min(frames, m, n) is
    (1 - w_i) old_i + w_i new_i with w_i = smoothstep((i + 1) / (frames + 1)): the first frame
    mostly old (no step), the last mostly new; the rest of ``new`` is unchanged."""
    count = min(frames, old.shape[1], new.shape[1])
    x = torch.arange(1, count + 1, device=new.device, dtype=new.dtype) / (frames + 1)
    weight = (x * x * (3 - 2 * x))[None, :, None]
    faded = new.clone()
    faded[:, :count] = (1 - weight) * old[:, :count] + weight * new[:, :count]
    return faded


def plan_windows(num_frames: int, change_frames: Sequence[int], window: int) -> list[tuple[int, int]]:
    """[(start, end), ...]: the windows' first frames and the frames each keeps ([start, end)).

    A window keeps W frames, or fewer when a caption change (or the clip's end) comes first;
    the next window starts where the previous one's kept frames end.
    """
    changes = sorted(f for f in set(change_frames) if 0 < f < num_frames)
    plan, start = [], 0
    while start < num_frames:
        end = min([start + window, num_frames] + [f for f in changes if f > start])
        plan.append((start, end))
        start = end
    return plan


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" (CUDA when torch sees a GPU, else CPU), "cpu", "cuda" or "cuda:N"."""
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise GenerationError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise GenerationError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise GenerationError("device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    return resolved


class _Captions:
    """Token states of every caption a schedule uses, encoded once: caption -> (T, Dt), (T,)."""

    def __init__(self, encoder, texts: Sequence[str], dim: int, cancel_check: Callable[[], None] | None = None):
        self.table = {"": (np.zeros((1, dim), np.float32), np.zeros(1, bool))}
        for text in sorted({t for t in texts if t}):
            if cancel_check is not None:
                cancel_check()  # hundreds of sections take seconds to encode: stop between them
            # one caption per call: batched with others its states would change in the last
            # bits with their padding, and a later caption must not touch earlier frames
            states, masks = encoder.encode([text])
            length = max(1, int(masks[0].sum()))
            self.table[text] = (states[0, :length], masks[0, :length])

    def batch(self, text: str, keep: Sequence[bool], device) -> tuple[torch.Tensor, torch.Tensor]:
        """One caption for len(keep) rows, dropped (all-False mask) where keep is False ->
        (rows, 1, T, Dt), (rows, 1, T)."""
        state, mask = self.table[text]
        rows = len(keep)
        states = torch.from_numpy(state).to(device).expand(rows, 1, *state.shape)
        masks = torch.from_numpy(mask).to(device)[None, None] & torch.tensor(keep, device=device)[:, None, None]
        return states, masks


class WindowStream:
    """The generation of one clip, window by window: iterate for `MotionChunk`s.

    ``meta`` is filled in as it goes (timings are final once the iteration ends). A stream
    runs once: make another with `Generator.iter_windows` to generate again.
    """

    def __init__(self, generator: "Generator", audio: np.ndarray, schedule: Schedule, options: GenerationOptions,
                 progress: Progress | None, cancel: threading.Event | None):
        self.generator, self.audio, self.schedule, self.options = generator, audio, schedule, options
        self.progress, self.cancel = progress, cancel
        self.num_frames = frame_count(audio.size)
        self.channels = generator.channels
        self.plan = plan_windows(self.num_frames, schedule.change_frames(), generator.window)
        self._started = False
        self._feed = None  # the speech `FeatureStream`, once the run has begun
        self.meta = generator.base_meta() | {
            "captions": {"style": schedule.segments[0].style, "emotion": schedule.segments[0].emotion},
            "schedule": schedule.to_list(),
            "seed": options.seed,
            "options": options.to_json(),
            "frames": self.num_frames,
            "audio_seconds": audio.size / SAMPLE_RATE,
            "windows": [list(w) for w in self.plan],
            "border_offsets": [],
            "timings": dict.fromkeys(("speech_encoder_s", "text_encoder_s", "ar_s", "decoder_s", "total_s"), 0.0),
        }

    def _report(self, fraction: float, message: str) -> None:
        if self.progress is not None:
            self.progress(float(fraction), message)

    def _check_cancel(self, done: int) -> None:
        if self.cancel is not None and self.cancel.is_set():
            encoded = self._feed.chunks_encoded if self._feed is not None else 0
            raise GenerationCancelled(f"generation cancelled after {done} of {self.num_frames} frames "
                                      f"({encoded} speech-encoder chunks encoded)")

    def _clock(self, key: str, since: float) -> float:
        """Add the time since ``since`` to timing ``key``; return now."""
        now = self.generator.sync_time()
        self.meta["timings"][key] += now - since
        return now

    def _old_captions_window(self, raw: torch.Tensor, start: int, feed, captions, rngs) -> torch.Tensor:
        """(takes, W, C) normalised: the window at a change frame ``start`` as a run without
        the change would make it (the captions before ``start``), for the cross-fade only."""
        gen, options = self.generator, self.options
        speech, speech_valid = gen.window_speech(feed, start)
        codes = gen.sample_window(raw, start, speech, speech_valid, captions, self.schedule.at_frame(start - 1),
                                  options, rngs)
        window = gen.decode_window(codes, raw, start)
        if options.border_blend:
            window, _ = blend_border(raw[:, max(0, start - 2):start], window, options.border_blend)
        return window

    def __iter__(self) -> Iterator[MotionChunk]:
        if self._started:
            raise RuntimeError("a WindowStream runs once; call Generator.iter_windows again")
        self._started = True
        return self._run()

    def _run(self) -> Iterator[MotionChunk]:
        gen, options, timings = self.generator, self.options, self.meta["timings"]
        self._check_cancel(0)
        self._report(0.0, "encoding speech")
        gen.warm_up()  # a worker warms up in the background: its first job waits for that here
        resumed = clock = gen.sync_time()  # total_s counts our work, not the consumer's between chunks
        window_start = 0  # the cancel check between encoder chunks names the window waiting for them
        feed = self._feed = gen.speech_feed(self.audio, lambda: self._check_cancel(window_start))
        self._report(ENCODER_SHARE / 2, "encoding captions")
        captions = _Captions(gen.text, [t for s in self.schedule.segments for t in (s.style, s.emotion)],
                             gen.ar.config.text_dim, cancel_check=lambda: self._check_cancel(0))
        self._clock("text_encoder_s", clock)
        self._report(ENCODER_SHARE, "generating motion")

        rngs = generators(options.seed, options.takes)
        raw = torch.zeros(options.takes, self.num_frames, len(self.channels), device=gen.device)
        smoother = StreamingSmoother(smoothing_windows(self.channels)) if options.smoothing else None
        changes = set(self.schedule.change_frames())
        emitted, continuation = 0, None
        for index, (start, end) in enumerate(self.plan):
            self._check_cancel(start)
            window_start = start
            clock = gen.sync_time()
            speech, speech_valid = gen.window_speech(feed, start)
            clock = self._clock("speech_encoder_s", clock)
            codes = gen.sample_window(raw, start, speech, speech_valid, captions, self.schedule.at_frame(start),
                                      options, rngs)
            clock = self._clock("ar_s", clock)
            normalised = gen.decode_window(codes, raw, start)
            if continuation is not None and continuation.shape[1] > 0 and CAPTION_CROSSFADE_FRAMES:
                normalised = crossfade(continuation, normalised, CAPTION_CROSSFADE_FRAMES)
            elif start > 0 and options.border_blend:
                normalised, offset = blend_border(raw[:, max(0, start - 2):start], normalised, options.border_blend)
                self.meta["border_offsets"].append(round(offset, 4))
            raw[:, start:end] = normalised[:, :end - start]
            continuation = None
            if end in changes and CAPTION_CROSSFADE_FRAMES:  # the old captions' next frames, to fade from
                continuation = normalised[:, end - start:]
                if continuation.shape[1] < CAPTION_CROSSFADE_FRAMES:  # the change is (near) a window border
                    clock = self._clock("decoder_s", clock)
                    continuation = self._old_captions_window(raw, end, feed, captions, rngs)
                    clock = self._clock("ar_s", clock)
            kept = normalised[:, :end - start]
            if smoother is not None and end in changes:  # the old captions' next frames: the smoother's look-ahead
                ahead = normalised[:, end - start:]
                if ahead.shape[1] < 2 * smoother.delay and continuation is not None:
                    ahead = continuation
                kept = torch.cat([kept, ahead[:, :2 * smoother.delay]], dim=1)
            motion = gen.stats.denormalise(kept).float().cpu().numpy()
            self._clock("decoder_s", clock)
            if smoother is not None:
                motion, lookahead = motion[:, :end - start], motion[:, end - start:]
                motion = smoother.push(motion)
                if end in changes or end == self.num_frames:
                    motion = np.concatenate([motion, smoother.end_section(lookahead)], axis=1)
            self._report(ENCODER_SHARE + (1 - ENCODER_SHARE) * end / self.num_frames,
                         f"window {index + 1} of {len(self.plan)}")
            self._clock("total_s", resumed)
            yield MotionChunk(emitted, motion, index, len(self.plan))
            resumed = gen.sync_time()
            emitted += motion.shape[1]
        self._clock("total_s", resumed)
        self.meta["speech_chunks"] = feed.chunks_encoded
        timings.update({k: round(v, 4) for k, v in timings.items()})
        self._report(1.0, "done")


# ----------------------------------------------------------------------------- generator


class Generator:
    """A loaded checkpoint (codec, AR model, stats, encoders) that turns audio into motion."""

    def __init__(self, folder: Path, manifest: dict, codec: MotionCodec, ar: CapTalkAR, stats: ChannelStats,
                 speech, text, device: torch.device, half: bool):
        self.folder, self.manifest = folder, manifest
        self.codec, self.ar, self.stats = codec, ar, stats
        self.speech, self.text = speech, text
        self.device, self.half = device, half
        self._warm_lock, self._warm = threading.Lock(), False

    @classmethod
    def load(cls, checkpoint_dir: str | os.PathLike | None = None, device: str = "auto",
             head_channels: Sequence[str] | None = None, head_model: str | None = None,
             speech_encoder_spec: str | None = None, text_encoder_spec: str | None = None,
             half: bool | None = None, warm_up: bool = True) -> "Generator":
        """Load a checkpoint folder (default `default_checkpoint_dir`) and its encoders.

        head_channels: the target rig's channel names; the checkpoint must drive exactly
        these (`model.core.checkpoint_manifest.check_fits`, ``head_model`` names the rig in the message).
        *_encoder_spec: where to find the encoders when the manifest's ids do not name
        them (a transformers directory); the ids must still match. half: float16 autocast
        for the AR model (default: on CUDA only). Raises `CheckpointError` or
        `GenerationError` with a clear message. warm_up=False leaves the encoders' weights
        (and the transformers / CTranslate2 imports) to `warm_up`, which the first clip
        calls if nobody did before (the worker runs it in the background so that it
        answers at once).
        """
        from .encoders import speech_encoder, text_encoder

        folder = checkpoint_folder(checkpoint_dir)
        manifest = read_manifest(folder)
        if head_channels is not None:
            check_fits(manifest, list(head_channels), head_model)
        if "ar" not in manifest:
            raise CheckpointError(f"'{folder}' has a codec but no AR model (stage 2 is not trained yet)")
        try:
            codec_config = CodecConfig.from_dict(manifest["codec"])
            ar_config = ARConfig.from_dict(manifest["ar"])
            stats = ChannelStats.from_dict(manifest["stats"])
            ar_config.check_codec(codec_config)
            if not len(manifest["channels"]) == codec_config.channels == stats.channels:
                raise ValueError(f"{len(manifest['channels'])} channel names, codec for {codec_config.channels}, "
                                 f"stats for {stats.channels}")
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"'{folder}' has an inconsistent manifest ({exc})") from None
        torch_device = resolve_device(device)
        codec = load_module(folder, "codec", MotionCodec, codec_config).to(torch_device).eval().requires_grad_(False)
        ar = load_module(folder, "ar", CapTalkAR, ar_config).to(torch_device).eval().requires_grad_(False)
        encoders = []
        for kind, factory, spec, dim in (("speech", speech_encoder, speech_encoder_spec, ar_config.speech_dim),
                                         ("text", text_encoder, text_encoder_spec, ar_config.text_dim)):
            wanted = manifest.get(f"{kind}_encoder")
            try:
                encoder = factory(spec or wanted, device=str(torch_device))
                width = encoder.dim
            except (ValueError, RuntimeError, OSError) as exc:
                raise CheckpointError(f"the checkpoint's {kind} encoder {wanted!r} cannot be loaded here "
                                      f"({exc})") from None
            if encoder.encoder_id != wanted or width != dim:
                raise CheckpointError(f"the {kind} encoder {encoder.encoder_id!r} ({width}-d) is not the one the "
                                      f"checkpoint was trained with ({wanted!r}, {dim}-d)")
            encoders.append(encoder)
        generator = cls(folder, manifest, codec, ar, stats, *encoders, torch_device,
                        torch_device.type == "cuda" if half is None else bool(half))
        if warm_up:
            generator.warm_up()
        return generator

    def warm_up(self) -> None:
        """Load the encoders' weights and run each once (so the first clip's timings are its
        own); returns at once when done before. Thread-safe: a second caller waits for the
        first. An error is raised to every caller until a warm-up succeeds."""
        with self._warm_lock:
            if self._warm:
                return
            self.text.encode(["warm-up"])
            self.speech.features(np.zeros(SAMPLE_RATE // 10, np.float32))
            self._warm = True

    # ------------------------------------------------------------------ properties
    @property
    def warm(self) -> bool:
        """Whether the encoders are loaded (`warm_up` has run)."""
        return self._warm

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.manifest["channels"])

    @property
    def window(self) -> int:
        return self.ar.config.window

    def base_meta(self) -> dict:
        return {"checkpoint": str(self.folder), "head_model": self.manifest.get("head_model"),
                "speech_encoder": self.speech.encoder_id, "text_encoder": self.text.encoder_id,
                "device": str(self.device)}

    def sync_time(self) -> float:
        """perf_counter after the GPU's queued work is done (timings measure work, not queueing)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    # ------------------------------------------------------------------ one window
    def speech_feed(self, audio: np.ndarray, before_chunk: Callable[[], None] | None = None):
        """The clip's speech features as a `FeatureStream` (rows encoded as windows read them;
        ``before_chunk`` runs before every encoder call)."""
        from .encoders.speech import FeatureStream

        stream = getattr(self.speech, "stream", None)  # any SpeechEncoder with `features` works
        return stream(audio, before_chunk) if stream is not None else FeatureStream(self.speech, audio, before_chunk)

    def window_speech(self, feed, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Speech frames [s - A, s + W + A) of the window starting at s: (W + 2A, Ds) features,
        zero outside the clip, and their validity (W + 2A,) bool."""
        cfg = self.ar.config
        first, stop = start - cfg.speech_context, start + cfg.window + cfg.speech_context
        speech = torch.zeros(stop - first, cfg.speech_dim, device=self.device)
        valid = torch.zeros(stop - first, dtype=torch.bool, device=self.device)
        lo, hi = max(first, 0), min(stop, feed.num_frames)
        if hi > lo:
            rows = feed.rows(lo, hi)
            if rows.shape[1] != cfg.speech_dim:
                raise RuntimeError(f"speech encoder gave {rows.shape[1]}-d features, expected {cfg.speech_dim}")
            speech[lo - first:hi - first] = torch.from_numpy(rows).to(self.device)
            valid[lo - first:hi - first] = True
        return speech, valid

    def previous_window(self, raw: torch.Tensor, start: int) -> tuple[torch.Tensor, bool]:
        """(takes, W, C) normalised frames before ``start`` (left-padded with the first frame
        when fewer than W exist) and whether there are any."""
        window = self.window
        if start == 0:
            return torch.zeros(raw.shape[0], window, raw.shape[2], device=raw.device), False
        before = raw[:, max(0, start - window):start]
        if before.shape[1] < window:
            before = torch.cat([before[:, :1].expand(-1, window - before.shape[1], -1), before], dim=1)
        return before, True

    def sample_window(self, raw: torch.Tensor, start: int, speech: torch.Tensor, speech_valid: torch.Tensor,
                      captions: _Captions, segment, options: GenerationOptions,
                      rngs: list[torch.Generator]) -> list[torch.Tensor]:
        """The codes of the window starting at ``start``: S tensors (takes, s_k, L) bool.
        speech, speech_valid: the window's speech frames (`window_speech`)."""
        cfg, quantiser = self.ar.config, self.codec.quantiser
        takes = options.takes
        terms = guidance_terms(*options.scales, has_style=bool(segment.style), has_emotion=bool(segment.emotion))
        rows = len(terms) * takes
        keep_style = [t.condition == "both" for t in terms for _ in range(takes)]
        keep_emotion = [t.condition in ("emotion", "both") for t in terms for _ in range(takes)]
        previous, has_previous = self.previous_window(raw, start)
        style, style_mask = captions.batch(segment.style, keep_style, self.device)
        emotion, emotion_mask = captions.batch(segment.emotion, keep_emotion, self.device)
        with torch.inference_mode():
            with self._autocast():
                context = self.ar.context(
                    previous.repeat(len(terms), 1, 1), torch.full((rows,), has_previous, device=self.device),
                    speech.expand(rows, -1, -1), speech_valid.expand(rows, -1), style, style_mask,
                    emotion, emotion_mask, torch.zeros(rows, 1, dtype=torch.long, device=self.device))
                state = self.ar.begin(context)
            codes, scale_input = [], None
            for k in range(len(cfg.scales)):
                with self._autocast():
                    logits = self.ar.step(state, scale_input)
                codes.append(sample_bits(guide(logits, terms), options.temperature, options.top_p, rngs))
                if k + 1 < len(cfg.scales):
                    partial = quantiser.codes_to_latent(codes)
                    scale_input = quantiser.scale_input(partial, k + 1).repeat(len(terms), 1, 1)
        return codes

    def decode_window(self, codes: list[torch.Tensor], raw: torch.Tensor, start: int) -> torch.Tensor:
        """Codes -> (takes, W, C) normalised motion, continuing the frames before ``start``."""
        previous, has_previous = self.previous_window(raw, start)
        with torch.inference_mode():
            return self.codec.decode(codes, previous if has_previous else None).float()

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.float16,
                              enabled=self.half and self.device.type == "cuda")

    # ------------------------------------------------------------------ clips
    def _audio(self, audio) -> np.ndarray:
        if isinstance(audio, (str, os.PathLike, bytes, bytearray)):
            return load_audio(audio)
        return to_mono_16k(np.asarray(audio), SAMPLE_RATE, "audio")

    def iter_windows(self, audio, schedule: Schedule | None = None,
                     options: GenerationOptions = GenerationOptions(), progress: Progress | None = None,
                     cancel: threading.Event | None = None) -> WindowStream:
        """Stream the motion window by window (see `WindowStream`, `MotionChunk`).

        audio: (N,) 16 kHz samples or a path; schedule: a `Schedule` (None: no captions).
        Raises `AudioError` / `ScheduleError` here, `GenerationCancelled` between windows
        while iterating.
        """
        samples = self._audio(audio)
        schedule = Schedule.constant() if schedule is None else schedule
        schedule.check_duration(samples.size / SAMPLE_RATE)
        return WindowStream(self, samples, schedule, options, progress, cancel)

    def generate(self, audio, schedule: Schedule | None = None,
                 options: GenerationOptions = GenerationOptions(), progress: Progress | None = None,
                 cancel: threading.Event | None = None) -> list[MotionClip]:
        """The whole clip: one `MotionClip` per take ((T, C) motion in real units at 25 fps).
        progress(fraction, message) is called as it goes (last with 1.0); setting ``cancel``
        stops it between windows (`GenerationCancelled`)."""
        stream = self.iter_windows(audio, schedule, options, progress, cancel)
        motion = np.concatenate([chunk.motion for chunk in stream], axis=1)
        return [MotionClip(motion[i], self.channels, MOTION_FPS,
                           stream.meta | {"seed": options.seed + i, "take": i + 1, "takes": options.takes})
                for i in range(options.takes)]
