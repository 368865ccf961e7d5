"""Device and precision: the device and dtype of a run, CPU threads and memory, torchrun ranks, peak FLOP/s for MFU.

One place for train.py, sample.py and bench.py. Capability questions (does this GPU run bf16 natively?) are asked
here only, so that every caller gets the same answer.
"""

import os
import re
import sys
import time
from contextlib import nullcontext

import torch

from common import UserError

PTDTYPE = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}
MPS_BF16_MACOS = (14, 0) # MPS runs bf16 from macOS 14 on


def resolve_device(device):
    """'auto' means cuda, then mps, then cpu. Anything else must exist on this machine."""
    if device == 'auto':
        if torch.cuda.is_available():
            return 'cuda'
        if torch.backends.mps.is_available():
            return 'mps'
        return 'cpu'
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"device={device!r} is not a device torch knows: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise UserError(f"device={device!r} but this machine has no CUDA GPU: use device='auto' or 'cpu'")
    if dev.type == 'cuda' and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"device={device!r} but only {torch.cuda.device_count()} GPU(s) are visible")
    if dev.type == 'mps' and not torch.backends.mps.is_available():
        raise UserError(f"device={device!r} but MPS is not available here: use device='auto' or 'cpu'")
    if dev.type not in ('cpu', 'cuda', 'mps'):
        raise UserError(f"device={device!r} is not supported: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    return device


def use_device(device):
    """Make device the current one where that matters (cuda:N), so that kernels, NCCL and new tensors go there."""
    if torch.device(device).type == 'cuda':
        torch.cuda.set_device(torch.device(device))


def torchrun_ranks(env=os.environ):
    """(rank, local_rank, world_size, local_world_size) as torchrun sets them in the environment; (0, 0, 1, 1) without."""
    if 'RANK' not in env:
        return 0, 0, 1, 1
    world_size = int(env['WORLD_SIZE'])
    return int(env['RANK']), int(env['LOCAL_RANK']), world_size, int(env.get('LOCAL_WORLD_SIZE', world_size))


def resolve_backend(backend):
    """The torch.distributed backend: 'auto' is nccl on CUDA and gloo otherwise."""
    if backend == 'auto':
        return 'nccl' if torch.cuda.is_available() else 'gloo'
    if backend == 'nccl' and not torch.cuda.is_available():
        raise UserError("backend='nccl' needs CUDA GPUs: use backend='gloo' (or 'auto') on the CPU")
    if backend not in ('nccl', 'gloo'):
        raise UserError(f"backend={backend!r} is not one of 'auto', 'nccl', 'gloo'")
    return backend


def torchrun_device(device, local_rank):
    """The device of one torchrun rank: its own GPU (cuda:local_rank) on CUDA, else the CPU or MPS asked for."""
    if device.startswith('cuda:'):
        raise UserError(f"device={device!r} names one GPU, but under torchrun each rank takes its own GPU "
                        f"(cuda:LOCAL_RANK): use device='cuda' or 'auto'")
    if device in ('auto', 'cuda') and torch.cuda.is_available():
        return f'cuda:{local_rank}'
    return resolve_device(device)


def check_fsdp(ddp, dtype, muon):
    """The settings that FSDP sharding cannot run with, each a one-line error."""
    if muon:
        raise UserError("muon=True needs each weight matrix whole (it orthogonalizes the update of the full matrix), "
                        "and fsdp=True shards them: use DDP (drop --fsdp) or AdamW (drop --muon)")
    if not ddp:
        raise UserError("fsdp=True shards the model across the processes that torchrun starts: "
                        "launch with torchrun --nproc_per_node=N train.py ..., or drop --fsdp")
    if dtype == 'float16':
        raise UserError("fsdp=True does not support dtype='float16' (torch.amp.GradScaler is not shard-aware): "
                        "use dtype='bfloat16' or 'float32'")


def set_cpu_threads(threads, ranks_here=1):
    """
    Set this process's intra-op threads for CPU work and return how many it has. threads > 0: that many.
    0: torch's default (one per core) for one process; for ranks_here > 1 processes on this machine (torchrun),
    the CPUs this process may use split evenly among them. More threads than cores made steps 3-5x slower
    (docs/benchmarks.md), and torchrun's own default of 1 thread leaves the rest of a bigger machine idle.
    """
    if threads < 0:
        raise UserError(f"cpu_threads={threads} must be >= 0 (0 = one per core, split among the ranks of this machine)")
    if threads == 0 and ranks_here > 1:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)
        threads = max(1, cpus // ranks_here)
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def cpu_supports_bf16():
    """
    True on CPUs with native bf16 instructions (AVX512-BF16 or AMX), where bf16 matmuls are
    2.5x (AVX512-BF16) to 10x (AMX) faster than fp32. Elsewhere bf16 is emulated and slower.
    """
    check = lambda name: bool(getattr(torch.cpu, name, lambda: False)())
    return check('_is_avx512_bf16_supported') or check('_is_amx_tile_supported')


def cuda_supports_bf16():
    """
    True on GPUs that run bf16 natively (Ampere and later). torch.cuda.is_bf16_supported() alone also
    says True on a T4 or V100, where bf16 is emulated: slow, and without flash attention.
    """
    return torch.cuda.is_bf16_supported(including_emulation=False)


def mps_supports_bf16():
    return torch.backends.mps.is_macos_or_newer(*MPS_BF16_MACOS)


def native_bf16(device):
    """Whether device runs bf16 at full speed (the CPU and GPU checks above; MPS from macOS 14)."""
    device_type = torch.device(device).type
    if device_type == 'cuda':
        return cuda_supports_bf16()
    if device_type == 'mps':
        return mps_supports_bf16()
    return cpu_supports_bf16()


def cpu_compiler():
    """
    The C++ compiler that torch.compile builds its CPU kernels with (g++, clang++, or $CXX), or None where this machine
    has none: there torch.compile fails at the first step, so callers run uncompiled instead.
    """
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError: # a torch that finds its compiler elsewhere: let torch.compile try
        return 'unknown'
    try:
        return get_cpp_compiler()
    except Exception: # InvalidCxxCompiler, or a Windows check that raises its own
        return None

def resolve_dtype(dtype, device):
    """
    'auto' means bf16 where the device runs it natively, else fp16 on CUDA (trained with a GradScaler),
    else fp32 (MPS included: its mixed precision is still young). An explicit dtype the device cannot run is an error.
    """
    device_type = torch.device(device).type
    if dtype == 'auto':
        if device_type == 'cuda':
            return 'bfloat16' if cuda_supports_bf16() else 'float16'
        if device_type == 'cpu':
            return 'bfloat16' if cpu_supports_bf16() else 'float32'
        return 'float32'
    if dtype not in PTDTYPE:
        raise UserError(f"dtype={dtype!r} is not one of 'auto', 'float32', 'bfloat16', 'float16'")
    if dtype == 'bfloat16' and device_type == 'cuda' and not cuda_supports_bf16():
        raise UserError("dtype='bfloat16' but this GPU has no native bf16 (it would be emulated, slowly): "
                        "use dtype='float16' or 'auto'")
    if dtype == 'bfloat16' and device_type == 'mps' and not mps_supports_bf16():
        raise UserError("dtype='bfloat16' needs macOS 14 or later on MPS: use dtype='float32' or 'auto'")
    if dtype == 'float16' and device_type == 'cpu':
        raise UserError("dtype='float16' is for GPUs, not the CPU: use 'bfloat16' or 'float32' (or 'auto')")
    if dtype == 'bfloat16' and device_type == 'cpu' and not cpu_supports_bf16():
        print("warning: this CPU has no native bf16 (AVX512-BF16 or AMX), so bfloat16 is emulated and runs "
              "many times slower than float32; dtype='auto' picks float32 here", file=sys.stderr)
    return dtype


def enable_tf32():
    """Let fp32 matmuls and convolutions on CUDA use TF32 tensor cores (10 mantissa bits, 8x the fp32 rate)."""
    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, 'conv', None)
    if hasattr(matmul, 'fp32_precision'): # torch 2.9+: the switches that replace allow_tf32
        matmul.fp32_precision = 'tf32'
        if conv is not None:
            conv.fp32_precision = 'tf32'
    else:
        matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast_context(device, dtype):
    """Mixed precision for the forward pass; a no-op context in fp32. It really runs on the CPU too."""
    if torch.device(device).type == 'cuda':
        enable_tf32()
    if dtype == 'float32':
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=PTDTYPE[dtype])


def grad_scaler(device, dtype):
    """A GradScaler that is active for fp16 only: its range is too small for raw gradients. Otherwise a no-op."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=dtype == 'float16')


def synchronize(device):
    """Wait until device has done its queued work (for timing)."""
    device_type = torch.device(device).type
    if device_type == 'cuda':
        torch.cuda.synchronize(device)
    elif device_type == 'mps':
        torch.mps.synchronize()


def shard_model(model, dtype):
    """
    FSDP2: shard every transformer block and then the rest (embeddings, ln_f, the tied lm_head) across the
    ranks; each block's full weights exist only while it runs. Computes in dtype, reduces gradients in fp32.
    fully_shard changes model in place (and moves its shards to the current device) and returns it.
    """
    from torch.distributed.fsdp import fully_shard, MixedPrecisionPolicy
    policy = MixedPrecisionPolicy(param_dtype=PTDTYPE[dtype], reduce_dtype=torch.float32)
    for block in model.transformer.h:
        fully_shard(block, mp_policy=policy)
    return fully_shard(model, mp_policy=policy)


# glibc malloc settings (mallopt's parameter numbers from malloc.h) for keep_freed_memory
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MALLOC_NEVER_TRIM = 2**31 - 1 # mallopt takes a C int: the largest, i.e. never give the heap's top back
MALLOC_MMAP_MAX = 32 * 2**20 # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit: smaller blocks come from the heap
MALLOC_TOP_PAD = 64 * 2**20 # grow the heap in big steps: fewer brk calls

_MALLOC_TUNED = False
def keep_freed_memory():
    """
    Stop glibc's malloc from handing freed memory back to the OS. A training step frees and re-allocates the
    same large activations every time; by default glibc trims the heap and unmaps big blocks when they are
    freed, so every step page-faults megabytes of fresh zeroed pages in again. Measured on the 6-layer/384,
    block 256, batch 8 model in bf16: 530 -> 465 ms/iter (docs/benchmarks.md). The process keeps its peak
    memory instead. Call it once in a process that runs on the CPU; it does nothing without glibc (macOS,
    Windows). Returns True if the settings were applied.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    import ctypes, ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError): # not glibc
        return False
    _MALLOC_TUNED = all(mallopt(param, value) == 1 for param, value in
                        ((M_MMAP_THRESHOLD, MALLOC_MMAP_MAX), (M_TRIM_THRESHOLD, MALLOC_NEVER_TRIM),
                         (M_TOP_PAD, MALLOC_TOP_PAD)))
    return _MALLOC_TUNED


# Dense (no sparsity) peak FLOP/s per GPU from the vendors' data sheets: (bf16/fp16 tensor cores, TF32 tensor cores
# or None where there are none, plain fp32). A name matches as a whole word, and the longest match wins, so that
# "H100 PCIe" is not taken for the SXM part and "L40" not for the L4.
GPU_PEAK_FLOPS = {
    'H200': (989e12, 495e12, 67e12), # SXM
    'H200 NVL': (835e12, 418e12, 60e12),
    'GH200': (989e12, 495e12, 67e12),
    'H100': (989e12, 495e12, 67e12), # SXM
    'H100 PCIe': (756e12, 378e12, 51e12),
    'H100 NVL': (835e12, 418e12, 60e12),
    'A100': (312e12, 156e12, 19.5e12),
    'A10': (125e12, 62.5e12, 31.2e12),
    'L40S': (362e12, 183e12, 91.6e12),
    'L40': (181e12, 90.5e12, 90.5e12),
    'L4': (121e12, 60e12, 30.3e12),
    'RTX 4090': (165e12, 82.6e12, 82.6e12),
    'RTX 3090': (71e12, 35.6e12, 35.6e12),
    'V100': (125e12, None, 15.7e12),
    'V100S': (130e12, None, 16.4e12),
    'T4': (65e12, None, 8.1e12),
}
_MEASURED_PEAK = {}

MATMUL_WARMUP_SECONDS = 0.2 # start the thread pool and reach full clocks before timing anything


def gpu_peak_flops(name, dtype):
    """
    The data-sheet peak of the GPU called name (torch.cuda.get_device_name) for dtype, or None if it is not in
    GPU_PEAK_FLOPS. fp32 counts against the TF32 peak where the GPU has TF32, since CUDA runs here with TF32 on.
    """
    matches = [key for key in GPU_PEAK_FLOPS if re.search(rf'(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])', name)]
    if not matches:
        return None
    half, tf32, fp32 = GPU_PEAK_FLOPS[max(matches, key=len)]
    if dtype != 'float32':
        return half
    return tf32 if tf32 is not None else fp32


def measure_matmul_flops(device, dtype, n=1024, iters=8, repeats=5):
    """FLOP/s of an n x n matmul in dtype, measured now (the best of a few tries): the practical peak."""
    # its own generator: train.py measures mid-run, and drawing from the global one would change the dropout masks
    g = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, dtype=PTDTYPE[dtype], generator=g) for _ in range(2))
    def timed(k):
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(k):
            a @ b
        synchronize(device)
        return time.perf_counter() - t0
    # warm up for a fixed time rather than a fixed count: long enough however fast one matmul is
    t_end = time.perf_counter() + MATMUL_WARMUP_SECONDS
    while time.perf_counter() < t_end:
        timed(1)
    return 2 * n**3 * iters / min(timed(iters) for _ in range(repeats))


def device_peak_flops(device, dtype, override=0.0, remeasure=False):
    """
    The denominator of MFU. override > 0 wins; then a GPU's data-sheet figure (gpu_peak_flops); anything else,
    the CPU and MPS included, gets a matmul rate measured on the spot in that dtype.
    """
    if override > 0:
        return override
    if torch.device(device).type == 'cuda':
        peak = gpu_peak_flops(torch.cuda.get_device_name(device), dtype)
        if peak is not None:
            return peak
    if torch.device(device).type == 'cpu' and not cpu_supports_bf16():
        # no bf16 units: bf16 is emulated far below the fp32 rate (measured: 0.9 vs 164 GFLOP/s on an AVX2-only
        # EPYC), so the hardware's peak is its fp32 rate, and a bf16 run's MFU shows how little of it is used
        dtype = 'float32'
    key = (str(device), dtype)
    if key not in _MEASURED_PEAK or remeasure: # a shared machine's rate swings: keep the best of every measurement
        _MEASURED_PEAK[key] = max(_MEASURED_PEAK.get(key, 0.0), measure_matmul_flops(device, dtype))
    return _MEASURED_PEAK[key]
