#!/usr/bin/env bash
# The bundled default model (checkpoints/default), from nothing, with the repo's own commands:
#
#   ./captalk.sh setup && recipes/default_model.sh [WORK_DIR]
#
# 1. 12 h of synthetic speech + teacher motion (data/synth-v1; the test voice held out),
# 2. the motion codec, 3. the AR model (Whisper tiny.en + MiniLM features, cached on disk),
# 4. the weights and manifest copied into checkpoints/default, 5. the evaluation report
#    (docs/eval). Every stage resumes where it stopped: rerun the same command after an
#    interruption. Figures of the run that made the shipped weights: README, "Default model".
#    That run (2026-12-02, teacher calibrated on real faces) was started with the codec at
#    --steps 4000 and resumed at step 500 with 3000 (the learning rate there differs by 1%),
#    and the AR stage was started at 1500, then 1200, and resumed at step 111 with 800 (on this
#    machine it ran at 0.42 steps/s, half the earlier run's), to fit the session's time.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$ROOT}"
PY="$ROOT/.venv/bin/python"
DATA="$WORK/data/synth-v1"
RUN="$WORK/checkpoints/run-v1"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
cd "$ROOT"

"$PY" -m model data synth --out "$DATA" --hours 12 --seed 0 --workers "$(nproc)"
"$PY" -m model train codec --data "$DATA" --out "$RUN" --size small --steps 3000 --batch 16 --lr 1e-3 \
    --warmup 200 --val-every 500 --save-every 100 --log-every 50 --workers 1
"$PY" -m model train ar --data "$DATA" --checkpoint "$RUN" --size small --steps 800 --batch 24 --lr 1e-3 \
    --warmup 200 --val-every 500 --save-every 100 --log-every 50 --workers 1 --generation-clips 4

mkdir -p "$ROOT/checkpoints/default"
cp "$RUN/captalk.json" "$RUN/codec.safetensors" "$RUN/ar.safetensors" "$RUN/train_log.jsonl" \
    "$ROOT/checkpoints/default/"
"$PY" -m model evaluate --checkpoint checkpoints/default --data "$DATA" --out docs/eval
