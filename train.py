"""
Train a GPT. Runs on one device, or on many under torchrun with DDP.

One process (a laptop CPU, one GPU):
$ python train.py config/shakespeare_char_cpu.py --batch_size=32

DDP on 4 GPUs of one node:
$ torchrun --standalone --nproc_per_node=4 train.py config/gpt2.py

DDP on 2 nodes of 8 GPUs (run on both, node_rank 0 and 1; IP of the first node):
$ torchrun --nproc_per_node=8 --nnodes=2 --node_rank=0 --master_addr=123.456.123.456 --master_port=1234 train.py
(Without Infiniband, prepend NCCL_IB_DISABLE=1.) A model too big for one GPU: add --fsdp=True (README: Multi-GPU).

Every setting below can be overridden by config files and --key=value (see configurator.py);
python train.py --help lists them.
"""

import math
import os
import sys
import time
from datetime import timedelta

import numpy as np
import torch
import torch.distributed.nn # before init_process_group: see the end of this file
from torch.distributed import init_process_group, destroy_process_group, all_reduce
from torch.nn.parallel import DistributedDataParallel as DDP

from configurator import configure, config_keys
from model import (GPT, GPTConfig, MODEL_ARGS, GELU_KEY, GPT2_SIZES, GPT2_VOCAB_SIZE, GPT2_PADDED_VOCAB_SIZE, UserError,
                   exit_on_user_error, cosine_lr, load_meta, meta_file, open_tokens, is_pretrained, resolve_device,
                   resolve_dtype, resolve_attn_impl, set_cpu_threads, autocast_context, device_peak_flops, step_windows,
                   shard_model, full_state_dicts, load_model_state, load_optimizer_state, save_run_checkpoint, load_checkpoint,
                   clean_state_dict, prepare_out_dir, first_line, rng_state, restore_rng_state, LossGuard, GracefulStop,
                   resume_command, keep_freed_memory)

# -----------------------------------------------------------------------------
# default config values: train a GPT-2 (124M) on OpenWebText, as nanoGPT does
# I/O
out_dir = 'out'
eval_interval = 2000
log_interval = 1
eval_iters = 200
eval_only = False # if True, script exits right after the first eval
always_save_checkpoint = True # if True, always save a checkpoint after each eval
init_from = 'scratch' # 'scratch', 'resume', 'gpt2' ('-medium', '-large', '-xl'), or a local Hugging Face GPT-2 directory
full_eval = False # also report the loss over every block of val.bin, after training (or with eval_only)
keep_last = 0 # also keep the last keep_last checkpoints as ckpt_<iter>.pt (ckpt.pt is the latest, best.pt the best eval)
unsafe_load = False # True: resume from a checkpoint that holds more than tensors and plain values (can run code: trusted files only)
# wandb logging
wandb_log = False # disabled by default
wandb_project = 'owt'
wandb_run_name = 'gpt2' # 'run' + str(time.time())
# data
dataset = 'openwebtext'
gradient_accumulation_steps = 5 * 8 # used to simulate larger batch sizes
batch_size = 12 # if gradient_accumulation_steps > 1, this is the micro-batch size
block_size = 1024
seed = 1337
# model
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0 # for pretraining 0 is good, for finetuning try 0.1+
bias = False # do we use bias inside LayerNorm and Linear layers?
attn_impl = 'auto' # 'sdpa' (fused kernel), 'math' (matmul-mask-softmax), 'auto': sdpa on GPUs, math on CPUs (faster there)
# adamw optimizer
learning_rate = 6e-4 # max learning rate
max_iters = 600000 # total number of training iterations
max_seconds = 0.0 # a time budget: stop after this many seconds of training (evals included), the cosine LR decay spread over that time; 0 = off
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0 # clip gradients at this value, or disable if == 0.0
muon = False # True: Muon (torch.optim.Muon) for the blocks' weight matrices, AdamW for the rest; fewer steps to a loss (README: Muon)
# learning rate decay settings
decay_lr = True # whether to decay the learning rate
warmup_iters = 2000 # how many steps to warm up for
lr_decay_iters = 600000 # should be ~= max_iters per Chinchilla
min_lr = 6e-5 # minimum learning rate, should be ~= learning_rate/10 per Chinchilla
# system
backend = 'auto' # DDP backend: 'nccl', 'gloo', or 'auto' (nccl on CUDA, gloo otherwise)
device = 'auto' # 'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:0', 'mps'
dtype = 'auto' # 'auto' (bf16 where supported, else fp16 on GPUs, else fp32), 'float32', 'bfloat16', 'float16'
compile = True # use PyTorch 2.0 to compile the model to be faster
cpu_threads = 0 # intra-op threads per process on the CPU; 0 = one per core, under torchrun split among this machine's ranks
fsdp = False # under torchrun: shard weights, gradients and optimizer state across the ranks (FSDP2), for models too big for one device
grad_checkpointing = False # recompute each block's activations in backward: less memory for one more forward pass
peak_flops = 0.0 # the device's peak FLOP/s for MFU; 0 = a GPU table, or a matmul rate measured here
# loss-spike and NaN guard: skip an update whose loss or gradient norm is NaN/inf or whose loss spikes
guard = True # costs one host-device sync per step
guard_window = 100 # a spike: a loss more than guard_zscore standard deviations above the mean of the last guard_window good steps
guard_zscore = 6.0
guard_max_bad = 5 # after this many bad steps in a row: reload out_dir/ckpt.pt and scale the learning rate by guard_lr_factor
guard_lr_factor = 0.5
# -----------------------------------------------------------------------------
exit_on_user_error() # bad settings and files end in one 'error: ...' line, not a traceback
changed = configure(globals())
config = config_keys(globals()) # the resolved settings, for logging and checkpoints
# -----------------------------------------------------------------------------

if init_from not in ('scratch', 'resume') and not is_pretrained(init_from):
    raise UserError(f"init_from={init_from!r} is not supported: use 'scratch', 'resume', one of {', '.join(GPT2_SIZES)}, "
                    f"or a directory holding a Hugging Face GPT-2")
for name in ('batch_size', 'block_size', 'gradient_accumulation_steps', 'eval_interval', 'log_interval', 'eval_iters',
             'guard_window', 'guard_zscore', 'guard_max_bad'):
    if globals()[name] <= 0:
        raise UserError(f"{name}={globals()[name]} must be > 0")
if keep_last < 0:
    raise UserError(f"keep_last={keep_last} must be >= 0 (0 keeps no ckpt_<iter>.pt history)")
for name in ('learning_rate', 'min_lr', 'weight_decay', 'grad_clip', 'warmup_iters', 'lr_decay_iters', 'seed', 'max_iters',
             'max_seconds'):
    if globals()[name] < 0: # a negative grad_clip would flip the gradients, not clip them
        raise UserError(f"{name}={globals()[name]} must be >= 0" + (" (0 turns clipping off)" if name == 'grad_clip' else ""))
for name in ('beta1', 'beta2'):
    if not 0 <= globals()[name] < 1:
        raise UserError(f"{name}={globals()[name]} must be in [0, 1): AdamW's moving-average factor")
if not 0 < guard_lr_factor <= 1:
    raise UserError(f"guard_lr_factor={guard_lr_factor} must be in (0, 1]: the learning rate is multiplied by it after a rollback")

# various inits, derived attributes, I/O setup
ddp = int(os.environ.get('RANK', -1)) != -1 # is this a ddp run?
if ddp:
    ddp_rank = int(os.environ['RANK'])
    ddp_local_rank = int(os.environ['LOCAL_RANK'])
    ddp_world_size = int(os.environ['WORLD_SIZE'])
    if backend == 'auto':
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
    if backend == 'nccl' and not torch.cuda.is_available():
        raise UserError("backend='nccl' needs CUDA GPUs: use backend='gloo' (or 'auto') on the CPU")
    device = f'cuda:{ddp_local_rank}' if torch.cuda.is_available() and device in ('auto', 'cuda') else resolve_device(device)
    if device.startswith('cuda'):
        torch.cuda.set_device(device)
    if gradient_accumulation_steps % ddp_world_size != 0:
        raise UserError(f"gradient_accumulation_steps={gradient_accumulation_steps} is not divisible by the world size "
                        f"{ddp_world_size}: use a multiple of {ddp_world_size} (each rank runs an equal share of the micro-steps)")
    master_process = ddp_rank == 0 # this process will do logging, checkpointing etc.
    seed_offset = ddp_rank # each process gets different dropout masks
    gradient_accumulation_steps //= ddp_world_size
else:
    # if not ddp, we are running on a single gpu, and one process
    ddp_rank, master_process, seed_offset, ddp_world_size = 0, True, 0, 1
    device = resolve_device(device)
if fsdp and muon:
    raise UserError("muon=True needs each weight matrix whole (it orthogonalizes the update of the full matrix), "
                    "and fsdp=True shards them: use DDP (drop --fsdp) or AdamW (drop --muon)")
if fsdp and not ddp:
    raise UserError("fsdp=True shards the model across the processes that torchrun starts: "
                    "launch with torchrun --nproc_per_node=N train.py ..., or drop --fsdp")
if fsdp and (resolve_dtype(dtype, device) if dtype == 'auto' else dtype) == 'float16': # 'auto' gives fp16 on pre-bf16 GPUs
    raise UserError("fsdp=True does not support dtype='float16' (torch.amp.GradScaler is not shard-aware): "
                    "use dtype='bfloat16' or 'float32'")
dtype = resolve_dtype(dtype, device)
threads = set_cpu_threads(cpu_threads, int(os.environ.get('LOCAL_WORLD_SIZE', 1)) if ddp else 1)
if ddp: # joined only after every check above, so that no rank waits for one that failed a check
    # a rank that dies makes the others fail after this timeout instead of hanging forever
    init_process_group(backend=backend, timeout=timedelta(minutes=10))
device_type = torch.device(device).type
attn_impl = resolve_attn_impl(attn_impl, device)
tokens_per_iter = gradient_accumulation_steps * ddp_world_size * batch_size * block_size
if master_process:
    print(f"device {device}, dtype {dtype}, {ddp_world_size} process(es), {threads} CPU thread(s) each, attention {attn_impl}")
    print(f"tokens per iteration will be: {tokens_per_iter:,}")
    # a missing out_dir to resume from is reported when its ckpt.pt is loaded
    for name in prepare_out_dir(out_dir, create=init_from != 'resume'):
        print(f"removed {name}: an unfinished save of a run that was killed (the checkpoint it was replacing is intact)")
    if init_from != 'resume' and os.path.exists(os.path.join(out_dir, 'ckpt.pt')): # nanoGPT replaces it silently
        print(f"warning: {out_dir} holds an earlier run's ckpt.pt, which this new run replaces at its first save "
              f"(to continue that run instead: --init_from=resume; to keep it: another --out_dir)")
torch.manual_seed(seed) # the same initial weights on every rank (FSDP does not broadcast them as DDP does)
ctx = autocast_context(device, dtype)
if device_type == 'cpu':
    keep_freed_memory() # no page faults for the same activations every step (see model.py)

# data: the token ids stay on disk as memmaps, opened once
data_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', dataset)
if not os.path.isdir(data_dir):
    raise UserError(f"dataset {dataset!r} not found: no directory {data_dir} (prepare one with python data/<name>/prepare.py)")
splits = {split: open_tokens(data_dir, split, block_size + 1) for split in ('train', 'val')}
SPLIT_IDS = {'train': 0, 'val': 1}
offsets = np.arange(block_size + 1)

def get_batch(split, step, micro_step=0, for_eval=False):
    """
    One micro-batch of this rank. The windows of a whole step come from one random stream
    seeded by (seed, split, eval or train, step): every rank and micro-step takes its own slice of them, so
    ranks draw disjoint parts of the stream, the data order does not depend on the world size, and a
    resumed run sees the same batches it would have seen without stopping.
    """
    data = splits[split]
    n_micro = 1 if for_eval else gradient_accumulation_steps * ddp_world_size # an eval batch is the same on every rank
    k = 0 if for_eval else ddp_rank * gradient_accumulation_steps + micro_step
    starts = step_windows([seed, SPLIT_IDS[split], int(for_eval), step], n_micro * batch_size, len(data) - block_size)
    chunk = torch.from_numpy(data[starts[k * batch_size:(k + 1) * batch_size, None] + offsets].astype(np.int64))
    x, y = chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()
    if device_type == 'cuda':
        # pin arrays x,y, which allows us to move them to GPU asynchronously (non_blocking=True)
        x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    else:
        x, y = x.to(device), y.to(device) # a no-op on the CPU
    return x, y

# init these up here, can override if init_from='resume' (i.e. from a checkpoint)
iter_num = 0
best_val_loss = 1e9
train_seconds = 0.0

# the vocab size comes from the dataset's meta.pkl if it has one (char-level), else GPT-2's, padded
meta = load_meta(data_dir)
meta_vocab_size = meta['vocab_size'] if meta else None
if meta_vocab_size is not None and master_process:
    print(f"found vocab_size = {meta_vocab_size} (inside {meta_file(data_dir)})")

model_args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                  bias=bias, vocab_size=None, dropout=dropout) # start with model_args from command line
checkpoint = None
if init_from == 'scratch':
    if master_process:
        print("Initializing a new model from scratch")
    model_args['vocab_size'] = meta_vocab_size if meta_vocab_size is not None else GPT2_PADDED_VOCAB_SIZE
    model = GPT(GPTConfig(**model_args))
elif init_from != 'resume':
    if master_process:
        print(f"Initializing from GPT-2 weights: {init_from}")
    if meta_vocab_size is not None and init_from in GPT2_SIZES: # said before a download of OpenAI's weights
        raise UserError(f"dataset {dataset!r} has its own vocabulary (meta.pkl, {meta_vocab_size} tokens) but GPT-2 weights "
                        f"need GPT-2 BPE tokens: use a GPT-2 dataset such as dataset='shakespeare'")
    model = GPT.from_pretrained(init_from, dict(dropout=dropout))
    # a local directory may hold any vocabulary (export_hf of a char-level model): it must be the dataset's
    if meta_vocab_size is not None and meta_vocab_size != model.config.vocab_size:
        raise UserError(f"dataset {dataset!r} has its own vocabulary ({meta_vocab_size} tokens) but the weights {init_from} "
                        f"have vocab_size {model.config.vocab_size}: use the dataset they were trained on")
    if meta_vocab_size is None and model.config.vocab_size < GPT2_VOCAB_SIZE:
        raise UserError(f"dataset {dataset!r} has no meta.pkl, so its tokens are GPT-2's ({GPT2_VOCAB_SIZE:,} ids), but the "
                        f"weights {init_from} have vocab_size {model.config.vocab_size}: use the dataset they were trained on")
    # the architecture is the weights'; a setting the user gave that contradicts it is an error
    for k in ('n_layer', 'n_head', 'n_embd', 'bias'):
        if k in changed and changed[k] != getattr(model.config, k):
            raise UserError(f"{k}={changed[k]} but the GPT-2 weights {init_from} have {k}={getattr(model.config, k)}: drop --{k}")
    if block_size > model.config.block_size:
        raise UserError(f"block_size={block_size} is larger than the {model.config.block_size} positions of {init_from}: "
                        f"use block_size <= {model.config.block_size}")
    model_args = {k: getattr(model.config, k) for k in MODEL_ARGS} # so the checkpoint can rebuild it
else:
    ckpt_path = os.path.join(out_dir, 'ckpt.pt')
    if master_process:
        print(f"Resuming training from {ckpt_path}")
    t_load = time.time()
    # fsdp: the full model is built on the CPU, and shard_model moves each rank's shard to the device
    model, checkpoint = GPT.from_checkpoint(ckpt_path, 'cpu' if fsdp else device, unsafe=unsafe_load, dropout=dropout)
    ckpt_args = checkpoint['model_args']
    # the architecture is the checkpoint's; a setting the user gave that contradicts it is an error
    for k in ('n_layer', 'n_head', 'n_embd', 'bias'):
        if k in changed and changed[k] != ckpt_args[k]:
            raise UserError(f"{k}={changed[k]} but the checkpoint in {out_dir} has {k}={ckpt_args[k]}: drop --{k} to resume it")
    if block_size > ckpt_args['block_size']:
        raise UserError(f"block_size={block_size} is larger than the checkpoint's {ckpt_args['block_size']}: "
                        f"a model cannot attend further than it was built for; use block_size <= {ckpt_args['block_size']}")
    ckpt_muon = bool((checkpoint.get('config') or {}).get('muon', False)) # nanoGPT's checkpoints: AdamW
    if muon != ckpt_muon:
        raise UserError(f"muon={muon} but the run in {out_dir} was trained with muon={ckpt_muon}, and its saved optimizer "
                        f"state is for that optimizer: resume with --muon={ckpt_muon}")
    if meta_vocab_size is not None and meta_vocab_size != ckpt_args['vocab_size']:
        raise UserError(f"dataset {dataset!r} has vocab_size {meta_vocab_size} but the checkpoint in {out_dir} has "
                        f"{ckpt_args['vocab_size']}: resume with the dataset it was trained on")
    if meta_vocab_size is None and ckpt_args['vocab_size'] < GPT2_VOCAB_SIZE:
        raise UserError(f"dataset {dataset!r} has no meta.pkl, so its tokens are GPT-2's ({GPT2_VOCAB_SIZE:,} ids), but the "
                        f"checkpoint in {out_dir} has vocab_size {ckpt_args['vocab_size']}: resume with the dataset it was trained on")
    model_args = {k: ckpt_args[k] for k in MODEL_ARGS}
    model_args['dropout'] = dropout
    iter_num = checkpoint['iter_num']
    best_val_loss = float(checkpoint['best_val_loss'])
    train_seconds = float(checkpoint.get('train_seconds', 0.0))
    resume_rng, resume_guard = checkpoint.get('rng'), checkpoint.get('guard') # absent in nanoGPT's checkpoints
    if master_process:
        print(f"loaded the checkpoint of iter {iter_num} in {time.time() - t_load:.2f}s")
        if iter_num >= max_iters:
            print(f"the run is already at max_iters={max_iters}: raise --max_iters to train it further")
        elif max_seconds > 0 and train_seconds >= max_seconds:
            print(f"the run has already trained its max_seconds={max_seconds:g} ({train_seconds:.0f}s): "
                  f"raise --max_seconds to train it further")
# crop down the model block size if desired, using model surgery
if block_size < model.config.block_size:
    model.crop_block_size(block_size)
    model_args['block_size'] = block_size # so that the checkpoint will have the right value
model.set_attn_impl(attn_impl)
model.grad_checkpointing = grad_checkpointing
if fsdp:
    model = shard_model(model, dtype) # every rank built the same full model on the CPU; each keeps its shard
else:
    model.to(device)
if seed_offset: # dropout masks differ per rank
    torch.manual_seed(seed + seed_offset)

# initialize a GradScaler. If enabled=False scaler is a no-op
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))

# optimizer
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type, muon=muon)
if checkpoint is not None:
    load_optimizer_state(model, optimizer, checkpoint['optimizer'], fsdp)
    if checkpoint.get('scaler') and scaler.is_enabled():
        scaler.load_state_dict(checkpoint['scaler'])
checkpoint = None # free up memory

# compile the model
raw_model = model # the unwrapped model: its state_dict has clean names
if compile:
    if master_process:
        print("compiling the model... (takes a ~minute)")
    model = torch.compile(model)
# wrap model into DDP container (FSDP already wrapped it in place)
if ddp and not fsdp:
    model = DDP(model, device_ids=[ddp_local_rank] if device_type == 'cuda' else None)

@torch.no_grad()
def mean_loss(net, n, batch):
    """
    The loss over batches 0..n-1 (batch(i) gives X, Y), weighted by their rows. Rank r computes batches
    r, r+W, r+2W, ... and the sums are all-reduced, so every rank gets what one process gets, W times sooner.
    A rank with one batch fewer runs its last batch again uncounted: FSDP's forward needs every rank.
    """
    total = torch.zeros(2, dtype=torch.float64, device=device) # sum of loss * rows, rows
    net.eval()
    for i in range(ddp_rank, math.ceil(n / ddp_world_size) * ddp_world_size, ddp_world_size):
        X, Y = batch(min(i, n - 1))
        with ctx:
            _, loss = net(X, Y)
        if i < n:
            total += torch.tensor([loss.item() * len(X), len(X)], dtype=torch.float64, device=device)
    net.train()
    if ddp:
        all_reduce(total)
    return (total[0] / total[1]).item()

def estimate_loss():
    """Mean loss over eval_iters batches per split; the same batches at every eval, whatever the world size."""
    return {split: mean_loss(model, eval_iters, lambda k: get_batch(split, k, for_eval=True)) for split in splits}

def full_val_loss():
    """The loss over every non-overlapping block of val.bin: the whole split, no sampling noise."""
    data = splits['val']
    n_blocks = (len(data) - 1) // block_size
    def batch(i):
        starts = np.arange(i * batch_size, min((i + 1) * batch_size, n_blocks))[:, None] * block_size
        chunk = torch.from_numpy(data[starts + offsets].astype(np.int64)).to(device)
        return chunk[:, :-1], chunk[:, 1:]
    # the uncompiled model: the last, smaller batch would make torch.compile compile again
    return mean_loss(raw_model, math.ceil(n_blocks / batch_size), batch)

def get_lr(it, seconds):
    """Linear warmup over warmup_iters, then cosine decay to min_lr over lr_decay_iters, or over max_seconds if set."""
    if not decay_lr:
        return learning_rate
    if max_seconds > 0 and it >= warmup_iters: # the same cosine, its position given by the time spent
        it = warmup_iters + (lr_decay_iters - warmup_iters) * min(seconds / max_seconds, 1.0)
    return cosine_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr)

saves = 0 # checkpoints this process wrote

def save(best):
    """Every rank calls it (FSDP gathers the full state dicts on rank 0); rank 0 writes."""
    global saves
    model_state, optimizer_state = full_state_dicts(raw_model, optimizer, fsdp)
    if not master_process:
        return
    saves += 1
    checkpoint = {
        'model': model_state,
        'optimizer': optimizer_state,
        'model_args': model_args,
        'iter_num': iter_num,
        'best_val_loss': best_val_loss,
        'config': config,
        'train_seconds': train_seconds, # how far a time-budgeted run is
        'rng': rng_state(), # the dropout masks to come; the data position is iter_num (see get_batch)
        'guard': loss_guard.state_dict(),
    }
    if raw_model.config.gelu_approximate != 'none': # GPT-2 weights: kept beside model_args (see model.GELU_KEY)
        checkpoint[GELU_KEY] = raw_model.config.gelu_approximate
    if scaler.is_enabled():
        checkpoint['scaler'] = scaler.state_dict()
    t = time.time()
    path = save_run_checkpoint(checkpoint, out_dir, best=best, keep_last=keep_last)
    print(f"saved {path}{' and ' + os.path.join(out_dir, 'best.pt') if best else ''} in {time.time() - t:.2f}s")

def rollback():
    """Too many bad steps in a row: back to the last checkpoint's weights and optimizer, with a lower learning rate."""
    loss_guard.lr_scale *= guard_lr_factor
    loss_guard.bad_streak = 0
    path = os.path.join(out_dir, 'ckpt.pt')
    if not os.path.exists(path): # nothing saved yet: the lower learning rate is all we can do
        return "no checkpoint yet, kept the weights"
    good = load_checkpoint(path, 'cpu' if fsdp else device)
    load_model_state(raw_model, clean_state_dict(good['model']), fsdp)
    load_optimizer_state(raw_model, optimizer, good['optimizer'], fsdp)
    return f"reloaded {path} (iter {good['iter_num']})"

# logging
if wandb_log and master_process:
    import wandb
    try:
        wandb.init(project=wandb_project, name=wandb_run_name, config=config)
    except (wandb.errors.UsageError, wandb.errors.CommError) as e: # e.g. no API key here, or no network
        raise UserError(f"wandb_log=True but wandb could not start ({first_line(e)}): run wandb login, "
                        f"or log offline with WANDB_MODE=offline, or turn it off with --wandb_log=False")

peak = None # the device's peak FLOP/s for MFU, looked up (on a CPU: measured, ~1 s) when the first MFU is due
loss_guard = LossGuard(guard_window, guard_zscore)
if init_from == 'resume': # the random state goes last: everything above may have drawn from it
    if resume_guard is not None:
        loss_guard.load_state_dict(resume_guard)
    restore_rng_state(resume_rng, seed, ddp_rank, iter_num)
stop = GracefulStop()
# training loop
X, Y = get_batch('train', iter_num, 0) # fetch the very first batch
t0 = t_start = time.time()
seconds_before = train_seconds # training time of the run before it was resumed
local_iter_num = 0 # number of iterations in the lifetime of this process
running_mfu = -1.0
stop_now = False
try:
    while True:

        # determine and set the learning rate for this iteration
        train_seconds = seconds_before + time.time() - t_start
        if ddp and max_seconds > 0: # rank 0's clock drives every rank, so that all apply the same LR and stop together
            clock = torch.tensor(train_seconds, dtype=torch.float64, device=device)
            torch.distributed.broadcast(clock, 0)
            train_seconds = clock.item()
        lr = get_lr(iter_num, train_seconds) * loss_guard.lr_scale
        for param_group in optimizer.param_groups:
            param_group['lr'] = lr

        # evaluate the loss on train/val sets and write checkpoints
        last = iter_num >= max_iters or (max_seconds > 0 and train_seconds >= max_seconds)
        if iter_num % eval_interval == 0 or last or eval_only: # every rank evaluates its share; all get the same losses
            losses = estimate_loss()
            if master_process:
                print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                if wandb_log:
                    wandb.log({"iter": iter_num, "train/loss": losses['train'], "val/loss": losses['val'],
                               "lr": lr, "mfu": running_mfu*100})
            if (losses['val'] < best_val_loss or always_save_checkpoint) and not eval_only: # eval_only writes nothing
                improved = losses['val'] < best_val_loss
                best_val_loss = min(best_val_loss, losses['val'])
                if iter_num > 0 and loss_guard.bad_streak > 0: # keep ckpt.pt a state the guard can roll back to
                    if master_process:
                        print(f"not saving a checkpoint: {loss_guard.bad_streak} bad step(s) in a row just now")
                elif iter_num > 0:
                    if master_process:
                        print(f"saving checkpoint to {out_dir}")
                    save(best=improved)
        if eval_only or last:
            break

        # forward backward update, with optional gradient accumulation to simulate larger batch size
        # and using the GradScaler if data type is float16
        loss_sum = torch.zeros((), device=device)
        for micro_step in range(gradient_accumulation_steps):
            # sync gradients only at the last micro step: the others just accumulate locally
            if fsdp:
                raw_model.set_requires_gradient_sync(micro_step == gradient_accumulation_steps - 1)
            elif ddp:
                model.require_backward_grad_sync = (micro_step == gradient_accumulation_steps - 1)
            with ctx:
                logits, loss = model(X, Y)
                loss = loss / gradient_accumulation_steps # scale the loss to account for gradient accumulation
            loss_sum += loss.detach()
            # immediately async prefetch next batch while model is doing the forward pass on the GPU
            if micro_step + 1 < gradient_accumulation_steps:
                X, Y = get_batch('train', iter_num, micro_step + 1)
            else:
                X, Y = get_batch('train', iter_num + 1, 0)
            # backward pass, with gradient scaling if training in fp16
            scaler.scale(loss).backward()
        # clip the gradient; the guard needs its norm too (max_norm=inf measures it and leaves the gradients as they are)
        grad_norm = None
        if grad_clip != 0.0 or guard:
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip != 0.0 else float('inf'))
        stop_now = stop.signal is not None
        if ddp: # all ranks must decide alike: the mean loss over ranks, and stop if any rank was signalled
            shared = torch.stack([loss_sum, torch.tensor(float(stop_now), device=device)])
            all_reduce(shared)
            loss_sum, stop_now = shared[0] / ddp_world_size, shared[1].item() > 0
        # an fp16 overflow (inf gradients) is the GradScaler's to handle: it skips that step itself
        bad = loss_guard.check(loss_sum.item(), None if scaler.is_enabled() else grad_norm.item()) if guard else None
        if bad is None:
            scaler.step(optimizer) # step the optimizer and scaler if training in fp16
        elif master_process:
            print(f"iter {iter_num}: skipped the update, {bad} ({loss_guard.skipped} skipped so far)")
        if bad is not None and loss_guard.bad_streak >= guard_max_bad:
            what = rollback()
            if master_process:
                print(f"iter {iter_num}: {guard_max_bad} bad steps in a row: {what}, learning rate now x{loss_guard.lr_scale:g}")
        scaler.update()
        # flush the gradients as soon as we can, no need for this memory anymore
        optimizer.zero_grad(set_to_none=True)

        # timing and logging
        t1 = time.time()
        dt = t1 - t0
        t0 = t1
        if iter_num % log_interval == 0 and master_process:
            # the mean loss of this step's micro-batches; .item() syncs with the device
            lossf = loss_sum.item()
            if local_iter_num >= 5: # let the training loop settle a bit
                if peak is None: # so short runs never pay for a matmul benchmark; the next step's timer skips it
                    peak = device_peak_flops(device, dtype, peak_flops)
                    t0 = time.time()
                # this rank's share of the work against one device's peak (gradient_accumulation_steps is per rank here)
                mfu = raw_model.estimate_mfu(batch_size * gradient_accumulation_steps, dt, peak)
                running_mfu = mfu if running_mfu == -1.0 else 0.9*running_mfu + 0.1*mfu
            print(f"iter {iter_num}: loss {lossf:.4f}, time {dt*1000:.2f}ms, tok/s {tokens_per_iter / dt:,.0f}, "
                  f"mfu {running_mfu*100:.2f}%" + (f", skipped {loss_guard.skipped}" if guard else ""))
        iter_num += 1
        local_iter_num += 1

        if stop_now: # SIGINT/SIGTERM: this step is done; save it and leave
            train_seconds = seconds_before + time.time() - t_start
            save(best=False)
            if master_process:
                print(f"stopped on {stop.signal or 'a signal to another rank'} at iter {iter_num}; resume with: "
                      f"{resume_command(sys.argv, ddp_world_size)}")
            break

    if full_eval and not stop_now:
        full = full_val_loss() # every rank takes part
        if master_process:
            print(f"full val loss {full:.4f} (every block of val.bin, iter {iter_num})")
    if master_process and saves == 0 and not always_save_checkpoint and iter_num > 0 and not eval_only and not stop_now:
        # e.g. a fine-tune that only got worse: say so, rather than leave sample.py to find no checkpoint
        print(f"no checkpoint written: the val loss never went below {best_val_loss:.4f}, and always_save_checkpoint=False "
              f"saves only improvements (--always_save_checkpoint=True saves every eval)")
    if ddp: # finish together: a gloo rank that tears down its group while rank 0 still saves can abort at exit
        torch.distributed.barrier()
finally:
    if ddp:
        model = None # DDP's wrapper holds the process group (see the end of this file)
        destroy_process_group()

# A gloo process group's worker threads stop only when the last reference to the group goes. If that is left to the
# interpreter's teardown, they can abort a process whose run ended well ('terminate called without an active
# exception', SIGABRT; seen here with FSDP). So nothing may hold the group past destroy_process_group, and three
# things would:
# - DDP's wrapper: let go of in the finally block above.
# - torch.distributed.nn.functional, which takes group.WORLD as a default argument: imported after init_process_group
#   (torch.optim imports it, through torch._dynamo) it would hold the group for good; imported at the top, it holds None.
# - FSDP2: DTensor's caches keep the device mesh, and the mesh keeps the group. Nothing public lets go of them, so an
#   FSDP rank skips the teardown: everything is saved, written out and the group destroyed by now.
if fsdp:
    if wandb_log and master_process:
        wandb.finish()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
