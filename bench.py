"""
Time training steps or sampling of a GPT, on whatever device this machine has, against a plain
nanoGPT-style baseline timed in the same run.

$ python bench.py                                   # the shakespeare-char model shape, batch 8, random tokens
$ python bench.py config/shakespeare_char_cpu.py    # the model shape and batch of a training config
$ python bench.py config/gpt2.py --n_layer=12 --n_head=12 --n_embd=768 --vocab_size=50304 # shape from train.py's defaults
$ python bench.py --dtype=float32 --attn_impl=sdpa  # one setting changed
$ python bench.py --mode=sample --batch_size=1 --max_new_tokens=2000 --overflow=slide # generation
$ python bench.py --profile=True                     # a torch profiler trace and the per-op table
$ python bench.py --replay=True                      # the step's floor: every op of it timed again alone, hot
$ python bench.py --baseline=False                   # only the fast settings

With baseline=True (the default) the same model (same seed, same data) is first timed the way nanoGPT
runs on a CPU: fp32, F.scaled_dot_product_attention, the for-each (unfused) AdamW, torch's own dropout,
glibc's default allocator behaviour, and for sampling no KV cache. Then the settings asked for are timed, and the
speed-up is printed. The last line is a summary that scripts can parse: 'bench: key=value key=value ...'.
Keys that a training config sets but a benchmark does not need (out_dir, learning-rate schedule...)
are accepted and ignored, so that any config file can be benchmarked. A config that leaves the model
shape to train.py's defaults (config/gpt2.py: GPT-2 124M) or takes it from init_from gets this file's
defaults instead: give the shape, as above; the summary line names the shape that was timed.

In mode='sample' each variant generates one untimed short warm-up, then max_new_tokens timed
tokens (burnin_iters and measure_iters count training steps only).

On 2 cores of an Intel Sapphire Rapids with AMX (2026-12-02; bf16 matmuls at 2.6-3.0 TFLOP/s when their operands
are in cache, fp32 at ~390 GFLOP/s, memory copies at ~28 GB/s; the README has the measured table):
- Training, 6 layers/384 wide, block 256, batch 8, bf16, dropout 0 (~190-196 ms/step): the linear layers' matmuls
  take ~90 ms of it, not the ~50 ms their shapes take alone with contiguous operands. The same 2048x384 @ 384x1536
  matmul took 0.92 ms with its operands hot in cache and 1.6-1.75 ms after other work had evicted them; and the
  weight-gradient matmuls (g^T @ x, a reduction over 2048 tokens) run at 0.9-1.6 TFLOP/s where the forward runs
  at 2.6-3.0. The rest: GELU forward+backward ~25 ms, attention's bmm/baddbmm ~20 ms and softmax ~19 ms, LayerNorm
  and the autocast casts ~25 ms, fused AdamW ~7 ms. (The replay bullet below splits this further: most of the
  matmuls' excess is the transposed layouts autograd hands them, not the cache.)
- Helped: dropout. torch's bernoulli_ took ~10 ms per call on the 3.1M-element attention matrix, 194 ms of a
  403 ms step with dropout 0.2; model.Dropout's CPU mask (64 random bits per draw, compared as 16-bit slices)
  brought that step to ~250 ms.
- Did not help: a hand-written attention backward (one copy to lay q, k, v out by head and one to put their
  gradients back, no concatenation, no separate scaling): 188-195 ms/step with it and without, alternating runs;
  not kept. Query-chunked causal attention (skipping the masked half): slower, 6.5 -> 7.8 ms per layer with 2
  chunks. Transposed copies for the weight-gradient matmuls: bf16 transposes cost more than they save.
  fp32 activations with oneDNN's bf16 matmul math (torch.backends.mkldnn.matmul.fp32_precision='bf16', no
  autocast casts): 271 ms/step. torch.compile: 180-185 ms/step against 190-196 eager, after ~35 s of
  compiling; left off by default.
- Sampling with compile=True: drawing the next token inside the compiled step (argmax(probs / Exp(1)), which is
  how torch.multinomial draws one sample; inductor has no multinomial kernel and called back into Python for it,
  1.50 ms/step) took 650 to 684-708 tokens/s. Then compiling the step with mode='max-autotune-no-cudagraphs'
  took it to 1,054-1,143 tokens/s: inductor timed its C++ GEMM template with AMX micro-kernels against the
  oneDNN linear for each weight shape and kept the template (4-8 us per linear at batch 1; the 25 packed oneDNN
  linears alone take ~1.0 ms per token eager). The weights stay in cache from token to token, so this is not
  memory-bound. OMP_WAIT_POLICY=ACTIVE and GOMP_SPINCOUNT changed nothing; one thread: 505 tokens/s.
  max-autotune for the training step: 201 ms/step, no gain (its weights change every step: nothing to freeze).
- Why the 6-layer step stays above 136.5 ms (15,000 tokens/s), measured by a later session the same day (step
  212-226 ms then): replay=True puts the sum of its 861 ops, each re-run alone with hot inputs, at 149-166 ms
  (mm 73-81, bmm ~13, gelu_backward ~9, the fp32 + bf16 residual adds ~7, softmax ~7, AdamW ~6.5, casts ~6,
  cat ~4.5). The matmuls in autograd's layouts: forward (weight transposed) 1.5-2.3 TFLOP/s, weight gradient
  (gradient transposed) 1.0-1.5; contiguous, 1.6-3.0. torch's transposed copy of a 2048 x 1536 bf16 gradient
  takes 2.7-2.9 ms (0.65 ms as a compiled kernel), about what the better layout saves. Re-running an op
  straight after itself inside a real step: mm only ~10% faster, GELU 1.11 -> 0.78 ms (its isolated 0.60).
  Also tried, no gain or not kept: transparent huge pages for the heap (GLIBC_TUNABLES=glibc.malloc.hugetlb=1:
  203-215 ms either way); two processes of one thread and batch 4 each, at once (204-205 ms per step each, the
  same 10,000 tokens/s as one process of two threads: the two cores scale fully); the whole model cast to bf16,
  residual stream included, no autocast (186-193 ms eager, 169-178 compiled, replay floor ~136 ms; not kept: it
  rounds the residual stream to bf16 at every layer); SDPA for the attention (its flash forward takes 1.6 ms a
  layer against the math path's 2.0, but its backward 11 ms against ~4.3).

Where the time goes, and what was tried before (2 cores of an AMD EPYC with AVX512-BF16 and no AMX: bf16 matmuls
run at ~350-380 GFLOP/s, fp32 at ~170; the README has the measured tables):
- Training, 6 layers/384 wide, block 256, batch 8, bf16 (profile=True): the linear layers' matmuls (aten::mm)
  are ~65-70% of a step and already run at ~355 GFLOP/s, the machine's bf16 peak; attention's bmm/baddbmm
  another ~10%. So the matmul-bound floor here is ~420 ms/step (~4,900 tokens/s), not the ~49 ms that AMX
  would allow. The rest, per step: weight casts of autocast (copy_, ~25 ms), GELU forward+backward (~15-30 ms),
  softmax forward+backward (~10-18 ms), LayerNorm (~10 ms), fused AdamW (~8 ms), split/cat of q,k,v (~4 ms).
- Helped: bf16 autocast (matmuls 2.1x faster than fp32); the 'math' attention (baddbmm with the causal mask
  and scale folded in; SDPA's CPU backward is slower); fused AdamW (one kernel instead of many small ops);
  keep_freed_memory (glibc otherwise unmaps and page-faults the large activations in again every step:
  530 -> 465 ms/step on the 6-layer model, no change on the CPU config whose tensors are small).
- Checked, already fine: under CPU autocast softmax, GELU and LayerNorm already run in bf16 (only the
  cross-entropy is fp32, on a small (tokens x 65) tensor); threads: torch uses one per core (2), and
  1 thread was slower for both training and sampling.
- Did not help: torch.compile (default mode). Measured on the CPU config in bf16: 136 ms/step compiled vs 124
  eager, after ~45 s of compiling. Why, from the profile of the compiled step: the matmuls stay the same
  oneDNN/MKL extern kernels (mm+bmm ~93 ms/step compiled vs ~79 eager), and inductor's fused C++ kernels for
  everything else take ~34 ms/step, about what eager's separate elementwise ops cost (~40 ms). The step is
  matmul-bound, so fusing the rest can save at most that ~30%, and here it saved nothing.
  mode='max-autotune' was not tried (minutes of autotuning per shape on 2 cores).
- Sampling, batch 1: per token the model is 25 matrix-vector products plus ~150 small ops, so it is bound
  by per-call overhead, not FLOPs. Measured: F.linear in bf16 re-packs its weight for oneDNN on every call
  (2.0-2.2 ms per token for the 24 linears; pre-packed once, PackedLinear: 0.75-0.9 ms); a bf16 batched
  matmul with a key length it has not seen builds a new oneDNN kernel (~0.7 ms per call, and the key length
  grows every token), so the KV cache stays fp32 on CPUs (~14 us); autocast casting fp32 weights for each
  op was slower than a bf16 copy of the weights; past block_size, nanoGPT's exact cropping re-runs the whole
  block for every token, which overflow='slide' avoids (see GPT.generate for the trade-off).
- Sampling with compile=True: torch.compile of the one-token step, made shape-static (the KV cache is written
  at a position tensor and attended to whole under a mask, so one compile serves every token). Eager, the
  step is ~3.5 ms per token here, ~1.7 ms of it the 25 packed linears and the rest ~150 small ops and their
  Python overhead; compiled, those become a few fused C++ kernels. What each part needed, measured on the
  6-layer/384 model: SDPA with a mask lowers to a slow kernel (~150 us per call), plain matmul-softmax ~10 us;
  inductor's freezing packs the bf16 weights for oneDNN (without it: aten::mm at ~140 us per linear);
  cpp_wrapper drops the Python wrapper; skipping dynamo's guard checks after the first step of a call saves
  ~0.25 ms per token. Compiling takes ~15-40 s, so sample.py leaves compile=False by default. The floor:
  the 25 linears alone take ~1.2-1.4 ms per token (their 21 MB of bf16 weights stream from L3 each token).
"""
import os
import time

import numpy as np
import torch

from configurator import configure
from model import (GPT, GPTConfig, Dropout, GPT2_PADDED_VOCAB_SIZE, OVERFLOW_MODES, UserError, exit_on_user_error, open_tokens,
                   load_meta, resolve_device, resolve_dtype, resolve_attn_impl, set_cpu_threads, autocast_context,
                   device_peak_flops, keep_freed_memory, prepare_for_sampling)

# -----------------------------------------------------------------------------
mode = 'train' # 'train': forward, backward, optimizer step; 'sample': generate tokens
baseline = True # first time the same model the plain nanoGPT way (fp32, SDPA, unfused AdamW, no KV cache) and print speed-ups
batch_size = 8
block_size = 256
n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.0
bias = False
real_data = False # True: batches from data/<dataset>/train.bin; False: random tokens
dataset = 'shakespeare_char'
vocab_size = 65 # of the random tokens, when real_data=False
seed = 1337
device = 'auto' # 'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:0', 'mps'
dtype = 'auto' # 'auto' (bf16 where supported, else fp16 on GPUs, else fp32), 'float32', 'bfloat16', 'float16'
cpu_threads = 0 # intra-op threads on the CPU; 0 = torch's default, one per core
compile = False # torch.compile the model (mode='sample': the one-token decoding step, see GPT.generate)
attn_impl = 'auto' # 'sdpa', 'math', or 'auto' (sdpa on GPUs, math on CPUs)
fused_adamw = True # the fused AdamW kernel (False: the default for-each implementation)
muon = False # the fast run steps with Muon for the blocks' matrices, AdamW for the rest (as train.py's muon=True)
burnin_iters = 3 # untimed training steps first: allocation, autotuning, compilation
measure_iters = 10 # timed training steps
profile = False # run the torch profiler over the timed steps (or the generation) and write bench_trace.json
replay = False # mode='train': time every op of one step again on its own, inputs hot in cache, and sum them (see below)
peak_flops = 0.0 # the device's peak FLOP/s for MFU; 0 = a GPU table, or a matmul rate measured here
# sampling (mode='sample')
prompt_len = 1 # tokens in the prompt
max_new_tokens = 500
kv_cache = True # the fast run decodes with the KV cache (False: the whole context again for every token)
overflow = 'recompute' # past block_size: 'recompute' (exact, nanoGPT's output) or 'slide' (fast), see GPT.generate
# accepted so that training configs can be passed in, unused here
_ignored = dict(out_dir='', eval_interval=0, log_interval=0, eval_iters=0, eval_only=False, always_save_checkpoint=False,
                init_from='', wandb_log=False, wandb_project='', wandb_run_name='', gradient_accumulation_steps=0,
                learning_rate=0.0, max_iters=0, weight_decay=0.0, beta1=0.0, beta2=0.0, grad_clip=0.0, decay_lr=False,
                warmup_iters=0, lr_decay_iters=0, min_lr=0.0, backend='', full_eval=False, max_seconds=0.0,
                keep_last=0, unsafe_load=False, guard=False, guard_window=0, guard_zscore=0.0, guard_max_bad=0, guard_lr_factor=0.0)
globals().update(_ignored)
# -----------------------------------------------------------------------------
exit_on_user_error() # bad settings and files end in one 'error: ...' line, not a traceback
configure(globals())
# -----------------------------------------------------------------------------

if mode not in ('train', 'sample'):
    raise UserError(f"mode={mode!r} is not one of 'train', 'sample'")
for name in ('batch_size', 'block_size', 'vocab_size', 'measure_iters', 'prompt_len', 'max_new_tokens'):
    if globals()[name] <= 0:
        raise UserError(f"{name}={globals()[name]} must be > 0")
if burnin_iters < 0:
    raise UserError(f"burnin_iters={burnin_iters} must be >= 0")
if replay and (mode != 'train' or compile):
    raise UserError("replay=True times the eager ops of one training step: use it with mode='train' and compile=False")
if overflow not in OVERFLOW_MODES:
    raise UserError(f"overflow={overflow!r} is not one of {', '.join(map(repr, OVERFLOW_MODES))}")
device = resolve_device(device)
dtype = resolve_dtype(dtype, device)
device_type = torch.device(device).type
attn_impl = resolve_attn_impl(attn_impl, device)
threads = set_cpu_threads(cpu_threads)
ctx = autocast_context(device, dtype)

def sync():
    if device_type == 'cuda':
        torch.cuda.synchronize()

if real_data:
    data_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', dataset)
    data = open_tokens(data_dir, 'train', block_size + 1)
    meta = load_meta(data_dir)
    vocab_size = meta['vocab_size'] if meta else GPT2_PADDED_VOCAB_SIZE
    offsets = np.arange(block_size + 1)
    np.random.seed(seed)
    batches = [] # drawn once: the timed steps measure the model, not the data loader, and both runs see the same data
    for _ in range(burnin_iters + measure_iters):
        starts = np.random.randint(0, len(data) - block_size, size=batch_size)
        chunk = torch.from_numpy(data[starts[:, None] + offsets].astype(np.int64)).to(device)
        batches.append((chunk[:, :-1], chunk[:, 1:]))
else:
    torch.manual_seed(seed)
    fixed = torch.randint(vocab_size, (batch_size, block_size + 1), device=device)
    batches = [(fixed[:, :-1], fixed[:, 1:])]

def new_model(impl, plain=False):
    """The model to time; plain: as nanoGPT runs it (PyTorch's own dropout, which is slow on CPUs)."""
    torch.manual_seed(seed) # the baseline and the fast run start from the same weights
    m = GPT(GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                      bias=bias, vocab_size=vocab_size, dropout=dropout))
    m.set_attn_impl(impl)
    for module in m.modules():
        if isinstance(module, Dropout):
            module.fast_cpu = not plain
    return m.to(device)

def timed_profile(run):
    from torch.profiler import profile as torch_profile, ProfilerActivity
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device_type == 'cuda' else [])
    with torch_profile(activities=activities) as prof:
        run()
        sync()
    print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=25))
    prof.export_chrome_trace('bench_trace.json')
    print("wrote bench_trace.json (open it in chrome://tracing or https://ui.perfetto.dev)")

def training_step(model, ctx, fused, compiled, with_muon=False):
    """A function that runs one training step (forward, backward, optimizer) on the next batch."""
    optimizer = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device_type, fused=fused, muon=with_muon)
    scaler = torch.amp.GradScaler(device_type, enabled=(ctx is not None and dtype == 'float16'))
    train_model = torch.compile(model) if compiled else model
    step_no = [0]
    def step():
        X, Y = batches[step_no[0] % len(batches)]
        step_no[0] += 1
        with ctx:
            _, loss = train_model(X, Y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    return step

def time_training(step, profiled):
    """Burn-in steps, then measure_iters timed ones. Returns seconds per step."""
    def steps(n):
        for _ in range(n):
            step()
    steps(burnin_iters)
    sync()
    if profiled:
        timed_profile(lambda: steps(measure_iters))
    t0 = time.perf_counter()
    steps(measure_iters)
    sync()
    return (time.perf_counter() - t0) / measure_iters

REPLAY_REPEATS = 5 # each recorded op is run this many times; the median counts

def replay_step(step):
    """
    Record every aten op of one training step with a copy of its inputs, then run each again on its own,
    REPLAY_REPEATS times, and sum the medians. Each op then finds its inputs in cache and pays no Python
    overhead: the sum is what the step would take with these same ops if memory traffic between them and
    the interpreter cost nothing, a floor that no reordering of them can beat. Prints the largest ops;
    returns the sum in seconds. Needs memory for a copy of every op's inputs.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_map
    def copy(a): # a tensor with the same strides and offset in a fresh buffer (views stay views)
        if not isinstance(a, torch.Tensor):
            return a
        with torch.no_grad():
            buf = torch.empty(a.untyped_storage().nbytes() // a.element_size(), dtype=a.dtype, device=a.device)
            return buf.as_strided(a.size(), a.stride(), a.storage_offset()).copy_(a)
    calls = []
    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            calls.append((func, tree_map(copy, args), tree_map(copy, kwargs or {})))
            return func(*args, **(kwargs or {}))
    with Record():
        step()
    per_op = {}
    for func, args, kwargs in calls:
        times = []
        for _ in range(REPLAY_REPEATS):
            t0 = time.perf_counter()
            func(*args, **kwargs)
            sync()
            times.append(time.perf_counter() - t0)
        name = func.__name__.split('.')[0]
        per_op[name] = per_op.get(name, 0.0) + sorted(times)[REPLAY_REPEATS // 2]
    total = sum(per_op.values())
    largest = sorted(per_op.items(), key=lambda kv: -kv[1])[:8]
    print(f"replay: the step's {len(calls)} ops, each run again on its own with its inputs hot: {total*1000:.1f} ms in all; "
          "largest: " + ', '.join(f"{name} {t*1000:.1f}" for name, t in largest))
    return total

def time_sampling(model, ctx, cached, overflow, profiled, compiled=False):
    """One untimed short generation (which compiles, if compiled), then max_new_tokens timed ones. Returns tokens/s."""
    prompt = batches[0][0][:, :prompt_len] if prompt_len <= block_size else torch.randint(vocab_size, (batch_size, prompt_len), device=device)
    generate = lambda n: model.generate(prompt, n, top_k=1, use_kv_cache=cached, overflow=overflow, compile=compiled)
    with torch.no_grad(), ctx:
        t0 = time.perf_counter()
        generate(min(max_new_tokens, 16))
        sync()
        if compiled:
            print(f"warm-up generation, compiling included: {time.perf_counter() - t0:.1f} s")
        if profiled:
            timed_profile(lambda: generate(max_new_tokens))
        t0 = time.perf_counter()
        generate(max_new_tokens)
        sync()
    return batch_size * max_new_tokens / (time.perf_counter() - t0)

fp32 = autocast_context(device, 'float32')
summary = dict(mode=mode, device=device, dtype=dtype, attn=attn_impl, cpu_threads=threads, n_layer=n_layer, n_head=n_head,
               n_embd=n_embd, vocab_size=vocab_size, batch_size=batch_size, block_size=block_size)
if mode == 'train':
    tokens = batch_size * block_size
    summary.update(compile=compile, fused_adamw=fused_adamw, muon=muon)
    if baseline: # before keep_freed_memory, which cannot be undone in this process
        model = new_model('sdpa' if device_type == 'cpu' else attn_impl, plain=True)
        dt = time_training(training_step(model, fp32, False, False), False)
        del model
        print(f"baseline (fp32, sdpa attention, for-each AdamW): {dt*1000:.1f} ms/iter, {tokens/dt:,.0f} tokens/s")
        summary.update(baseline_ms_per_iter=f"{dt*1000:.2f}", baseline_tokens_per_s=f"{tokens/dt:.0f}")
    if device_type == 'cpu':
        keep_freed_memory()
    model = new_model(attn_impl)
    print(f"device {device}, dtype {dtype}, attention {attn_impl}, {threads} CPU thread(s), {model.get_num_params()/1e6:.2f}M parameters")
    peak = device_peak_flops(device, dtype, peak_flops)
    step = training_step(model, ctx, fused_adamw, compile, muon)
    dt = time_training(step, profile)
    peak = device_peak_flops(device, dtype, peak_flops, remeasure=True) # before and after the run: the better of two
    mfu = model.estimate_mfu(batch_size, dt, peak)
    print(f"fast ({dtype}, {attn_impl} attention, fused_adamw={fused_adamw}, muon={muon}, compile={compile}): "
          f"{dt*1000:.1f} ms/iter, {tokens/dt:,.0f} tokens/s, MFU {mfu*100:.1f}% of a measured {peak/1e9:.0f} GFLOP/s")
    summary.update(ms_per_iter=f"{dt*1000:.2f}", tokens_per_s=f"{tokens/dt:.0f}", mfu=f"{mfu*100:.2f}")
    if replay:
        summary['replay_ms'] = f"{replay_step(step)*1000:.2f}"
    if baseline:
        summary['speedup'] = f"{float(summary['baseline_ms_per_iter']) / (dt * 1000):.2f}"
        print(f"speed-up over the baseline: {summary['speedup']}x")
else:
    summary.update(prompt_len=prompt_len, max_new_tokens=max_new_tokens, kv_cache=kv_cache, overflow=overflow, compile=compile)
    if baseline:
        model = new_model('sdpa' if device_type == 'cpu' else attn_impl, plain=True).eval()
        rate = time_sampling(model, fp32, False, 'recompute', False)
        del model
        print(f"baseline (fp32, no KV cache): {rate:.1f} tokens/s")
        summary['baseline_tokens_per_s'] = f"{rate:.1f}"
    if device_type == 'cpu':
        keep_freed_memory()
    model = prepare_for_sampling(new_model(attn_impl), device, dtype, compile) # weights cast to dtype once: no autocast
    rate = time_sampling(model, fp32, kv_cache, overflow, profile, compile)
    print(f"fast ({dtype} weights, KV cache {kv_cache}, overflow={overflow}, compile={compile}): {rate:.1f} tokens/s")
    summary['tokens_per_s'] = f"{rate:.1f}"
    if baseline:
        summary['speedup'] = f"{rate / float(summary['baseline_tokens_per_s']):.2f}"
        print(f"speed-up over the baseline: {summary['speedup']}x")
print('bench: ' + ' '.join(f"{k}={v}" for k, v in summary.items()))
