#!/usr/bin/env bash
# GPU check of stages 2-3, of one fusion training step, of the whole paper path (a rehearsal) and of
# AudioLDM2 (imagine.generator=audioldm2), in under 15 minutes on one H100/H200.
#
#   benchmarks/gpu_check.sh                 # writes JSON to $OUT if set, else benchmarks/results/
#   GPU_CHECK_SMOKE=1 benchmarks/gpu_check.sh   # the same steps at toy sizes on a CPU (checks the script)
#
# Steps (each under its own time limit; a failed step is recorded and the others still run):
# 1. imagine_full_size_cuda.json: bench_imagine.py at paper size (stable-audio-open-1.0, CLAP
#    htsat-fused shapes, random weights, fp16), 4 prompts x 5 candidates x 50 steps: the
#    reference-style loop against the stage's four modes (full/exact latents x lazy/all
#    candidates), batch sizes from the GPU's free memory, clips/s and peak memory per mode.
# 2. imagine_memory_cuda.json: the per-clip memory the stage measures, the batch sizes it picks
#    on this GPU, and one generation call at those sizes (full window, 2 steps) to show it fits.
# 3. fusion_step_cuda.json: one paper-size fusion-LM training step in bf16 (bench_fusion_step.py).
# 4. paper_rehearsal_cuda.json: `ith rehearse --device cuda` (docs/rehearsal.md): every stage and all
#    four systems of the paper table at the published sizes on random weights, with per-stage wall
#    time, peak RSS, peak CUDA memory and bytes written, unit costs and the projection on this GPU.
#    Size: $GPU_CHECK_REHEARSAL_SIZE (default: default; smallest in the CPU smoke check, skipped there
#    unless GPU_CHECK_REHEARSAL=1, since it takes minutes on a CPU).
# 5. audioldm2_generate_cuda.json: bench_audioldm2_cuda.py, cvssp/audioldm2 at full size (random
#    weights, fp16) through the stage's AudioLDM2Generator: 4 prompts x 5 candidates of 5 s at 50
#    steps, exact and full (10.24 s window) latents, batch sizes from the GPU's free memory; seconds,
#    clips/s, the denoise/decode split, peak memory and unusable (NaN/inf/silent) clips per mode.
# The Python is $PYTHON, else .venv/bin/python, else python3 (torch with CUDA, diffusers and
# transformers must import: the device machine cannot install anything).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-benchmarks/results}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false TOKENIZERS_PARALLELISM=false
export ITH_HOME=${ITH_HOME:-$(mktemp -d)}
if [ -d ../shared/auditorybench ]; then export ITH_AUDITORYBENCH_DIR=${ITH_AUDITORYBENCH_DIR:-$(cd ../shared/auditorybench && pwd)}; fi
STATUS="$OUT_DIR/gpu_check_status.json"
started=$(date +%s)

"$PY" - <<'EOF' || { echo "gpu_check: torch/diffusers/transformers do not import with $PY" >&2; exit 2; }
import torch, diffusers, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, "devices", torch.cuda.device_count(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
EOF
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv > "$OUT_DIR/gpu_check_nvidia_smi.csv" 2>/dev/null || true

if [ "${GPU_CHECK_SMOKE:-0}" = 1 ]; then
    IMAGINE_ARGS=(--prompts 1 --steps 1 --modes exact-lazy,full-lazy)
    MEMORY_ARGS=(--tiny)
    FUSION_ARGS=(--small --steps 1 --batch 2)
    REHEARSAL_ARGS=(--size smallest --device cpu)
    AUDIOLDM2_ARGS=(--tiny --prompts 2 --candidates 2 --steps 2)
    SUFFIX=smoke
else
    IMAGINE_ARGS=(--full-size --prompts 4 --steps 50)
    MEMORY_ARGS=()
    FUSION_ARGS=(--precision bf16 --steps 5)
    REHEARSAL_ARGS=(--size "${GPU_CHECK_REHEARSAL_SIZE:-default}" --device cuda)
    AUDIOLDM2_ARGS=(--prompts 4 --candidates 5 --steps 50)
    SUFFIX=cuda
fi

declare -A RC
run_step() {  # name, time limit (s), command...
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s)"
    local t0=$(date +%s)
    timeout "$limit" "$@"
    RC[$name]=$?
    echo "== $name: exit ${RC[$name]} after $(( $(date +%s) - t0 ))s"
}

run_step imagine 300 "$PY" benchmarks/bench_imagine.py "${IMAGINE_ARGS[@]}" --out "$OUT_DIR/imagine_full_size_$SUFFIX.json"
run_step memory 90 "$PY" benchmarks/gpu_memory_check.py "${MEMORY_ARGS[@]}" --out "$OUT_DIR/imagine_memory_$SUFFIX.json"
run_step fusion 60 "$PY" benchmarks/bench_fusion_step.py "${FUSION_ARGS[@]}" --out "$OUT_DIR/fusion_step_$SUFFIX.json"
if [ "${GPU_CHECK_SMOKE:-0}" = 1 ] && [ "${GPU_CHECK_REHEARSAL:-0}" != 1 ]; then
    RC[rehearsal]=0; echo "== rehearsal: skipped in the smoke check (GPU_CHECK_REHEARSAL=1 runs it)"
else
    run_step rehearsal 330 "$PY" -m cli.main rehearse "${REHEARSAL_ARGS[@]}" --out "$OUT_DIR/paper_rehearsal_$SUFFIX.json"
fi
run_step audioldm2 120 "$PY" benchmarks/bench_audioldm2_cuda.py "${AUDIOLDM2_ARGS[@]}" --out "$OUT_DIR/audioldm2_generate_$SUFFIX.json"

total=$(( $(date +%s) - started ))
printf '{"imagine": %s, "memory": %s, "fusion": %s, "rehearsal": %s, "audioldm2": %s, "seconds": %s, "smoke": %s}\n' \
    "${RC[imagine]}" "${RC[memory]}" "${RC[fusion]}" "${RC[rehearsal]}" "${RC[audioldm2]}" "$total" "${GPU_CHECK_SMOKE:-0}" > "$STATUS"
cat "$STATUS"
[ "${RC[imagine]}" = 0 ] && [ "${RC[memory]}" = 0 ] && [ "${RC[fusion]}" = 0 ] && [ "${RC[rehearsal]}" = 0 ] && [ "${RC[audioldm2]}" = 0 ]
