"""Training: stage 1 (the motion codec) and stage 2 (the AR model), one process or many.

    python -m model train codec --data DATA --out CKPT [--size small] [--steps N] [--batch B]
    python -m model train ar --data DATA --checkpoint CKPT [--speech-encoder whisper-tiny.en]
    torchrun --nproc_per_node N -m model train codec ...      (same options; --batch is global)

Rerunning a command resumes it from ``CKPT/train_state/<stage>/``; a finished one says so.
Both stages append to ``CKPT/train_log.jsonl`` (one JSON object per log line, validation
and event).

- `data`: clips in memory and vectorised batch builders (codec windows, AR batches);
- `config`: `TrainConfig`, the options both stages share (torch-free);
- `loop`: the shared loop (AdamW, warm-up + cosine, clipping, validation, resume, DDP);
- `distributed`: process group, device, collectives;
- `codec_stage`, `ar_stage`: what each stage trains, validates and writes.
"""
