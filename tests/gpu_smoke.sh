#!/usr/bin/env bash
# A quick check of the GPU code paths with a tiny model: data preparation, training, resuming, torch.compile,
# bf16 and fp16, sampling, the benchmark's MFU, DDP and FSDP under torchrun. One line per step (PASS, FAIL or
# SKIP), then a summary; the exit status is 1 if any step failed. About 2-3 minutes on one GPU (docs/gpu.md).
#
#   bash tests/gpu_smoke.sh
#
# Without a CUDA GPU it prints SKIP and exits 0. Settings, from the environment:
#   GPU_SMOKE_DEVICE=cpu      run every step on the CPU instead (fp16 skipped, torchrun with 2 gloo processes),
#                             to check this script itself on a machine without a GPU; the default is cuda
#   GPU_SMOKE_STEP_TIMEOUT=N  a step still running after N seconds is killed and fails (default 240)
#   PYTHON=/path/to/python    the interpreter (default: python, else python3)
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

PY=${PYTHON:-$(command -v python || command -v python3)}
DEV=${GPU_SMOKE_DEVICE:-cuda}
LIMIT=${GPU_SMOKE_STEP_TIMEOUT:-240}
case $DEV in
    cuda) BACKEND=nccl ;;
    cpu) BACKEND=gloo ;;
    *) echo "FAIL setup: GPU_SMOKE_DEVICE must be cuda or cpu, not '$DEV'"; exit 1 ;;
esac
if [ -z "$PY" ] || ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "FAIL setup: no Python with torch found (set PYTHON=/path/to/python)"; exit 1
fi
if [ "$DEV" = cuda ] && ! "$PY" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    echo "SKIP: no CUDA GPU is present (torch.cuda.is_available() is False); nothing was checked"; exit 0
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/gpu_smoke.XXXXXX") || exit 1
if [ "$DEV" = cuda ]; then
    NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
    # native bf16 only: emulated bf16 is what train.py refuses
    BF16=$("$PY" -c '
import torch
try: print(int(torch.cuda.is_bf16_supported(including_emulation=False)))
except TypeError: print(int(torch.cuda.is_bf16_supported()))  # older torch: no including_emulation')
    "$PY" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s): {torch.cuda.get_device_name(0)}")'
    nvidia-smi >"$TMP/nvidia-smi.txt" 2>&1
else
    NGPU=2 BF16=1 # on the CPU, "GPUs" are torchrun's processes
    "$PY" -c 'import torch, os; print(f"torch {torch.__version__}, CPU only, {os.cpu_count()} cores (GPU_SMOKE_DEVICE=cpu)")'
fi
echo "logs in $TMP"

PASSED=() FAILED=() SKIPPED=()
T_START=$SECONDS

py() { # the interpreter, killed after $LIMIT s so that a hung step (say, a stuck collective) cannot stall the rest
    if command -v timeout >/dev/null; then timeout -k 10 "$LIMIT" "$PY" "$@"; else "$PY" "$@"; fi
}
step() { # step NAME CMD...: runs CMD with its output in $TMP/NAME.log, then prints one PASS or FAIL line
    local name=$1 t0=$SECONDS; shift
    LOG=$TMP/$name.log
    if "$@" >"$LOG" 2>&1; then
        echo "PASS $name ($((SECONDS - t0))s)"; PASSED+=("$name")
    else
        local rc=$?
        echo "FAIL $name ($((SECONDS - t0))s, exit $rc$([ $rc = 124 ] && echo ", timed out after ${LIMIT}s")): see $LOG"
        FAILED+=("$name")
    fi
}
skip() { echo "SKIP $1: $2"; SKIPPED+=("$1"); }
has() { # has REGEX: the current step's log has a matching line
    grep -qE -- "$1" "$LOG" || { echo "check failed: no line matching /$1/ in the output"; return 1; }
}
finished() { # finished OUT_DIR ITERS: the run evaluated step ITERS with finite losses and left OUT_DIR/ckpt.pt
    has "^step $2: train loss [0-9.]+, val loss [0-9.]+$" || return 1
    [ -s "$1/ckpt.pt" ] || { echo "check failed: no $1/ckpt.pt"; return 1; }
}

# the tiny model of every training step: 2 layers, 64 wide, 64 characters of context
TINY=(config/shakespeare_char.py --device="$DEV" --eval_interval=10 --eval_iters=5 --log_interval=5
      --n_layer=2 --n_head=2 --n_embd=64 --block_size=64 --batch_size=8 --compile=False)
train_tiny() { # train_tiny OUT_DIR ITERS [--key=value ...]
    local out=$1 iters=$2; shift 2
    py train.py "${TINY[@]}" --max_iters="$iters" --out_dir="$out" "$@" && finished "$out" "$iters"
}
torchrun_tiny() { # torchrun_tiny NPROC OUT_DIR ITERS [--key=value ...]: the same under torchrun (python -m torch.distributed.run)
    local n=$1 out=$2 iters=$3; shift 3
    py -m torch.distributed.run --standalone --nproc_per_node="$n" train.py "${TINY[@]}" --backend="$BACKEND" \
        --max_iters="$iters" --out_dir="$out" "$@" && finished "$out" "$iters" && has "^device .*, $n process\(es\)"
}
resume() { # continue the run of step 'train' (saved at iter 30) to iter 40
    train_tiny "$TMP/out" 40 --init_from=resume && has "^loaded the checkpoint of iter 30 " && has "^iter 3[0-9]: loss"
}
sample() { # sample [--key=value ...]: one short sample of the 'train' run's checkpoint, which must not be empty
    py sample.py --out_dir="$TMP/out" --num_samples=1 --max_new_tokens=50 --device="$DEV" "$@" >"$LOG.stdout"
    local rc=$?
    cat "$LOG.stdout"
    [ $rc = 0 ] || return $rc
    has '^---------------$' || return 1
    [ "$(grep -v -e '^Loading meta' -e '^---------------$' "$LOG.stdout" | tr -d '[:space:]' | wc -c)" -gt 0 ] ||
        { echo "check failed: the sample is empty"; return 1; }
}
bench() {
    py bench.py --device="$DEV" --n_layer=2 --n_head=2 --n_embd=64 --block_size=64 --batch_size=8 --compile=False &&
        has "MFU [0-9.]+%" && has "^bench: .*mfu=[0-9.]+"
}

step prepare py data/shakespeare_char/prepare.py
# always_save_checkpoint: the resume step can then count on a checkpoint of iter 30
step train train_tiny "$TMP/out" 30 --always_save_checkpoint=True
step resume resume
step compile train_tiny "$TMP/out_compile" 20 --compile=True
if [ "$BF16" = 1 ]; then
    step bf16 train_tiny "$TMP/out_bf16" 20 --dtype=bfloat16
else
    skip bf16 "this GPU has no native bf16"
fi
if [ "$DEV" = cuda ]; then
    step fp16 train_tiny "$TMP/out_fp16" 20 --dtype=float16
else
    skip fp16 "float16 is for GPUs (train.py refuses it on the CPU)"
fi
step sample sample
step sample_compile sample --compile=True
step bench bench
if [ "$NGPU" -ge 2 ]; then
    step ddp torchrun_tiny 2 "$TMP/out_ddp" 20 --gradient_accumulation_steps=2
else
    skip ddp "needs 2 GPUs, this machine has $NGPU"
fi
# FSDP takes bf16 or fp32, not fp16; gradient_accumulation_steps must be a multiple of the process count
N=$((NGPU < 2 ? NGPU : 2))
step fsdp torchrun_tiny "$N" "$TMP/out_fsdp" 20 --fsdp=True --gradient_accumulation_steps="$N" \
    --dtype="$([ "$BF16" = 1 ] && echo bfloat16 || echo float32)"

echo "summary: ${#PASSED[@]} passed, ${#FAILED[@]} failed, ${#SKIPPED[@]} skipped, $((SECONDS - T_START))s; logs in $TMP"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "FAIL: ${FAILED[*]}"
    exit 1
fi
echo "PASS"
