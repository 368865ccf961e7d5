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
$ python bench.py --mode=kv_heads --prompt_len=16 --max_new_tokens=240 # MHA, GQA, MQA side by side (see below)

With baseline=True (the default) the same model (same seed, same data) is first timed the way nanoGPT
runs on a CPU: fp32, F.scaled_dot_product_attention, the for-each (unfused) AdamW, torch's own dropout,
glibc's default allocator behaviour, and for sampling no KV cache. Then the settings asked for are timed, and the
speed-up is printed. The last line is a summary that scripts can parse: 'bench: key=value key=value ...'.
Keys that a training config sets but a benchmark does not need (out_dir, learning-rate schedule...)
are accepted and ignored, so that any config file can be benchmarked. A config that leaves the model
shape to train.py's defaults (config/gpt2.py: GPT-2 124M) or takes it from init_from gets this file's
defaults instead: give the shape, as above; the summary line names the shape that was timed.

In mode='sample' each variant generates one untimed short warm-up, then max_new_tokens timed
tokens (burnin_iters and measure_iters count training steps only). It also reports the KV cache's size: bytes
per token (keys and values of every layer, in the dtype generate() keeps the cache in) and for a full block at
batch_size.

mode='kv_heads' compares the n_kv_head values of kv_heads (multi-head, grouped-query, multi-query attention):
for each, this script runs itself once in mode='train' and twice in mode='sample' (batch 1 and kv_decode_batch),
each with baseline=False and the other settings given, and train.py kv_train_config (with the same cpu_threads)
for kv_train_seconds to a full val loss; then it prints one markdown table (docs/attention-variants.md).

Where a step's time goes on CPUs, and what was tried to shorten it: docs/cpu-speed.md; measured numbers:
docs/benchmarks.md.
"""
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from common import UserError, exit_on_user_error
from configurator import configure, script_settings
from device import (autocast_context, device_peak_flops, grad_scaler, keep_freed_memory, resolve_device, resolve_dtype,
                    set_cpu_threads, synchronize)
from model import GPT, GPTConfig, Dropout, OPTION_DEFAULTS, OVERFLOW_MODES, prepare_for_sampling, resolve_attn_impl
from tokens import GPT2_PADDED_VOCAB_SIZE, load_meta, open_tokens

# -----------------------------------------------------------------------------
mode = 'train' # 'train': forward, backward, optimizer step; 'sample': generate tokens; 'kv_heads': see above
baseline = True # first time the same model as nanoGPT runs it (fp32, SDPA, unfused AdamW, no KV cache): speed-ups
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
overflow = 'auto' # past block_size: 'auto' (sample.py's default), 'recompute' (nanoGPT's), 'slide', 'roll'
# comparing attention variants (mode='kv_heads')
kv_heads = '0 2 1' # the n_kv_head values compared, separated by spaces
kv_decode_batch = 16 # decoding is timed at batch 1 and at this batch
kv_train_config = 'config/shakespeare_char_cpu.py' # the training run of the loss column (its own model shape)
kv_train_seconds = 120.0 # train.py's max_seconds for each variant's loss; 0: no loss column
# train.py's other settings are accepted and ignored, so that any training config can be benchmarked
for _key, _value in script_settings(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train.py')).items():
    globals().setdefault(_key, _value)
# -----------------------------------------------------------------------------
exit_on_user_error() # bad settings and files end in one 'error: ...' line, not a traceback
configure(globals())
# -----------------------------------------------------------------------------

if mode not in ('train', 'sample', 'kv_heads'):
    raise UserError(f"mode={mode!r} is not one of 'train', 'sample', 'kv_heads'")
for name in ('batch_size', 'block_size', 'vocab_size', 'measure_iters', 'prompt_len', 'max_new_tokens',
             'kv_decode_batch'):
    if globals()[name] <= 0:
        raise UserError(f"{name}={globals()[name]} must be > 0")
if burnin_iters < 0:
    raise UserError(f"burnin_iters={burnin_iters} must be >= 0")
if replay and (mode != 'train' or compile):
    raise UserError("replay=True times the eager ops of one training step: use it with mode='train' and compile=False")
if overflow not in OVERFLOW_MODES:
    raise UserError(f"overflow={overflow!r} is not one of {', '.join(map(repr, OVERFLOW_MODES))}")

HERE = os.path.dirname(os.path.abspath(__file__))
KV_MODE_KEYS = ('mode', 'kv_heads', 'kv_decode_batch', 'kv_train_config', 'kv_train_seconds') # not passed on

def kv_head_values():
    """kv_heads as ints, each checked against n_head here and in kv_train_config, before minutes of measuring."""
    try:
        values = [int(v) for v in kv_heads.split()]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise UserError(f"kv_heads={kv_heads!r} must be n_kv_head values separated by spaces, e.g. '0 2 1'")
    if kv_train_seconds < 0:
        raise UserError(f"kv_train_seconds={kv_train_seconds} must be >= 0 (0: no loss column)")
    shapes = {'the timed model': n_head}
    if kv_train_seconds > 0:
        if not os.path.isfile(kv_train_config):
            raise UserError(f"kv_train_config={kv_train_config!r} is not a file: give a training config")
        shapes[kv_train_config] = {**script_settings(os.path.join(HERE, 'train.py')),
                                   **script_settings(kv_train_config)}['n_head']
    for where, heads in shapes.items():
        for k in values:
            if k > heads or heads % (k or heads):
                raise UserError(f"kv_heads: n_kv_head={k} does not divide the n_head={heads} of {where}: "
                                f"use divisors of n_head (0 = n_head)")
    return values

def run_script(name, *args):
    """Run one of this repository's scripts as a user would; its stdout, or an error that ends with its own."""
    p = subprocess.run([sys.executable, os.path.join(HERE, name), *args], capture_output=True, text=True)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or [f'exit status {p.returncode}'])[-1]
        raise UserError(f"python {name} {' '.join(args)} failed: {last}")
    return p.stdout

def bench_summary(*args):
    """The summary line of a run of this script, as a dict."""
    line = run_script('bench.py', *args).strip().splitlines()[-1]
    return dict(kv.split('=', 1) for kv in line[len('bench: '):].split())

def trained_loss(k):
    """(full val loss, steps) of train.py kv_train_config at n_kv_head=k after kv_train_seconds."""
    with tempfile.TemporaryDirectory() as out_dir:
        out = run_script('train.py', kv_train_config, f'--n_kv_head={k}', f'--max_seconds={kv_train_seconds}',
                         '--full_eval=True', f'--out_dir={out_dir}', f'--cpu_threads={cpu_threads}')
    found = re.search(r'full val loss ([0-9.]+) \(every block of val.bin, iter (\d+)\)', out)
    if found is None:
        raise RuntimeError(f"train.py printed no full val loss:\n{out[-2000:]}")
    return float(found.group(1)), int(found.group(2))

def attention_kind(k):
    if k in (0, n_head):
        return 'multi-head'
    return 'multi-query' if k == 1 else f'grouped-query ({n_head // k} query heads each)'

def compare_kv_heads(values):
    """mode='kv_heads': each n_kv_head timed by this script and trained by train.py, then one markdown table."""
    passed = [a for a in sys.argv[1:] if a.split('=', 1)[0].removeprefix('--') not in KV_MODE_KEYS]
    timed = {}
    for k in values: # the timings first, all together, so that they share the machine's conditions
        args = (*passed, '--baseline=False', f'--n_kv_head={k}')
        timed[k] = [bench_summary(*args, '--mode=train')] + [bench_summary(*args, '--mode=sample', f'--batch_size={b}')
                                                           for b in (1, kv_decode_batch)]
        print(f"n_kv_head={k}: training {timed[k][0]['tokens_per_s']} tokens/s, decoding "
              f"{timed[k][1]['tokens_per_s']} (batch 1) and {timed[k][2]['tokens_per_s']} tokens/s "
              f"(batch {kv_decode_batch})", flush=True)
    losses = {}
    for k in values if kv_train_seconds > 0 else ():
        losses[k] = trained_loss(k)
        print(f"n_kv_head={k}: full val loss {losses[k][0]:.4f} after {losses[k][1]} steps", flush=True)
    train, decode = timed[values[0]][0], timed[values[0]][2]
    print(f"\ntimed: {n_layer} layers, {n_head} heads, {n_embd} wide, block {block_size}, on {train['device']}; "
          f"training at batch {batch_size} in {train['dtype']}; decoding {decode['max_new_tokens']} tokens after a "
          f"{decode['prompt_len']}-token prompt, greedy, {decode['dtype']} weights, KV cache in "
          f"{decode['kv_cache_dtype']}")
    if losses:
        print(f"loss: python train.py {kv_train_config} --n_kv_head=K --max_seconds={kv_train_seconds:g} "
              f"--full_eval=True --cpu_threads={cpu_threads} (the config's own model shape)")
    print(f"\n| n_kv_head | attention | parameters | KV cache per token | KV cache, block at batch {kv_decode_batch} "
          f"| training tokens/s | decoding tokens/s, batch 1 | decoding tokens/s, batch {kv_decode_batch} "
          f"| full val loss (steps) |\n|---|---|---|---|---|---|---|---|---|")
    for k in values:
        train, one, many = timed[k]
        loss = f"{losses[k][0]:.4f} ({losses[k][1]:,})" if k in losses else '-'
        print(f"| {k} | {attention_kind(k)} | {int(train['params']):,} | {int(many['kv_bytes_per_token']):,} B "
              f"| {int(many['kv_bytes_per_block']) / 2**20:.1f} MiB | {float(train['tokens_per_s']):,.0f} "
              f"| {float(one['tokens_per_s']):,.0f} | {float(many['tokens_per_s']):,.0f} | {loss} |")
    first = float(timed[values[0]][2]['tokens_per_s'])
    print(f"\ndecoding at batch {kv_decode_batch}, against n_kv_head={values[0]}: " +
          ', '.join(f"n_kv_head={k} {float(timed[k][2]['tokens_per_s']) / first:.2f}x" for k in values[1:]))

if mode == 'kv_heads':
    compare_kv_heads(kv_head_values())
    sys.exit(0)

device = resolve_device(device)
dtype = resolve_dtype(dtype, device)
device_type = torch.device(device).type
attn_impl = resolve_attn_impl(attn_impl, device)
threads = set_cpu_threads(cpu_threads)

sync = lambda: synchronize(device)

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
    # the architecture options (n_kv_head, pos_emb, mlp, ...) are train.py's settings, read in above
    options = {k: v for k, v in globals().items() if k in OPTION_DEFAULTS}
    m = GPT(GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                      bias=bias, vocab_size=vocab_size, dropout=dropout, **options))
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

def training_step(model, step_dtype, fused, compiled, with_muon=False):
    """A function that runs one training step (forward, backward, optimizer) on the next batch, in step_dtype."""
    optimizer = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device_type, fused=fused, muon=with_muon)
    scaler = grad_scaler(device, step_dtype) # active for fp16 only
    ctx = autocast_context(device, step_dtype)
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
    print(f"replay: the step's {len(calls)} ops, each run again on its own with its inputs hot: "
          f"{total*1000:.1f} ms in all; "
          "largest: " + ', '.join(f"{name} {t*1000:.1f}" for name, t in largest))
    return total

KV_PAIR = 2 # a cached token holds a key and a value

def kv_cache_bytes_per_token(model, fixed_shape):
    """
    (bytes, dtype) of one token's keys and values in every layer, in the dtype generate() keeps the KV cache in
    for this model here (see GPT._new_kv_caches; call it in generate()'s autocast state).
    """
    cfg = model.config
    cache_dtype = model._new_kv_caches(1, torch.device(device), fixed_shape)[0].k.dtype # a one-row probe
    heads_per_layer, head_size = cfg.n_kv_head or cfg.n_head, cfg.n_embd // cfg.n_head
    return KV_PAIR * cfg.n_layer * heads_per_layer * head_size * cache_dtype.itemsize, cache_dtype

def time_sampling(model, ctx, cached, overflow, profiled, compiled=False):
    """One untimed short generation (which compiles, if compiled), then max_new_tokens timed ones. Returns tokens/s."""
    prompt = (batches[0][0][:, :prompt_len] if prompt_len <= block_size
              else torch.randint(vocab_size, (batch_size, prompt_len), device=device))
    generate = lambda n: model.generate(prompt, max_new_tokens=n, top_k=1, use_kv_cache=cached, overflow=overflow,
                                        compile=compiled)
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
               n_kv_head=n_kv_head, n_embd=n_embd, vocab_size=vocab_size, batch_size=batch_size, block_size=block_size)
if mode == 'train':
    tokens = batch_size * block_size
    summary.update(compile=compile, fused_adamw=fused_adamw, muon=muon)
    if baseline: # before keep_freed_memory, which cannot be undone in this process
        model = new_model('sdpa' if device_type == 'cpu' else attn_impl, plain=True)
        dt = time_training(training_step(model, 'float32', False, False), False)
        del model
        print(f"baseline (fp32, sdpa attention, for-each AdamW): {dt*1000:.1f} ms/iter, {tokens/dt:,.0f} tokens/s")
        summary.update(baseline_ms_per_iter=f"{dt*1000:.2f}", baseline_tokens_per_s=f"{tokens/dt:.0f}")
    if device_type == 'cpu':
        keep_freed_memory()
    model = new_model(attn_impl)
    print(f"device {device}, dtype {dtype}, attention {attn_impl}, {threads} CPU thread(s), "
          f"{model.get_num_params()/1e6:.2f}M parameters")
    summary['params'] = model.get_num_params()
    peak = device_peak_flops(device, dtype, peak_flops)
    step = training_step(model, dtype, fused_adamw, compile, muon)
    dt = time_training(step, profile)
    peak = device_peak_flops(device, dtype, peak_flops, remeasure=True) # before and after the run: the better of two
    mfu = model.estimate_mfu(batch_size, dt, peak)
    print(f"fast ({dtype}, {attn_impl} attention, fused_adamw={fused_adamw}, muon={muon}, compile={compile}): "
          f"{dt*1000:.1f} ms/iter, {tokens/dt:,.0f} tokens/s, MFU {mfu*100:.1f}% of a peak of {peak/1e9:.0f} GFLOP/s")
    summary.update(ms_per_iter=f"{dt*1000:.2f}", tokens_per_s=f"{tokens/dt:.0f}", mfu=f"{mfu*100:.2f}")
    if replay:
        summary['replay_ms'] = f"{replay_step(step)*1000:.2f}"
    if baseline:
        summary['speedup'] = f"{float(summary['baseline_ms_per_iter']) / (dt * 1000):.2f}"
        print(f"speed-up over the baseline: {summary['speedup']}x")
else:
    summary.update(prompt_len=prompt_len, max_new_tokens=max_new_tokens, kv_cache=kv_cache, overflow=overflow,
                   compile=compile)
    if baseline:
        model = new_model('sdpa' if device_type == 'cpu' else attn_impl, plain=True).eval()
        rate = time_sampling(model, fp32, False, 'recompute', False)
        del model
        print(f"baseline (fp32, no KV cache): {rate:.1f} tokens/s")
        summary['baseline_tokens_per_s'] = f"{rate:.1f}"
    if device_type == 'cpu':
        keep_freed_memory()
    model = new_model(attn_impl)
    n_params = model.get_num_params() # before prepare_for_sampling: its packed linears hold no nn.Parameter
    model = prepare_for_sampling(model, device, dtype, compile) # weights cast to dtype once: no autocast
    with fp32:
        kv_bytes, kv_dtype = kv_cache_bytes_per_token(model, compile)
    kv_block = kv_bytes * block_size * batch_size
    kv_dtype = str(kv_dtype).removeprefix('torch.')
    print(f"{n_params/1e6:.2f}M parameters; KV cache in {kv_dtype}, key/value heads per layer: "
          f"{n_kv_head or n_head}: {kv_bytes:,} bytes per token, {kv_block / 2**20:.2f} MiB for {block_size} tokens "
          f"at batch {batch_size}")
    summary.update(params=n_params, kv_cache_dtype=kv_dtype, kv_bytes_per_token=kv_bytes,
                   kv_bytes_per_block=kv_block)
    rate = time_sampling(model, fp32, kv_cache, overflow, profile, compile)
    print(f"fast ({dtype} weights, KV cache {kv_cache}, overflow={overflow}, compile={compile}): {rate:.1f} tokens/s")
    summary['tokens_per_s'] = f"{rate:.1f}"
    if baseline:
        summary['speedup'] = f"{rate / float(summary['baseline_tokens_per_s']):.2f}"
        print(f"speed-up over the baseline: {summary['speedup']}x")
print('bench: ' + ' '.join(f"{k}={v}" for k, v in summary.items()))
