"""
Time training steps or sampling of a GPT, on whatever device this machine has.

$ python bench.py                                   # the shakespeare-char model shape, batch 8, random tokens
$ python bench.py config/shakespeare_char_cpu.py    # the model shape and batch of a training config
$ python bench.py --dtype=float32 --attn_impl=sdpa  # one setting changed
$ python bench.py --mode=sample --max_new_tokens=500 # generation, with and without the KV cache
$ python bench.py --profile=True                     # a torch profiler trace and the top ops

The last line is a summary that scripts can parse: 'bench: key=value key=value ...'.
Keys that a training config sets but a benchmark does not need (out_dir, learning-rate schedule...)
are accepted and ignored, so that any config file can be benchmarked.
"""
import os
import time

import numpy as np
import torch

from configurator import configure
from model import (GPT, GPTConfig, UserError, exit_on_user_error, open_tokens, load_meta,
                   resolve_device, resolve_dtype, resolve_attn_impl, autocast_context, device_peak_flops)

# -----------------------------------------------------------------------------
mode = 'train' # 'train': forward, backward, optimizer step; 'sample': generate tokens
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
compile = False # torch.compile the model
attn_impl = 'auto' # 'sdpa', 'math', or 'auto' (sdpa on GPUs, math on CPUs)
fused_adamw = True # the fused AdamW kernel (False: the default for-each implementation)
burnin_iters = 3 # untimed steps first: allocation, autotuning, compilation
measure_iters = 10 # timed steps
profile = False # run the torch profiler over the timed steps and write a trace to bench_trace.json
peak_flops = 0.0 # the device's peak FLOP/s for MFU; 0 = a GPU table, or a matmul rate measured here
# sampling (mode='sample')
prompt_len = 1 # tokens in the prompt
max_new_tokens = 500
kv_cache = True # also time generation without the KV cache when True: both are reported
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
for name in ('batch_size', 'block_size', 'measure_iters'):
    if globals()[name] <= 0:
        raise UserError(f"{name}={globals()[name]} must be > 0")
if burnin_iters < 0:
    raise UserError(f"burnin_iters={burnin_iters} must be >= 0")
device = resolve_device(device)
dtype = resolve_dtype(dtype, device)
device_type = torch.device(device).type
attn_impl = resolve_attn_impl(attn_impl, device)
torch.manual_seed(seed)
ctx = autocast_context(device, dtype)

def sync():
    if device_type == 'cuda':
        torch.cuda.synchronize()

if real_data:
    data_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', dataset)
    data = open_tokens(data_dir, 'train', block_size + 1)
    meta = load_meta(data_dir)
    vocab_size = meta['vocab_size'] if meta else 50304
    offsets = np.arange(block_size + 1)
    def get_batch():
        starts = np.random.randint(0, len(data) - block_size, size=batch_size)
        chunk = torch.from_numpy(data[starts[:, None] + offsets].astype(np.int64)).to(device)
        return chunk[:, :-1], chunk[:, 1:]
else:
    fixed = torch.randint(vocab_size, (batch_size, block_size + 1), device=device)
    get_batch = lambda: (fixed[:, :-1], fixed[:, 1:])

model = GPT(GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                      bias=bias, vocab_size=vocab_size, dropout=dropout))
model.set_attn_impl(attn_impl)
model.to(device)
print(f"device {device}, dtype {dtype}, attention {attn_impl}, {model.get_num_params()/1e6:.2f}M parameters")
peak = device_peak_flops(device, dtype, peak_flops)

def run_timed(step, n_tokens):
    """Burn-in steps, then measure_iters timed ones (under the profiler if asked). Returns seconds per step."""
    for _ in range(burnin_iters):
        step()
    sync()
    if profile:
        from torch.profiler import profile as torch_profile, ProfilerActivity
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device_type == 'cuda' else [])
        with torch_profile(activities=activities, record_shapes=True) as prof:
            for _ in range(measure_iters):
                step()
            sync()
        print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=15))
        prof.export_chrome_trace('bench_trace.json')
        print("wrote bench_trace.json (open it in chrome://tracing or https://ui.perfetto.dev)")
    t0 = time.perf_counter()
    for _ in range(measure_iters):
        step()
    sync()
    return (time.perf_counter() - t0) / measure_iters

if mode == 'train':
    optimizer = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device_type, fused=fused_adamw)
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))
    train_model = torch.compile(model) if compile else model
    def train_step():
        X, Y = get_batch()
        with ctx:
            _, loss = train_model(X, Y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    dt = run_timed(train_step, batch_size * block_size)
    mfu = model.estimate_mfu(batch_size, dt, peak)
    print(f"bench: mode=train device={device} dtype={dtype} attn={attn_impl} compile={compile} fused_adamw={fused_adamw} "
          f"batch_size={batch_size} block_size={block_size} ms_per_iter={dt*1000:.2f} "
          f"tokens_per_s={batch_size*block_size/dt:.0f} mfu={mfu*100:.2f}")
else:
    if prompt_len <= 0 or max_new_tokens <= 0:
        raise UserError(f"prompt_len={prompt_len} and max_new_tokens={max_new_tokens} must both be > 0")
    model.eval()
    prompt = torch.randint(vocab_size, (batch_size, prompt_len), device=device)
    results = {}
    for cached in ([True, False] if kv_cache else [False]):
        def sample_step():
            with torch.no_grad(), ctx:
                model.generate(prompt, max_new_tokens, top_k=1, use_kv_cache=cached)
        dt = run_timed(sample_step, batch_size * max_new_tokens)
        results['kv_cache' if cached else 'no_cache'] = batch_size * max_new_tokens / dt
        print(f"{'with' if cached else 'without'} KV cache: {dt:.3f} s for {max_new_tokens} new tokens x {batch_size}, "
              f"{results['kv_cache' if cached else 'no_cache']:.1f} tokens/s")
    print(f"bench: mode=sample device={device} dtype={dtype} attn={attn_impl} batch_size={batch_size} "
          f"prompt_len={prompt_len} max_new_tokens={max_new_tokens} "
          + ' '.join(f"tokens_per_s_{k}={v:.1f}" for k, v in results.items()))
