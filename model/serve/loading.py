"""The worker's model, loaded off the start-up path.

Importing torch and loading the weights take seconds that the add-on need not wait for:
the worker announces itself, answers /health and checks and queues jobs (all from the
torch-free manifest) while `ModelLoader` imports torch, loads the `Generator` and warms
its encoders up on a background thread. The first job waits for the load; a failed load
is the error of every job that waits for it and of every later one.
"""
from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from ..core.errors import BackendFailure, CapTalkError, Cancelled

# what loading the model imports; a worker without them must not announce itself
REQUIRED_MODULES = ("torch", "safetensors")
LOAD_POLL = 0.05  # seconds between looks at a job's cancel flag while it waits for the load


def check_modules_present(names=REQUIRED_MODULES) -> None:
    """Raise ``ModuleNotFoundError`` (the same words as ``import``) for the first of ``names``
    that this interpreter cannot import, without importing any."""
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)


class ModelLoader:
    """Loads ``Generator.load(checkpoint, device)`` on a thread started by `start`, then its
    encoders (`Generator.warm_up`). ``threads``: torch CPU threads (0: torch's default)."""

    def __init__(self, checkpoint: Path, device: str, threads: int = 0):
        self.checkpoint, self.device, self.threads = checkpoint, device, threads
        self._loaded = threading.Event()
        self.generator = None
        self.error: CapTalkError | None = None
        self.load_s: float | None = None

    def start(self, on_failure: Callable[[CapTalkError], None] = lambda error: None) -> None:
        threading.Thread(target=self._load, args=(on_failure,), name="captalk-load", daemon=True).start()

    def _load(self, on_failure) -> None:
        started = time.monotonic()
        try:
            import torch

            if self.threads:
                torch.set_num_threads(self.threads)
            from ..generate import Generator

            self.generator = Generator.load(self.checkpoint, device=self.device, warm_up=False)
        except CapTalkError as exc:
            self.error = exc
        except Exception as exc:  # noqa: BLE001 (an unexpected failure still reaches the jobs as one line)
            self.error = BackendFailure(f"the model could not be loaded: {type(exc).__name__}: {exc}")
        self.load_s = time.monotonic() - started
        self._loaded.set()
        if self.error is not None:
            print(f"captalk worker: {self.error}", file=sys.stderr, flush=True)
            on_failure(self.error)
            return
        try:
            self.generator.warm_up()
        except Exception as exc:  # noqa: BLE001 (raised again to the first job, by its own warm-up)
            print(f"captalk worker: warming up the encoders failed: {exc}", file=sys.stderr, flush=True)

    @property
    def loaded(self) -> bool:
        """Whether the generator is loaded (its encoders may still be warming up)."""
        return self._loaded.is_set() and self.error is None

    @property
    def warm(self) -> bool:
        """Whether the generator and its encoders are loaded."""
        return self.loaded and self.generator.warm

    def wait(self, cancel: threading.Event):
        """The loaded generator, once it is; raises the load's error, or `Cancelled` when
        ``cancel`` is set first."""
        while not self._loaded.wait(LOAD_POLL):
            if cancel.is_set():
                raise Cancelled("cancelled while the model was loading")
        if self.error is not None:
            raise self.error
        return self.generator
