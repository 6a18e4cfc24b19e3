#!/usr/bin/env bash
# The CUDA checks of issue 9 (AMP against fp32 on the Hippocampus 3D config, compile against
# eager, and medxfer's training and evaluation on a GPU) as one short job for a lent GPU
# machine, which has PyTorch but neither network access nor all of medxfer's dependencies.
#
#   bash scripts/gpu_check.sh prepare   # here: needs PyPI and ../shared/data; fills .gpu_kit/
#   bash scripts/gpu_check.sh run       # there, in the repository root, with .gpu_kit carried
#
# prepare downloads, for the GPU image's Python (PYVER, default 3.12), the wheels of the
# dependencies that image lacks, at the versions installed in this checkout's .venv (what
# the tests ran with), and copies the two datasets the checks read (MSD Hippocampus NIfTI
# and PneumoniaMNIST, 21 MB) into .gpu_kit/, which git ignores: the data is never committed.
#
# run installs the wheels and medxfer into /tmp/medxfer_site (nothing else is touched), then
# writes into $OUT (or .gpu_kit/out):
#   env.txt                 GPU, torch, CUDA and MONAI versions
#   amp_hippocampus_3d.txt  benchmarks/amp_compile.py on the Hippocampus 3D config (fp32,
#                           fp16, bf16, each eager and as CUDA graphs, and compile), ending
#                           with what train.amp: auto would choose and its share of the
#                           fastest variant (each amp_*.txt ends so)
#   amp_hippocampus_3d_nondeterministic.txt  the same without train.deterministic (eager)
#   amp_hippocampus_3d_batch128.txt  at batch 128, where the arithmetic, not the launch of
#                           each kernel, takes the time (also fp32 without TF32)
#   run_hippocampus_3d.txt  a 2-epoch Hippocampus 3D run (3D U-Net, AMP, sliding-window
#                           test) and its metrics.json
#   run_pneumonia.txt       a 1-epoch PneumoniaMNIST run (MobileNet-V2, AMP, batch
#                           augmentation on the GPU) and its metrics.json
# Every step has its own time limit, so what finished comes back even when a later step
# hangs; the steps' limits add up to 13 minutes (STEPS=100).
#
# Environment: PYTHON (prepare: the checkout's .venv; run: python3), PYVER (prepare; default
# 3.12), DEVICE (run; default cuda, cpu to try the job here), RUNS (run; 0: the
# benchmarks only, not the two training runs), STEPS (timed steps per AMP
# variant; default 100), KIT (default .gpu_kit).
set -uo pipefail
cd "$(dirname "$0")/.."

KIT=${KIT:-.gpu_kit}
# medxfer's dependencies missing from the GPU image (its packages are listed in the device
# tool's KINDS.md); SimpleITK (53 MB, NRRD/MHA only) is left out: no check reads those
PACKAGES="monai nibabel segmentation-models-pytorch pydantic pydantic-core annotated-types
typing-inspection typing-extensions pydicom"
DATA=../shared/data

prepare() {
    local python=${PYTHON:-.venv/bin/python} pyver=${PYVER:-3.12} pins
    [ -d "$DATA/msd_hippocampus" ] && [ -f "$DATA/medmnist/pneumoniamnist.npz" ] || {
        echo "error: $DATA/msd_hippocampus or $DATA/medmnist/pneumoniamnist.npz is missing;" \
             "run this from a checkout beside ../shared" >&2; return 2; }
    # shellcheck disable=SC2086  # one argument per package
    pins=$("$python" -c 'import sys; from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in sys.argv[1:]))' $PACKAGES) || {
        echo "error: $python lacks one of: $PACKAGES; install medxfer into it first" \
             "(README set-up) or set PYTHON" >&2; return 2; }
    rm -rf "$KIT.tmp" && mkdir -p "$KIT.tmp/whl" "$KIT.tmp/data" || return 1
    # shellcheck disable=SC2086  # one argument per wheel
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$KIT.tmp/whl" $pins || return 1
    cp -r "$DATA/msd_hippocampus" "$KIT.tmp/data/" &&
        cp "$DATA/medmnist/pneumoniamnist.npz" "$KIT.tmp/data/" || return 1
    rm -rf "$KIT" && mv "$KIT.tmp" "$KIT"
    echo "$KIT ready ($(du -sh "$KIT" | cut -f1)); on the GPU machine, with carry [\"$KIT\"]:"
    echo "  bash scripts/gpu_check.sh run"
}

step() {  # step SECONDS LOGFILE COMMAND...: run with a time limit, output to screen and log
    local limit=$1 log=$2
    shift 2
    local start=$SECONDS
    echo "\$ $*" | tee "$log"
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    echo "exit $rc after $((SECONDS - start)) s" | tee -a "$log"
}

run() {
    local out=${OUT:-$KIT/out} device=${DEVICE:-cuda} steps=${STEPS:-100}
    local site=/tmp/medxfer_site data PYTHON=${PYTHON:-python3}
    [ -d "$KIT/whl" ] || { echo "error: no $KIT/whl: run 'bash scripts/gpu_check.sh" \
                                "prepare' first and carry $KIT" >&2; return 2; }
    data=$(cd "$KIT/data" && pwd)
    mkdir -p "$out"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$KIT"/whl/*.whl || return 1
    "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
        --no-cache-dir --ignore-requires-python --upgrade --target "$site" . || return 1
    export PYTHONPATH=$site HF_HUB_OFFLINE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1
    { nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
      "$PYTHON" -c "import torch, monai, medxfer; print('torch', torch.__version__, 'cuda',
torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU',
'| monai', monai.__version__, '| medxfer', medxfer.__version__)"; } 2>&1 | tee "$out/env.txt"

    # most important first: what finished comes back even if the machine's time runs out
    step 240 "$out/amp_hippocampus_3d.txt" "$PYTHON" benchmarks/amp_compile.py \
        configs/hippocampus_3d.yaml --device "$device" --steps "$steps" \
        --variants fp32,fp16,bf16,fp32_cudagraphs,compile_cudagraphs,compile \
        --set "data.path=$data/msd_hippocampus"
    step 100 "$out/amp_hippocampus_3d_nondeterministic.txt" "$PYTHON" \
        benchmarks/amp_compile.py configs/hippocampus_3d.yaml --device "$device" \
        --steps "$steps" --variants fp32,fp16,bf16 \
        --set "data.path=$data/msd_hippocampus" --set train.deterministic=false
    step 150 "$out/amp_hippocampus_3d_batch128.txt" "$PYTHON" benchmarks/amp_compile.py \
        configs/hippocampus_3d.yaml --device "$device" --steps 20 \
        --variants fp32,fp32_no_tf32,fp16,bf16,fp32_cudagraphs,compile_cudagraphs \
        --set "data.path=$data/msd_hippocampus" --set train.batch_size=128 \
        --set train.deterministic=false
    [ "${RUNS:-1}" = 0 ] && { echo "results in $out (RUNS=0: no training runs)"; return 0; }
    rm -rf /tmp/gpu_check_pn /tmp/gpu_check_hippo
    step 180 "$out/run_hippocampus_3d.txt" "$PYTHON" -m medxfer run \
        configs/hippocampus_3d.yaml --output /tmp/gpu_check_hippo \
        --set "data.path=$data/msd_hippocampus" --set train.epochs=2 \
        --set "train.device=$device" --set eval.bootstrap=100
    cp /tmp/gpu_check_hippo/metrics.json "$out/metrics_hippocampus_3d.json" 2>/dev/null
    step 120 "$out/run_pneumonia.txt" "$PYTHON" -m medxfer run configs/pneumoniamnist.yaml \
        --output /tmp/gpu_check_pn --set "data.path=$data/pneumoniamnist.npz" \
        --set model.backbone.pretrained=none --set train.epochs=1 \
        --set "train.device=$device" --set eval.bootstrap=100
    cp /tmp/gpu_check_pn/metrics.json "$out/metrics_pneumonia.json" 2>/dev/null
    echo "results in $out"
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: bash scripts/gpu_check.sh prepare|run" >&2; exit 2 ;;
esac
