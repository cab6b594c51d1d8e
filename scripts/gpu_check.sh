#!/usr/bin/env bash
# One prepared check for a lent GPU machine (one GPU, no internet), docs/gpu.md says how to run it:
#
#   OUT=dir scripts/gpu_check.sh             # on the GPU machine; results (json, logs, summary.md) under $OUT
#   scripts/gpu_check.sh --dry-run           # the same steps on the CPU at a tiny size (no mmcv build)
#   scripts/gpu_check.sh --wheels DIR        # on a machine WITH internet: fill DIR with what the GPU machine lacks
#
# Steps, each with its share of the overall time limit (PGD_GPU_TIMEOUT seconds, default 690):
#   1. environment: nvidia-smi, torch / CUDA / nvcc versions            -> env.txt
#   2. Python packages that do not import are installed from $PGD_WHEELS (pip --no-index)
#   3. mmcv 2.1.0 with CUDA ops, compiled from $PGD_WHEELS/mmcv-2.1.0.tar.gz unless the installed mmcv has them
#      (FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST default 9.0 = H100/H200; ~5-6 min on 16 cores)
#   4. synthetic COCO at 1333x800 (scripts/gpu_bench.py data)           -> data.json
#   5. mmcv's deformable convolutions (DDOD's head) on the GPU          -> deform.json
#   6. KD overhead ratio at 1333x800, batch 4: ATSS and DDOD, R101 -> R50, random init -> kd_atss.json, kd_ddod.json
#   7. `pgd train` at the paper profile on the synthetic set: the ATSS R101 teacher (20 iterations, for its
#      model.pth) and the ATSS R50 PGD student for PGD_GPU_ITERS iterations (default 200), random-init backbones
#   8. s/iter and peak memory of both trainings                         -> train.json, summary.md
#
# Needs on the GPU machine: python 3.10-3.12 with a CUDA build of torch (the project pins 2.13.0; another 2.x
# works for this check and is recorded), nvcc of the same CUDA major version for the mmcv build, and either the
# packages of `pip install -e .` minus mlflow / snakemake or a wheel folder from `--wheels` carried along.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PY=${PGD_PYTHON:-python3}
[[ -x "$ROOT/.venv/bin/python" && -z "${PGD_PYTHON:-}" ]] && PY="$ROOT/.venv/bin/python"
MMCV_VERSION=2.1.0
# what `pgd train` and the benchmarks import: mmengine, mmdet and their requirements (module name:pip requirement)
REQUIREMENTS=(mmengine:mmengine==0.10.7 mmdet:mmdet==3.3.0 pycocotools:pycocotools scipy:scipy
              cv2:opencv-python-headless shapely:shapely terminaltables:terminaltables yaml:pyyaml PIL:pillow
              matplotlib:matplotlib addict:addict yapf:yapf rich:rich termcolor:termcolor tqdm:tqdm
              numpy:numpy six:six)

log() { printf '[gpu_check %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

if [[ "${1:-}" == "--wheels" ]]; then
    dir=${2:?usage: $0 --wheels DIR [PYTHON_VERSION, default 3.12]}
    pyver=${3:-3.12}
    mkdir -p "$dir"
    # binary wheels for the GPU machine's interpreter; mmcv as its sdist (compiled there against its torch)
    reqs=()
    for item in "${REQUIREMENTS[@]}"; do reqs+=("${item#*:}"); done
    "$PY" -m pip download --dest "$dir" --only-binary=:all: --python-version "$pyver" \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
        "${reqs[@]}" ninja "setuptools>=77.0.3,<81" wheel
    "$PY" -m pip download --dest "$dir" --no-deps --no-binary mmcv "mmcv==$MMCV_VERSION"
    du -sh "$dir"
    exit 0
fi

DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
OUT=${OUT:-$ROOT/gpu_out}
mkdir -p "$OUT"
WORK=${PGD_GPU_WORK:-$ROOT/results/gpu-check}
mkdir -p "$WORK"
START=$SECONDS
BUDGET=${PGD_GPU_TIMEOUT:-$(( DRY ? 3000 : 690 ))}
if (( DRY )); then
    DEVICE=cpu; W=160; H=96; ITERS=${PGD_GPU_ITERS:-2}; NUM_TRAIN=8; REPEATS=1; WORKERS=1
else
    DEVICE=cuda; W=1333; H=800; ITERS=${PGD_GPU_ITERS:-200}; NUM_TRAIN=${PGD_GPU_IMAGES:-48}; REPEATS=20
    WORKERS=${PGD_GPU_WORKERS:-8}
fi
BATCH=4                                    # the paper profile's images per GPU

STATUS=0
# run NAME SECONDS CMD...: one step under its own timeout (never past the overall budget), logged to $OUT/NAME.log
run() {
    local name=$1 limit=$2; shift 2
    (( DRY )) && limit=$(( limit * 4 ))     # the CPU is slower at everything, the dry run only checks the steps
    local left=$(( BUDGET - (SECONDS - START) ))
    (( limit > left )) && limit=$left
    if (( limit <= 5 )); then
        log "$name: skipped, the overall budget of ${BUDGET}s is spent"; STATUS=1; return 1
    fi
    log "$name (limit ${limit}s): $*"
    local t0=$SECONDS rc=0
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
    echo "$name $rc $(( SECONDS - t0 ))" >>"$OUT/steps.txt"
    if (( rc != 0 )); then
        log "$name: exit $rc after $(( SECONDS - t0 ))s; last lines of $OUT/$name.log:"; tail -n 15 "$OUT/$name.log"
        STATUS=1; return 1
    fi
    log "$name: done in $(( SECONDS - t0 ))s"
}
: >"$OUT/steps.txt"

# 1. environment
{
    date -u; nproc; free -g | head -2
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    command -v nvcc >/dev/null && nvcc --version | tail -n 2
    "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if (( ! DRY )) && ! "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    log "no CUDA torch here (see $OUT/env.txt): nothing to measure"; exit 2
fi

# 2. missing Python packages, from the carried wheel folder
missing=()
for item in "${REQUIREMENTS[@]}"; do
    # found, not imported: mmdet refuses to import before mmcv is built
    "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('${item%%:*}') is None)" 2>/dev/null \
        || missing+=("${item#*:}")
done
if (( ${#missing[@]} )); then
    if [[ -d "${PGD_WHEELS:-}" ]]; then
        run deps 300 "$PY" -m pip install --no-index --find-links "$PGD_WHEELS" "${missing[@]}" || exit 1
    else
        log "missing ${missing[*]} and no PGD_WHEELS folder to install them from (scripts/gpu_check.sh --wheels)"
        exit 1
    fi
fi

# 3. mmcv with CUDA ops
has_cuda_ops() {
    "$PY" -c 'import sys, mmcv, mmcv.ops; from mmcv.ops import get_compiling_cuda_version as v; sys.exit(mmcv.__version__ != "'$MMCV_VERSION'" or v() == "not available")' 2>/dev/null
}
if (( DRY )); then
    log "mmcv build: skipped (dry run uses the installed mmcv)"
elif has_cuda_ops; then
    log "mmcv $MMCV_VERSION with CUDA ops already installed"
else
    sdist=$(ls "${PGD_WHEELS:-/nonexistent}"/mmcv-"$MMCV_VERSION".tar.gz 2>/dev/null | head -n 1)
    [[ -n "$sdist" ]] || { log "mmcv needs building and there is no ${PGD_WHEELS:-\$PGD_WHEELS}/mmcv-$MMCV_VERSION.tar.gz"; exit 1; }
    # mmcv's setup.py imports pkg_resources (gone in setuptools 81); ninja compiles in parallel
    "$PY" -c 'import pkg_resources' 2>/dev/null \
        || "$PY" -m pip install -q --no-index --find-links "$PGD_WHEELS" "setuptools>=77.0.3,<81" || true
    "$PY" -c 'import ninja' 2>/dev/null || "$PY" -m pip install -q --no-index --find-links "$PGD_WHEELS" ninja || true
    export MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-$(nproc)}
    run mmcv_build 480 "$PY" -m pip install --no-index --find-links "$PGD_WHEELS" --no-build-isolation --no-deps \
        --force-reinstall "$sdist" || exit 1
    has_cuda_ops || { log "mmcv built but its CUDA ops do not import"; exit 1; }
fi

# 4.-6. data and the op / step benchmarks
DATA="$WORK/coco_${W}x${H}"
run data 240 "$PY" scripts/gpu_bench.py data --out "$DATA" --num-train "$NUM_TRAIN" --num-val 2 --width "$W" --height "$H" \
    && cp "$DATA/summary.json" "$OUT/data.json"
run deform 60 "$PY" scripts/gpu_bench.py deform --device "$DEVICE" --repeats "$(( REPEATS > 1 ? 10 : 1 ))" \
    --map "$(( H / 8 ))x$(( W / 8 ))" --out "$OUT/deform.json"
for det in atss ddod; do
    run "kd_$det" 150 "$PY" scripts/gpu_bench.py kd --detector "$det" --device "$DEVICE" --batch "$BATCH" \
        --width "$W" --height "$H" --repeats "$REPEATS" --warmup "$(( REPEATS > 1 ? 3 : 0 ))" --out "$OUT/kd_$det.json"
done

# 7. trainings at the paper profile: random-init backbones, an iteration loop of exactly N iterations (the paper's
# epochs, with the 500-iteration warm-up only: the lr drops come later), no checkpoints on the way, the teacher
# at the student's single scale (its RandomResize between two equal scales); each validates on the 2 val images
if [[ -f "$DATA/summary.json" ]]; then
    loop() { echo "train_cfg={'_delete_': True, 'type': 'IterBasedTrainLoop', 'max_iters': $1, 'val_interval': 100000}"; }
    common=(--profile paper --no-mlflow --threads 4 --set "data_root=$DATA/"
            --set "train_dataloader.batch_size=$BATCH" --set "train_dataloader.num_workers=$WORKERS"
            --set "param_scheduler=[{'type': 'LinearLR', 'start_factor': 0.001, 'by_epoch': False, 'begin': 0, 'end': 500}]"
            --set "log_processor.by_epoch=False" --set "default_hooks.checkpoint.interval=100000"
            --set "default_hooks.logger.interval=$(( ITERS >= 50 ? 10 : 1 ))")
    rm -rf "$WORK/runs"
    run train_teacher 150 "$PY" -m pgd.cli train --detector atss --backbone r101 --role teacher \
        --work-dir "$WORK/runs/atss_r101_teacher" "${common[@]}" --set "model.backbone.init_cfg=None" \
        --set "train_dataloader.dataset.pipeline.2.scale=[($W, $H), ($W, $H)]" --set "$(loop $(( ITERS >= 50 ? 20 : 1 )))"
    run train_student 360 "$PY" -m pgd.cli train --detector atss --backbone r50 --role student --method pgd \
        --teacher-dir "$WORK/runs/atss_r101_teacher" --work-dir "$WORK/runs/atss_r50_pgd" "${common[@]}" \
        --set "model.student.backbone.init_cfg=None" --set "train_dataloader.dataset.pipeline.2.scale=($W, $H)" \
        --set "$(loop "$ITERS")"
    run summary 60 "$PY" scripts/gpu_bench.py summary --runs-dir "$WORK/runs" --out "$OUT/train.json"
fi

# 8. one page of figures
"$PY" - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def load(name):
    p = out / name
    return json.loads(p.read_text()) if p.is_file() else None
print("| measurement | value |\n|---|---|")
for det in ("atss", "ddod"):
    kd = load(f"kd_{det}.json")
    if kd:
        print(f"| {det} R101->R50 KD step, {kd['input']} batch {kd['batch']} ({kd['device']}) | ratio {kd['ratio']:.3f}: "
              f"teacher fwd {kd['teacher_forward']['ms_median']:.1f} ms, student step {kd['student_step']['ms_median']:.1f} ms, "
              f"distill step {kd['distill_step']['ms_median']:.1f} ms, peak {kd['distill_step']['peak_mb']} MB |")
deform = load("deform.json")
for name, entry in (deform or {}).items():
    print(f"| {name} fwd+bwd {entry['map']} | {entry['ms_fwd_bwd']:.2f} ms, vs CPU {entry['max_abs_diff_vs_cpu']} |")
for run, entry in (load("train.json") or {}).items():
    if "error" in entry:
        print(f"| pgd train {run} | {entry['error']} |")
    else:
        print(f"| pgd train {run} ({entry['last_iter']} it) | {entry['s_per_iter']:.3f} s/iter "
              f"(data {entry['data_s_per_iter']:.3f}), peak memory {entry.get('peak_memory_mb')} MB |")
EOF
log "total $(( SECONDS - START ))s; steps (name exit seconds):"; cat "$OUT/steps.txt"
exit "$STATUS"
