"""Generation on a farm node: one loaded model, many lines.

`LineGenerator` is the Ray actor's class (the driver wraps it with ``ray.remote``): it
loads `model.generate.Generator` once and turns job-list lines into motion files.
`generate_line` is the single place that maps a job to a request (`model.run.run_request`).
"""
from __future__ import annotations

import os
from pathlib import Path

from model.core.batch_jobs import Job, folder_digest


def generate_line(generator, job: Job):
    """One line's motion (`MotionClip`): its whole audio, its captions and schedule (seconds
    as written), its seed; the model's other options at their defaults, as the batch's."""
    from model.core.contract import GenerationOptions, GenerationRequest
    from model.core.schedule import parse_schedule
    from model.run import run_request

    request = GenerationRequest(audio_path=str(Path(job.audio).resolve()),
                                schedule=parse_schedule(list(job.schedule), job.style, job.emotion),
                                options=GenerationOptions(seed=job.seed), client=f"farm: {job.name}")
    return run_request(generator, request)[0]


class LineGenerator:
    """A generation worker: the model stays loaded between lines."""

    def __init__(self, checkpoint: str, device: str = "auto", threads: int = 1):
        import torch

        from model.generate import Generator

        torch.set_num_threads(max(1, threads))
        self.generator = Generator.load(checkpoint, device=device)
        self.model_digest = "checkpoint:" + folder_digest(checkpoint)
        self.node = os.uname().nodename

    def generate(self, job: Job) -> bytes:
        """The line's motion file (`model.core.motion_file` .npz) as bytes, stamped with the
        model's digest (the batch records it as the job's model)."""
        import tempfile

        from model.core.motion_file import save_motion

        clip = generate_line(self.generator, job)
        clip.meta["model_digest"] = self.model_digest
        with tempfile.TemporaryDirectory(prefix="captalk-farm-") as folder:  # save_motion writes files
            target = Path(folder) / "motion.npz"
            save_motion(target, clip)
            return target.read_bytes()

    def pid(self) -> int:
        return os.getpid()
