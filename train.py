"""
Train a GPT, on one device or on many under torchrun (DDP, or FSDP with --fsdp=True).

$ python train.py config/shakespeare_char_cpu.py --batch_size=32        # one process: a laptop CPU, one GPU
$ torchrun --standalone --nproc_per_node=4 train.py config/gpt2.py      # the 4 GPUs of one machine
$ torchrun --nproc_per_node=8 --nnodes=2 --node_rank=0 --master_addr=10.0.0.1 --master_port=29500 train.py
  (2 machines of 8 GPUs: the same on the second with --node_rank=1; NCCL_IB_DISABLE=1 without Infiniband)

Every setting below can be changed by config files and --key=value (configurator.py); --help lists them.
"""

import math
import os
import sys
import time
from datetime import timedelta

import numpy as np
import torch
import torch.distributed.nn # before init_process_group, so that it never holds the group (docs/gloo-teardown.md)
from torch.distributed import init_process_group, destroy_process_group, all_reduce
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoint import (GracefulStop, LossGuard, clean_state_dict, full_state_dicts, load_model_state,
                        load_optimizer_state, prepare_out_dir, resume_command, restore_rng_state, rng_state,
                        rollback_checkpoint, save_run_checkpoint)
from common import UserError, exit_on_user_error, first_line
from configurator import check_ranges, configure, config_keys
from device import (autocast_context, check_fsdp, cpu_compiler, device_peak_flops, grad_scaler, keep_freed_memory,
                    resolve_backend, resolve_device, resolve_dtype, set_cpu_threads, shard_model, torchrun_device,
                    torchrun_ranks, use_device)
from eval import hellaswag_acc_norm, hellaswag_for_training
from huggingface import GPT2_SIZES, is_pretrained, pretrained_family
from model import (GPT, GPTConfig, MODEL_ARGS, OPTION_DEFAULTS, OPTIONS_KEY, check_overrides, model_options,
                   resolve_attn_impl)
from optimizers import LR_SCHEDULES, lr_at
from plot import RunLog
from tokens import (GPT2_PADDED_VOCAB_SIZE, ShardLoader, check_shard_vocab, check_vocab, find_shards, load_meta,
                    meta_file, open_mask, open_shard_splits, open_tokens, step_windows, token_windows)

# -----------------------------------------------------------------------------
# Settings. The defaults pretrain GPT-2 (124M) on OpenWebText, as nanoGPT's do.
# output, evaluation and checkpoints
out_dir = 'out'
eval_interval = 2000 # steps between evaluations (and checkpoint saves)
log_interval = 1 # steps between log lines
eval_iters = 200 # batches per split in one evaluation
eval_only = False # evaluate once, then exit without training or saving
always_save_checkpoint = True # save at every evaluation; False saves only when the val loss improves
init_from = 'scratch' # 'scratch', 'resume' (out_dir/ckpt.pt), 'gpt2'..'gpt2-xl', or a Hugging Face GPT-2/Llama dir
full_eval = False # after training (or with eval_only), also the loss over every block of val.bin
keep_last = 0 # also keep the newest keep_last checkpoints as ckpt_<iter>.pt (besides ckpt.pt and best.pt)
unsafe_load = False # resume from a checkpoint that holds Python objects (it can run code: trusted files only)
eval_hellaswag = False # at each eval also HellaSwag's acc_norm, split among the ranks (GPT-2 tokens only; eval.py)
hellaswag_file = '' # a HellaSwag jsonl; '' = the official val set (10,042 examples), downloaded once (eval.py)
# wandb
wandb_log = False # log losses to Weights & Biases (WANDB_MODE=offline works without an account)
wandb_project = 'owt'
wandb_run_name = 'gpt2'
# data
dataset = 'openwebtext' # a folder under data/ with train.bin and val.bin
loss_mask = True # a dataset with train_mask.bin/val_mask.bin (data/arithmetic): the loss on its answers only
gradient_accumulation_steps = 5 * 8 # micro-batches per optimizer step, over all processes: a big batch in little memory
batch_size = 12 # sequences per micro-batch
block_size = 1024 # context length in tokens
seed = 1337
# model
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0 # 0 suits pretraining; fine-tuning a big model on little data may want 0.1 or more
bias = False # biases in the Linear and LayerNorm layers (GPT-2 has them; without is slightly better and faster)
attn_impl = 'auto' # 'sdpa' (fused kernel), 'math' (matmul, mask, softmax), 'auto': sdpa on GPUs, math on CPUs
# the architecture past GPT-2, whose choices are the defaults (model.GPTConfig says what each does)
n_kv_head = 0 # key/value heads: 0 = n_head (multi-head), a divisor of n_head (grouped-query), 1 (multi-query)
pos_emb = 'learned' # 'learned' (a position table) or 'rope' (rotary)
rope_theta = 10000.0
norm = 'layernorm' # 'layernorm' or 'rmsnorm'
norm_eps = 1e-5
qk_norm = False # normalise queries and keys
mlp = 'gelu' # 'gelu', 'relu2' or 'swiglu'
mlp_hidden = 0 # the MLP's width; 0: 4 * n_embd (swiglu: ~8/3 * n_embd)
tie_embeddings = True # lm_head is wte
logit_softcap = 0.0 # > 0 bounds the logits to (-logit_softcap, logit_softcap)
zero_init = False # the blocks' output projections start at zero
# optimizer: AdamW (plus Muon for the blocks' matrices with muon=True)
learning_rate = 6e-4 # the peak learning rate, reached after warmup
max_iters = 600000 # optimizer steps to train for
max_seconds = 0.0 # a time budget in seconds (evals included), the LR decay spread over it; 0 = off
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0 # clip the gradient norm to this; 0 = no clipping
muon = False # Muon for the blocks' weight matrices, AdamW for the rest: fewer steps to a loss
# learning-rate schedule
decay_lr = True # False keeps learning_rate throughout, no warmup either (nanoGPT's switch)
lr_schedule = 'cosine' # after warmup: 'cosine' (nanoGPT's), 'wsd' (flat, then a linear decay at the end), 'constant'
decay_frac = 0.2 # wsd: the share of the steps after warmup (or of the time budget) spent decaying
warmup_iters = 2000 # steps of linear warmup
lr_decay_iters = 600000 # the step where the cosine reaches min_lr (about max_iters, as Chinchilla suggests)
min_lr = 6e-5 # the floor of the decay (about learning_rate / 10, as Chinchilla suggests)
# system
backend = 'auto' # DDP backend: 'nccl', 'gloo', or 'auto' (nccl on CUDA, gloo otherwise)
device = 'auto' # 'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:0', 'mps'
dtype = 'auto' # 'float32', 'bfloat16', 'float16'; 'auto': bf16 where native, else fp16 on GPUs, else fp32
compile = True # torch.compile the model: slower start, faster steps on GPUs
cpu_threads = 0 # CPU threads per process; 0 = one per core, under torchrun split among this machine's ranks
fsdp = False # under torchrun: shard weights, gradients and optimizer state across the ranks (FSDP2)
grad_checkpointing = False # recompute each block's activations in backward: less memory for one more forward pass
peak_flops = 0.0 # the device's peak FLOP/s for MFU; 0 = a GPU table, or a matmul rate measured here
# guard against NaN/inf and loss spikes: skip such an update instead of applying it
guard = True # costs one host-device sync per step
guard_window = 100 # a spike: a loss guard_zscore standard deviations above the mean of this many good steps
guard_zscore = 6.0
guard_max_bad = 5 # this many bad steps in a row: back to this run's last checkpoint, the LR times guard_lr_factor
guard_lr_factor = 0.5
# -----------------------------------------------------------------------------
exit_on_user_error() # bad settings and files end in one 'error: ...' line, not a traceback
changed = configure(globals())
config = config_keys(globals()) # the resolved settings, for logging and checkpoints
STOP_CHECK_INTERVAL = 10 # without the guard: steps between checks for a stop request (to any rank)
MFU_WARMUP_STEPS = 5 # steps before MFU is reported: the first ones include compiling and warm-up
# -----------------------------------------------------------------------------

if init_from not in ('scratch', 'resume') and not is_pretrained(init_from):
    raise UserError(f"init_from={init_from!r} is not supported: use 'scratch', 'resume', one of "
                    f"{', '.join(GPT2_SIZES)}, or a directory holding a Hugging Face GPT-2 or Llama")
check_ranges(globals(), positive=('batch_size', 'block_size', 'gradient_accumulation_steps', 'eval_interval',
                                  'log_interval', 'eval_iters', 'guard_window', 'guard_zscore', 'guard_max_bad'),
             non_negative=('keep_last', 'learning_rate', 'min_lr', 'weight_decay', 'grad_clip', 'warmup_iters',
                           'lr_decay_iters', 'seed', 'max_iters', 'max_seconds'),
             unit=('beta1', 'beta2'))
if lr_schedule not in LR_SCHEDULES:
    raise UserError(f"lr_schedule={lr_schedule!r} is not one of {', '.join(map(repr, LR_SCHEDULES))}")
if not 0 < decay_frac <= 1:
    raise UserError(f"decay_frac={decay_frac} must be in (0, 1]: the share of training that wsd spends decaying")
if not 0 < guard_lr_factor <= 1:
    raise UserError(f"guard_lr_factor={guard_lr_factor} must be in (0, 1]: a rollback multiplies the LR by it")
# HellaSwag read, checked and tokenized now: a bad file or a char-level dataset stops the run before it starts
hellaswag = hellaswag_for_training(hellaswag_file, dataset) if eval_hellaswag else None

# processes and devices: torchrun sets RANK, LOCAL_RANK, WORLD_SIZE and LOCAL_WORLD_SIZE
ddp = 'RANK' in os.environ
ddp_rank, ddp_local_rank, ddp_world_size, local_world_size = torchrun_ranks() # 0, 0, 1, 1 for one process
if ddp:
    backend = resolve_backend(backend)
    device = torchrun_device(device, ddp_local_rank)
    if gradient_accumulation_steps % ddp_world_size != 0:
        raise UserError(f"gradient_accumulation_steps={gradient_accumulation_steps} is not divisible by the world size "
                        f"{ddp_world_size}: use a multiple of it (each rank runs an equal share of the micro-steps)")
    gradient_accumulation_steps //= ddp_world_size
else:
    device = resolve_device(device)
master_process = ddp_rank == 0 # the one process that logs and writes checkpoints
say = print if master_process else (lambda *args, **kwargs: None)
use_device(device)
dtype = resolve_dtype(dtype, device)
if fsdp:
    check_fsdp(ddp, dtype, muon)
threads = set_cpu_threads(cpu_threads, local_world_size)
if ddp: # joined only after every check above, so that no rank waits for one that failed a check
    # a rank that dies makes the others fail after this timeout instead of hanging forever
    init_process_group(backend=backend, timeout=timedelta(minutes=10))
device_type = torch.device(device).type
attn_impl = resolve_attn_impl(attn_impl, device)
tokens_per_iter = gradient_accumulation_steps * ddp_world_size * batch_size * block_size
say(f"device {device}, dtype {dtype}, {ddp_world_size} process(es), {threads} CPU thread(s) each, attention {attn_impl}")
say(f"tokens per iteration will be: {tokens_per_iter:,}")
if master_process: # a missing out_dir to resume from is reported when its ckpt.pt is loaded
    for name in prepare_out_dir(out_dir, create=init_from != 'resume'):
        print(f"removed {name}: an unfinished save of a run that was killed (the checkpoint it replaced is intact)")
    if init_from != 'resume' and os.path.exists(os.path.join(out_dir, 'ckpt.pt')): # nanoGPT replaces it silently
        print(f"warning: {out_dir} holds an earlier run's ckpt.pt, which this new run replaces at its first save "
              f"(to continue that run instead: --init_from=resume; to keep it: another --out_dir)")
torch.manual_seed(seed) # the same initial weights on every rank (FSDP does not broadcast them as DDP does)
ctx = autocast_context(device, dtype)
if device_type == 'cpu':
    keep_freed_memory() # no page faults for the same activations every step (see device.py)

# data: the token ids stay on disk as memmaps, opened once
data_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', dataset)
if not os.path.isdir(data_dir):
    raise UserError(f"dataset {dataset!r} not found: no directory {data_dir} (make one with data/<name>/prepare.py)")
shard_dir = any(find_shards(data_dir).values()) # a folder of token shards (data/fineweb_edu/prepare.py)
splits = (open_shard_splits(data_dir, block_size + 1) if shard_dir else
          {split: open_tokens(data_dir, split, block_size + 1) for split in ('train', 'val')})
# shards: training walks the train stream in order from a position that checkpoints save (tokens.ShardLoader)
loader = ShardLoader(splits['train'], batch_size, block_size, gradient_accumulation_steps * ddp_world_size) \
    if shard_dir else None
masks = {split: open_mask(data_dir, split, len(data), block_size) for split, data in splits.items()} # (mask, row_len)
SPLIT_IDS = {'train': 0, 'val': 1}
offsets = np.arange(block_size + 1)

def get_batch(split, step, micro_step=0, for_eval=False):
    """
    One micro-batch of this rank. A step's windows come from one random stream seeded by (seed, split, eval, step),
    and each rank and micro-step takes its own slice: ranks never share a window, the data order does not depend on
    the world size, and a resumed run sees the batches it would have seen without stopping. On shards, training
    batches are the stream in order instead (tokens.ShardLoader), with the same properties; evals sample windows.
    """
    data = splits[split]
    n_micro = 1 if for_eval else gradient_accumulation_steps * ddp_world_size # an eval batch is the same on every rank
    k = 0 if for_eval else ddp_rank * gradient_accumulation_steps + micro_step
    mask, row_len = masks[split] # a dataset of fixed-length rows: windows start at a row (row_len 1: anywhere)
    in_order = loader is not None and split == 'train' and not for_eval # shards: the next ids of the stream
    if in_order:
        chunk = torch.from_numpy(loader.micro_batch(step, k).astype(np.int64))
    else:
        starts = step_windows([seed, SPLIT_IDS[split], int(for_eval), step], n_micro * batch_size,
                              (len(data) - block_size - 1) // row_len + 1) * row_len
        starts = starts[k * batch_size:(k + 1) * batch_size]
        chunk = torch.from_numpy(token_windows(data, starts, block_size + 1).astype(np.int64))
    x, y = chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()
    if loss_mask and mask is not None and not in_order:
        y[torch.from_numpy(mask[starts[:, None] + offsets[1:]] == 0)] = -1 # skipped by the loss (ignore_index)
    if device_type == 'cuda': # pinned host memory: the copy runs in the background while the GPU computes
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device) # a no-op on the CPU

# the run's counters, replaced by the checkpoint's on resume
iter_num, best_val_loss, train_seconds = 0, 1e9, 0.0
resume_rng = resume_guard = None

# the vocab size comes from the dataset's meta.pkl if it has one (char-level), else GPT-2's, padded
meta = load_meta(data_dir)
meta_vocab_size = meta['vocab_size'] if meta else None
if meta_vocab_size is not None:
    say(f"found vocab_size = {meta_vocab_size} (inside {meta_file(data_dir)})")

checkpoint = None
if init_from == 'scratch':
    say("Initializing a new model from scratch")
    model_args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, bias=bias,
                      vocab_size=meta_vocab_size or GPT2_PADDED_VOCAB_SIZE, dropout=dropout)
    model = GPT(GPTConfig(**model_args, **{k: v for k, v in globals().items() if k in OPTION_DEFAULTS}))
elif init_from != 'resume':
    say(f"Initializing from {pretrained_family(init_from)} weights: {init_from}")
    if meta_vocab_size is not None and init_from in GPT2_SIZES: # said before a download of OpenAI's weights
        raise UserError(f"dataset {dataset!r} has its own vocabulary (meta.pkl, {meta_vocab_size} tokens) but GPT-2 "
                        f"weights need GPT-2 BPE tokens: use a GPT-2 dataset such as dataset='shakespeare'")
    model = GPT.from_pretrained(init_from, dict(dropout=dropout))
    check_vocab(dataset, meta_vocab_size, model.config.vocab_size, f"the weights {init_from}",
                "use the dataset they were trained on")
    check_overrides(vars(model.config), changed, block_size, f"the weights {init_from}", "drop the setting")
    model_args = {k: getattr(model.config, k) for k in MODEL_ARGS} # what a checkpoint needs to rebuild it
else:
    ckpt_path = os.path.join(out_dir, 'ckpt.pt')
    say(f"Resuming training from {ckpt_path}")
    t_load = time.time()
    model, checkpoint = GPT.from_checkpoint(ckpt_path, 'cpu', unsafe=unsafe_load, dropout=dropout)
    ckpt_args = checkpoint['model_args']
    check_overrides(vars(model.config), changed, block_size, f"the checkpoint in {out_dir}",
                    "drop the setting to resume it")
    ckpt_muon = bool((checkpoint.get('config') or {}).get('muon', False)) # nanoGPT's checkpoints: AdamW
    if muon != ckpt_muon:
        raise UserError(f"muon={muon} but the run in {out_dir} was trained with muon={ckpt_muon}, and its saved "
                        f"optimizer state is for that optimizer: resume with --muon={ckpt_muon}")
    check_vocab(dataset, meta_vocab_size, ckpt_args['vocab_size'], f"the checkpoint in {out_dir}",
                "resume with the dataset it was trained on")
    model_args = dict({k: ckpt_args[k] for k in MODEL_ARGS}, dropout=dropout)
    iter_num, best_val_loss = checkpoint['iter_num'], float(checkpoint['best_val_loss'])
    train_seconds = float(checkpoint.get('train_seconds', 0.0))
    resume_rng, resume_guard = checkpoint.get('rng'), checkpoint.get('guard') # absent in nanoGPT's checkpoints
    ckpt_dataset = (checkpoint.get('config') or {}).get('dataset')
    if (loader is not None or 'loader' in checkpoint) and ckpt_dataset not in (None, dataset):
        raise UserError(f"the run in {out_dir} was trained on dataset {ckpt_dataset!r}, not {dataset!r}: resume with "
                        f"--dataset={ckpt_dataset}, or fine-tune its weights (python model.py export_hf {out_dir} DIR, "
                        f"then --init_from=DIR)")
    if loader is not None and checkpoint.get('loader') is not None: # the shard stream continues where it stopped
        loader.restore(checkpoint['loader'], iter_num, data_dir)
        if checkpoint['loader']['step_tokens'] != loader.step_tokens:
            say(f"note: {loader.step_tokens:,} tokens per step now, {checkpoint['loader']['step_tokens']:,} before: "
                f"the shard stream continues at the saved position with the new batch")
    elif loader is not None and iter_num > 0:
        say("note: the checkpoint has no shard position: training reads the shards from their beginning")
    say(f"loaded the checkpoint of iter {iter_num} in {time.time() - t_load:.2f}s")
    if iter_num >= max_iters:
        say(f"the run is already at max_iters={max_iters}: raise --max_iters to train it further")
    elif 0 < max_seconds <= train_seconds:
        say(f"the run has already trained its max_seconds={max_seconds:g} ({train_seconds:.0f}s): "
            f"raise --max_seconds to train it further")
if shard_dir:
    for stream in splits.values():
        check_shard_vocab(stream, model.config.vocab_size, data_dir)
if block_size < model.config.block_size: # a shorter context than the weights have: cut the position table
    model.crop_block_size(block_size)
    model_args['block_size'] = block_size
model.set_attn_impl(attn_impl)
model.grad_checkpointing = grad_checkpointing
if fsdp:
    model = shard_model(model, dtype) # every rank built the same full model on the CPU; each keeps its shard
else:
    model.to(device)
if ddp_rank: # each rank its own dropout masks
    torch.manual_seed(seed + ddp_rank)

scaler = grad_scaler(device, dtype) # active for fp16 only
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type, muon=muon)
if checkpoint is not None: # the moments load from the CPU straight into the optimizer's state on the device
    load_optimizer_state(model, optimizer, checkpoint['optimizer'], fsdp)
    if checkpoint.get('scaler') and scaler.is_enabled():
        scaler.load_state_dict(checkpoint['scaler'])
checkpoint = None # the CPU copy is no longer needed

raw_model = model # the unwrapped model: its state_dict has clean names
if compile and device_type == 'cpu' and cpu_compiler() is None:
    say("compile=True needs a C++ compiler on the CPU (g++ or clang++, or $CXX) and none was found: training "
        "uncompiled. Install one, or pass --compile=False")
    compile = False
if compile:
    say("compiling the model... (takes a ~minute)")
    model = torch.compile(model)
if ddp and not fsdp: # FSDP already wrapped the model in place
    model = DDP(model, device_ids=[ddp_local_rank] if device_type == 'cuda' else None)

@torch.no_grad()
def mean_loss(net, n, batch):
    """
    The loss over batches 0..n-1 (batch(i) gives X, Y), weighted by their rows. Rank r computes batches r, r+W, ...
    and the sums are all-reduced: every rank gets what one process gets. A rank with a batch fewer runs its last
    again, uncounted (FSDP's forward needs every rank). The sums stay on the device, in fp32 (MPS has no fp64).
    """
    total = torch.zeros(2, device=device) # sum of loss * rows, rows
    net.eval()
    for i in range(ddp_rank, math.ceil(n / ddp_world_size) * ddp_world_size, ddp_world_size):
        X, Y = batch(min(i, n - 1))
        with ctx:
            _, loss = net(X, Y)
        if i < n:
            total[0] += loss.detach().float() * len(X)
            total[1] += len(X)
    net.train()
    if ddp:
        all_reduce(total)
    return (total[0] / total[1]).item()

# evals on a CPU use the uncompiled model: compiling its no-grad graph took ~28 s for the 4-layer CPU config, a tenth of
# its budget and more than all its evals together
eval_model = raw_model if device_type == 'cpu' else model

def estimate_loss():
    """Mean loss over eval_iters batches per split; the same batches at every eval, whatever the world size."""
    return {split: mean_loss(eval_model, eval_iters, lambda k: get_batch(split, k, for_eval=True)) for split in splits}

def full_val_loss():
    """The loss over every non-overlapping block of val.bin (or the val shards): the whole split, no sampling noise."""
    data = splits['val']
    n_blocks = (len(data) - 1) // block_size
    def batch(i):
        starts = np.arange(i * batch_size, min((i + 1) * batch_size, n_blocks)) * block_size
        chunk = torch.from_numpy(token_windows(data, starts, block_size + 1).astype(np.int64)).to(device)
        return chunk[:, :-1], chunk[:, 1:]
    # the uncompiled model: the last, smaller batch would make torch.compile compile again
    return mean_loss(raw_model, math.ceil(n_blocks / batch_size), batch)

saves = 0 # checkpoints this process wrote
owns_checkpoint = init_from == 'resume' # out_dir/ckpt.pt is this run's: resumed from, or saved by it

def save(best):
    """Every rank calls it (FSDP gathers the full state dicts on rank 0); rank 0 writes."""
    global saves, owns_checkpoint
    model_state, optimizer_state = full_state_dicts(raw_model, optimizer, fsdp)
    if not master_process:
        return
    # nanoGPT's keys, then ours: how far a time-budgeted run is, the generators for the dropout masks to come (the
    # data position is iter_num: see get_batch; on shards also 'loader'), and the guard's recent losses
    checkpoint = dict(model=model_state, optimizer=optimizer_state, model_args=model_args, iter_num=iter_num,
                      best_val_loss=best_val_loss, config=config, train_seconds=train_seconds, rng=rng_state(),
                      guard=loss_guard.state_dict())
    if loader is not None: # where the step iter_num begins in the shard stream
        checkpoint['loader'] = loader.state(iter_num)
    options = model_options(raw_model.config) # the architecture past nanoGPT's model_args (see model.OPTIONS_KEY)
    if options:
        checkpoint[OPTIONS_KEY] = options
    if scaler.is_enabled():
        checkpoint['scaler'] = scaler.state_dict()
    t = time.time()
    path = save_run_checkpoint(checkpoint, out_dir, best=best, keep_last=keep_last)
    saves += 1
    owns_checkpoint = True
    print(f"saved {path}{' and ' + os.path.join(out_dir, 'best.pt') if best else ''} in {time.time() - t:.2f}s")

def rollback():
    """Too many bad steps in a row: back to this run's last checkpoint, with a lower LR. Every rank calls it."""
    loss_guard.lr_scale *= guard_lr_factor
    loss_guard.bad_streak = 0
    optimizer.zero_grad(set_to_none=True) # the gradients' memory, before a second copy of the weights arrives
    path = os.path.join(out_dir, 'ckpt.pt')
    good = rollback_checkpoint(path, owns_checkpoint, distributed=ddp) # rank 0 decides and reads, for every rank
    if good is None: # nothing saved by this run yet: the lower learning rate is all we can do
        return "no checkpoint of this run yet, kept the weights"
    load_model_state(raw_model, clean_state_dict(good['model']), fsdp)
    load_optimizer_state(raw_model, optimizer, good['optimizer'], fsdp)
    return f"reloaded {path} (iter {good['iter_num']})"

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
# rank 0's out_dir/log.jsonl for plot.py; a resumed run drops the lines past its checkpoint (see plot.RunLog)
run_log = RunLog(out_dir, iter_num if init_from == 'resume' else None) if master_process and not eval_only else None

X, Y = get_batch('train', iter_num, 0) # the first micro-batch; each later one is fetched during the step before
t0 = t_start = time.time()
seconds_before = train_seconds # training time of the run before it was resumed
local_iter_num, running_mfu, stop_now = 0, -1.0, False # steps run by this process, MFU's moving average
try:
    while True:
        # the learning rate of this step
        train_seconds = seconds_before + time.time() - t_start
        if ddp and max_seconds > 0: # rank 0's clock drives every rank, so that all apply the same LR and stop together
            clock = torch.full((1,), train_seconds, device=device) # fp32: MPS has no fp64
            torch.distributed.broadcast(clock, 0)
            train_seconds = clock.item()
        lr = loss_guard.lr_scale * lr_at(iter_num, train_seconds, learning_rate, warmup_iters, lr_decay_iters, min_lr,
                                         max_seconds, decay_lr, lr_schedule, decay_frac)
        for param_group in optimizer.param_groups:
            param_group['lr'] = lr

        # evaluate, and save a checkpoint
        last = iter_num >= max_iters or (max_seconds > 0 and train_seconds >= max_seconds)
        if iter_num % eval_interval == 0 or last or eval_only: # every rank evaluates its share; all get the same losses
            losses = estimate_loss()
            hellaswag_score = None if hellaswag is None else \
                hellaswag_acc_norm(raw_model, hellaswag, device, ctx, ddp_rank, ddp_world_size, ddp) # uncompiled
            say(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
                + (f", hellaswag acc_norm {hellaswag_score:.4f}" if hellaswag_score is not None else ""))
            if run_log is not None:
                run_log.write('eval', iter=iter_num, train_loss=losses['train'], val_loss=losses['val'], lr=lr,
                              tokens=iter_num * tokens_per_iter, time=round(train_seconds, 3),
                              **({} if hellaswag_score is None else {'hellaswag': hellaswag_score}))
            if wandb_log and master_process:
                wandb.log({"iter": iter_num, "train/loss": losses['train'], "val/loss": losses['val'],
                           "lr": lr, "mfu": running_mfu*100,
                           **({} if hellaswag_score is None else {"hellaswag": hellaswag_score})})
            if (losses['val'] < best_val_loss or always_save_checkpoint) and not eval_only: # eval_only writes nothing
                improved = losses['val'] < best_val_loss
                best_val_loss = min(best_val_loss, losses['val'])
                if iter_num > 0 and loss_guard.bad_streak > 0: # keep ckpt.pt a state the guard can roll back to
                    say(f"not saving a checkpoint: {loss_guard.bad_streak} bad step(s) in a row just now")
                elif iter_num > 0:
                    say(f"saving checkpoint to {out_dir}")
                    save(best=improved)
        if eval_only or last:
            break

        # forward and backward over the micro-batches, then one update
        loss_sum = torch.zeros((), device=device)
        for micro_step in range(gradient_accumulation_steps):
            # only the last micro-step's backward syncs gradients across ranks; the others accumulate locally
            if fsdp:
                raw_model.set_requires_gradient_sync(micro_step == gradient_accumulation_steps - 1)
            elif ddp:
                model.require_backward_grad_sync = (micro_step == gradient_accumulation_steps - 1)
            with ctx:
                logits, loss = model(X, Y)
                loss = loss / gradient_accumulation_steps # the step's gradient is the mean over its micro-batches
            loss_sum += loss.detach()
            # fetch the next micro-batch while the device works on this one
            if micro_step + 1 < gradient_accumulation_steps:
                X, Y = get_batch('train', iter_num, micro_step + 1)
            else:
                X, Y = get_batch('train', iter_num + 1, 0)
            scaler.scale(loss).backward() # fp16: the loss scaled up so that small gradients do not underflow
        # clip the gradient; the guard needs its norm too (max_norm=inf measures it and changes nothing)
        grad_norm = None
        if grad_clip != 0.0 or guard:
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or float('inf'))
        if hasattr(grad_norm, 'full_tensor'): # FSDP: a DTensor
            grad_norm = grad_norm.full_tensor()
        # one host sync reads all this step needs: the loss (mean over ranks), whether any rank was asked to stop,
        # and the gradient norm for the guard; without the guard, steps that log nothing skip it (but every
        # STOP_CHECK_INTERVAL-th, so that a stop request is seen)
        log_now = iter_num % log_interval == 0
        stop_now, bad = False, None
        if guard or log_now or iter_num % STOP_CHECK_INTERVAL == 0:
            shared = torch.stack([loss_sum.float(), torch.full((), float(stop.signal is not None), device=device)])
            if ddp:
                all_reduce(shared)
            loss_sum = shared[0] / ddp_world_size
            read = torch.cat([shared, grad_norm.float().view(1)]) if guard else shared
            loss_value, stop_flag, *norm = read.tolist()
            stop_now = stop_flag > 0
            if guard: # an fp16 overflow (inf gradients) is the GradScaler's to handle: it skips that step itself
                bad = loss_guard.check(loss_value / ddp_world_size, None if scaler.is_enabled() else norm[0])
        if bad is None:
            scaler.step(optimizer)
        else:
            say(f"iter {iter_num}: skipped the update, {bad} ({loss_guard.skipped} skipped so far)")
        if bad is not None and loss_guard.bad_streak >= guard_max_bad:
            what = rollback()
            say(f"iter {iter_num}: {guard_max_bad} bad steps in a row: {what}, "
                f"learning rate now x{loss_guard.lr_scale:g}")
        scaler.update()
        optimizer.zero_grad(set_to_none=True) # free the gradients' memory until the next backward

        # timing and logging
        t1 = time.time()
        dt, t0 = t1 - t0, t1
        if log_now and master_process:
            lossf = loss_sum.item() # the mean loss of this step's micro-batches (a host sync)
            if local_iter_num >= MFU_WARMUP_STEPS:
                if peak is None: # so short runs never pay for a matmul benchmark; the next step's timer skips it
                    peak = device_peak_flops(device, dtype, peak_flops)
                    t0 = time.time()
                # this rank's share of the work against one device's peak (gradient_accumulation_steps is per rank here)
                mfu = raw_model.estimate_mfu(batch_size * gradient_accumulation_steps, dt, peak)
                running_mfu = mfu if running_mfu == -1.0 else 0.9*running_mfu + 0.1*mfu
            print(f"iter {iter_num}: loss {lossf:.4f}, time {dt*1000:.2f}ms, tok/s {tokens_per_iter / dt:,.0f}, "
                  f"mfu {running_mfu*100:.2f}%" + (f", skipped {loss_guard.skipped}" if guard else ""))
            if run_log is not None:
                run_log.write('step', iter=iter_num, loss=lossf, lr=lr, tokens=iter_num * tokens_per_iter,
                              tok_per_s=round(tokens_per_iter / dt, 1), mfu=running_mfu if running_mfu >= 0 else None,
                              dt_ms=round(dt * 1000, 3), time=round(seconds_before + t1 - t_start, 3))
        iter_num += 1
        local_iter_num += 1

        if stop_now: # SIGINT/SIGTERM: this step is done; save it and leave
            train_seconds = seconds_before + time.time() - t_start
            save(best=False)
            say(f"stopped on {stop.signal or 'a signal to another rank'} at iter {iter_num}; resume with: "
                f"{resume_command(sys.argv, ddp_world_size, local_world_size)}")
            break

    if full_eval and not stop_now:
        full = full_val_loss() # every rank takes part
        say(f"full val loss {full:.4f} (every block of val.bin, iter {iter_num})")
    if saves == 0 and not always_save_checkpoint and iter_num > 0 and not eval_only and not stop_now:
        # e.g. a fine-tune that only got worse: say so, rather than leave sample.py to find no checkpoint
        say(f"no checkpoint written: the val loss never went below {best_val_loss:.4f}, and "
            f"always_save_checkpoint=False saves only improvements (--always_save_checkpoint=True saves every eval)")
    if ddp: # finish together: a gloo rank that tears down its group while rank 0 still saves can abort at exit
        torch.distributed.barrier()
finally:
    if ddp:
        model = None # DDP's wrapper holds the process group (docs/gloo-teardown.md)
        destroy_process_group()

# FSDP's DTensor caches keep the process group alive, and no public API lets go of them; a gloo group torn down by the
# interpreter's exit can abort a run that ended well. Everything is saved and flushed by now: skip that teardown.
if fsdp:
    if wandb_log and master_process:
        wandb.finish()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
