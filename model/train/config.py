"""The training options both stages share (torch-free: the command line's flag defaults come
from here, and every ``python -m model`` command builds that parser)."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 20_000
    batch: int = 32  # global: split across processes
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 1000
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    val_every: int = 1000
    save_every: int = 500
    log_every: int = 25
    workers: int = 1  # threads building batches ahead of the step (0: in the training thread)
    stop_after: int | None = None  # stop (state saved) after this step; None = run to ``steps``

    # options a resumed run must share with the saved one (the rest may change between runs)
    RESUME_FIELDS = ("batch", "lr", "weight_decay", "betas", "warmup_steps", "min_lr_ratio", "grad_clip", "seed")

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.steps < 1 or self.batch < 1 or self.lr <= 0:
            raise ValueError("steps, batch and lr must be positive")
        if self.val_every < 1 or self.save_every < 1 or self.log_every < 1 or self.workers < 0:
            raise ValueError("val_every, save_every and log_every must be positive, workers >= 0")
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError("stop_after must be a positive step")

    def resume_key(self) -> dict:
        return {name: list(v) if isinstance(v, tuple) else v
                for name, v in asdict(self).items() if name in self.RESUME_FIELDS}
