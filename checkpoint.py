"""Checkpoints and run state: reading and writing ckpt.pt, out_dir housekeeping, RNG state, and the loss guard and
graceful stop whose state a checkpoint carries.

A checkpoint is nanoGPT's dict ('model', 'optimizer', 'model_args', 'iter_num', 'best_val_loss', 'config') plus
keys nanoGPT ignores: 'train_seconds', 'rng', 'guard', 'scaler' and 'model_options' (model.OPTIONS_KEY).
Checkpoints always load to the CPU; tensors reach a device only through load_state_dict, so a resume never
holds two copies on the GPU.
"""

import atexit
import math
import os
import pickle
import random
import re
import signal
import sys

import numpy as np
import torch

from common import UserError, abandoned_temp_files, atomic_write, first_line

BEST_CKPT = 'best.pt'
HISTORY_CKPT = re.compile(r'^ckpt_(\d+)\.pt$') # the keep_last history: ckpt_<iter>.pt


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, or does not fit the model asked for."""

def clean_state_dict(state_dict):
    """
    Undo what other writers add to a state dict: torch.compile's '_orig_mod.' prefix,
    DDP's 'module.' prefix, and the 'attn.bias' causal-mask buffer that nanoGPT keeps
    when flash attention is missing.
    """
    out = {}
    for k, v in state_dict.items():
        for prefix in ('_orig_mod.', 'module.'):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if k.endswith('.attn.bias') and v.dim() == 4:
            continue
        out[k] = v
    return out

def load_checkpoint(path, unsafe=False):
    """
    torch.load to the CPU, with a one-line error for a file that is missing or not a checkpoint.
    Checkpoints load with weights_only=True: tensors and plain Python values, nothing executable.
    A (nanoGPT) checkpoint that holds other Python objects is refused unless unsafe=True, which
    unpickles it in full (that can run code: only for files you trust) and says so on stderr.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}: train one first (python train.py ...) "
                              f"or set out_dir to the run's directory")
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        # torch words every refusal 'Weights only load failed'; only 'Unsupported global' means a class or function
        # was named (an object beyond tensors): anything else (e.g. 'Unsupported operand') is not a pickle at all
        if 'Unsupported global' not in str(e):
            raise CheckpointError(f"{path} is not a readable checkpoint (truncated, corrupt, or another format)")
        if not unsafe:
            raise CheckpointError(f"{path} holds Python objects beyond tensors and plain values, and loading it "
                                  f"could run code: "
                                  f"if you trust the file, rerun with --unsafe_load=True")
        print(f"warning: loading {path} with the unsafe pickle loader (unsafe_load=True): it can run code",
              file=sys.stderr)
        try:
            checkpoint = torch.load(path, map_location='cpu', weights_only=False)
        except Exception as e:
            raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): "
                                  f"{type(e).__name__}: {first_line(e)}")
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {first_line(e)}")
    if not isinstance(checkpoint, dict) or 'model' not in checkpoint:
        raise CheckpointError(f"{path} is not a training checkpoint (no 'model' entry)")
    return checkpoint

def save_checkpoint(checkpoint, path):
    """
    Write atomically: a temp file in the same directory, fsync, then rename over
    the old one. A crash or Ctrl-C mid-save leaves the previous checkpoint intact.
    """
    with atomic_write(path) as tmp:
        torch.save(checkpoint, tmp)

def _link_atomic(src, dst):
    """dst becomes the same file as src: a hard link (no copy, instant), or a copy where links are not supported."""
    with atomic_write(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            import shutil
            shutil.copyfile(src, tmp)

def save_run_checkpoint(checkpoint, out_dir, best=False, keep_last=0):
    """
    Write out_dir/ckpt.pt (what init_from='resume' and sample.py read). best=True also makes it
    out_dir/best.pt, which only a better eval replaces. keep_last > 0 also keeps it as
    ckpt_<iter>.pt and deletes the older history files beyond the keep_last newest. Files of later iters than
    this one were left by a run the user rolled back (cp ckpt_<iter>.pt ckpt.pt, then resume): they count as oldest.
    best.pt and the history are hard links to the file just written: they cost no time or space,
    and a later os.replace of ckpt.pt leaves them untouched.
    """
    path = os.path.join(out_dir, 'ckpt.pt')
    save_checkpoint(checkpoint, path)
    if best:
        _link_atomic(path, os.path.join(out_dir, BEST_CKPT))
    if keep_last > 0:
        _link_atomic(path, os.path.join(out_dir, f"ckpt_{checkpoint['iter_num']:08d}.pt"))
        now = checkpoint['iter_num']
        history = sorted((int(m.group(1)) <= now, int(m.group(1)), name)
                         for name in os.listdir(out_dir) if (m := HISTORY_CKPT.match(name)))
        for *_, name in history[:-keep_last]: # only our own numbered files, oldest first, after the new one is safe
            os.remove(os.path.join(out_dir, name))
    return path

def prepare_out_dir(out_dir, create=True):
    """
    Check that out_dir takes files (creating it first if asked), before any training time is spent.
    Delete the temp files of saves that a crash cut short (the checkpoints they were replacing are
    intact) and return their names. A temp file whose process still runs (another train.py saving
    into the same out_dir) is left alone. An out_dir created here that is still empty when the process
    exits (the run failed a later check, or stopped before its first save) is removed again.
    """
    try:
        if create and not os.path.isdir(out_dir):
            os.makedirs(out_dir)
            atexit.register(_remove_if_empty, out_dir)
    except OSError as e:
        raise UserError(f"out_dir={out_dir!r} cannot be created ({e.strerror}): choose another --out_dir")
    if not os.path.isdir(out_dir):
        return []
    probe = os.path.join(out_dir, f'.write-test.{os.getpid()}')
    try: # really write a file: os.access says yes to root even where writing fails
        with open(probe, 'w'):
            pass
        os.remove(probe)
    except OSError as e:
        raise UserError(f"out_dir={out_dir!r} is not writable ({e.strerror}): choose another --out_dir")
    partial = abandoned_temp_files(out_dir, suffix='.pt')
    for name in partial:
        os.remove(os.path.join(out_dir, name))
    return partial

def _remove_if_empty(path):
    try:
        os.rmdir(path) # only ever removes an empty directory
    except OSError:
        pass # it holds files (a checkpoint was saved), or it is gone

def rng_state():
    """
    Every random generator a training step may draw from (dropout uses torch's), as tensors and plain
    values so that a checkpoint holding them still loads with weights_only=True.
    """
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        'torch': torch.get_rng_state(),
        'numpy': {'keys': torch.from_numpy(np_state[1].astype(np.int64)), 'pos': int(np_state[2]),
                  'has_gauss': int(np_state[3]), 'cached_gaussian': float(np_state[4])},
        'python': {'version': py_state[0], 'internal': list(py_state[1]), 'gauss_next': py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():
        state['mps'] = torch.mps.get_rng_state()
    return state

def set_rng_state(state):
    """
    Restore what rng_state() captured, so that a resumed run draws the same dropout masks. Each state goes through
    the CPU first: one that was loaded onto a device must restore the same.
    """
    torch.set_rng_state(state['torch'].cpu())
    n = state['numpy']
    keys = n['keys'].cpu().numpy().astype(np.uint32)
    np.random.set_state(('MT19937', keys, n['pos'], n['has_gauss'], n['cached_gaussian']))
    p = state['python']
    random.setstate((p['version'], tuple(p['internal']), p['gauss_next']))
    if 'cuda' in state and torch.cuda.is_available():
        for i, s in enumerate(state['cuda'][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu(), i)
    if 'mps' in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state['mps'].cpu())

def restore_rng_state(state, seed, rank=0, iter_num=0):
    """
    On resume. A checkpoint holds rank 0's generators only (state; None for nanoGPT's checkpoints): rank 0
    restores them, so a one-process run continues bit-exact. Under DDP the other ranks reseed from
    (seed, rank, iter_num): reproducible, though their dropout masks differ from the uninterrupted run's.
    """
    if rank == 0:
        if state is not None:
            set_rng_state(state)
    else:
        torch.manual_seed(int(np.random.SeedSequence([seed, rank, iter_num]).generate_state(1)[0]))

class LossGuard:
    """
    Decides whether a training step's update is safe to apply. A step is bad when its loss or its
    gradient norm is NaN or inf, or when its loss spikes: more than zscore standard deviations above
    the mean of the last `window` good losses. Bad losses never enter the window, so a burst of
    spikes cannot raise the bar for itself. Its state goes into checkpoints, so resume is exact.
    """

    def __init__(self, window, zscore):
        self.window, self.zscore = window, zscore
        self.recent = [] # losses of the last good steps
        self.skipped = 0 # bad steps in the whole run
        self.bad_streak = 0 # bad steps in a row, up to now
        self.lr_scale = 1.0 # lowered each time the run is rolled back to a checkpoint

    def check(self, loss, grad_norm=None):
        """None for a good step, else why it is bad."""
        reason = None
        if not math.isfinite(loss):
            reason = f"loss is {loss}"
        elif grad_norm is not None and not math.isfinite(grad_norm):
            reason = f"gradient norm is {grad_norm}"
        elif len(self.recent) >= self.window:
            mean = sum(self.recent) / len(self.recent)
            std = math.sqrt(sum((x - mean) ** 2 for x in self.recent) / len(self.recent))
            if std > 0 and (loss - mean) / std > self.zscore:
                reason = (f"loss spike: {loss:.4f} is {(loss - mean) / std:.1f} standard deviations above "
                          f"the last {self.window} steps' mean {mean:.4f}")
        if reason is None:
            self.bad_streak = 0
            self.recent = (self.recent + [loss])[-self.window:]
        else:
            self.skipped += 1
            self.bad_streak += 1
        return reason

    def state_dict(self):
        return {'recent': list(self.recent), 'skipped': self.skipped, 'bad_streak': self.bad_streak,
                'lr_scale': self.lr_scale}

    def load_state_dict(self, state):
        self.recent = [float(x) for x in state['recent']][-self.window:]
        self.skipped, self.bad_streak = int(state['skipped']), int(state['bad_streak'])
        self.lr_scale = float(state['lr_scale'])

class GracefulStop:
    """
    The first SIGINT (Ctrl-C) or SIGTERM (what schedulers send before preempting) only sets
    .signal: the training loop finishes its step, saves and exits. A second one exits at once.
    """

    def __init__(self):
        self.signal = None
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self._handle)

    def _handle(self, signum, frame):
        if self.signal is not None:
            os._exit(128 + signum) # the shell's convention for "killed by signal signum"
        self.signal = signal.Signals(signum).name
        # os.write, not print: a handler may interrupt a print in progress
        message = f"{self.signal}: stopping after this step (send it again to quit at once)\n"
        os.write(sys.stderr.fileno(), message.encode())

def resume_command(argv, world_size=1, local_world_size=None, env=os.environ):
    """
    The command line that continues this run: the same arguments with init_from='resume', launched as this run
    was (one process; torchrun on one node; torchrun on several nodes, each told its own node rank).
    """
    import shlex
    args = [a for a in argv[1:] if not a.startswith('--init_from=')]
    local_world_size = local_world_size or world_size
    nnodes = world_size // local_world_size
    if world_size == 1:
        launcher = ['python']
    elif nnodes == 1:
        launcher = ['torchrun', '--standalone', f'--nproc_per_node={local_world_size}']
    else:
        launcher = ['torchrun', f'--nnodes={nnodes}', f'--nproc_per_node={local_world_size}', '--node_rank=NODE_RANK',
                    f"--master_addr={env.get('MASTER_ADDR', 'MASTER_ADDR')}",
                    f"--master_port={env.get('MASTER_PORT', 29500)}"]
    command = shlex.join(launcher + [argv[0], *args, '--init_from=resume'])
    return command + (f" (on each node, with NODE_RANK 0..{nnodes - 1})" if nnodes > 1 else '')


def rollback_checkpoint(path, allowed, distributed=False):
    """
    The checkpoint a training run rolls back to, or None: decided and read by rank 0 alone, then sent to every
    rank, so that ranks on nodes that do not share out_dir roll back together, to the same weights. allowed: the
    file at path is this run's (it saved it, or resumed from it), not an earlier run's. Returns the loaded
    'model', 'optimizer' and 'iter_num' (on the CPU) on every rank, or None on every rank.
    """
    import torch.distributed as dist
    checkpoint = None
    if (not distributed or dist.get_rank() == 0) and allowed and os.path.exists(path):
        loaded = load_checkpoint(path)
        checkpoint = {k: loaded[k] for k in ('model', 'optimizer', 'iter_num')}
    if distributed:
        box = [checkpoint]
        dist.broadcast_object_list(box, src=0)
        checkpoint = box[0]
    return checkpoint

def _full_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=True, **kw)

def _rekey(optim_state, new_key):
    """An optimizer state dict with each parameter's key k (in 'state' and in 'param_groups') replaced by new_key[k]."""
    return {'state': {new_key[k]: v for k, v in optim_state['state'].items()},
            'param_groups': [dict(g, params=[new_key[k] for k in g['params']]) for g in optim_state['param_groups']]}

def full_state_dicts(model, optimizer, sharded):
    """
    The model's and the optimizer's state dicts as one process writes them (optimizer state keyed by the
    parameter's index, as optimizer.state_dict() does). A sharded model gathers them onto rank 0's CPU: every
    rank must call this, and ranks other than 0 get ({}, {}).
    """
    if not sharded:
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict
    model_state = get_model_state_dict(model, options=_full_options(cpu_offload=True))
    optim_state = get_optimizer_state_dict(model, optimizer, options=_full_options(cpu_offload=True))
    if not optim_state:
        return model_state, optim_state
    # FSDP keys the optimizer state by parameter name; a name's position in the param groups is its index
    names = [n for g in optim_state['param_groups'] for n in g['params']]
    return model_state, _rekey(optim_state, {n: i for i, n in enumerate(names)})

def load_model_state(model, state_dict, sharded=False):
    """Load a full (single-process) model state dict; a sharded model keeps its shard of it."""
    if not sharded:
        model.load_state_dict(state_dict)
        return
    from torch.distributed.checkpoint.state_dict import set_model_state_dict
    set_model_state_dict(model, state_dict, options=_full_options())

def load_optimizer_state(model, optimizer, optim_state, sharded=False):
    """
    Load a single-process optimizer state dict (as full_state_dicts returns); a sharded model keeps its shard of it.
    The kernel choice (fused / foreach) stays this machine's, not the writer's.
    """
    kernels = [{k: g[k] for k in ('fused', 'foreach') if k in g} for g in optimizer.param_groups]
    # a model resumed with a smaller block_size has a cropped wpe (crop_block_size): crop its saved moments alike
    params = [p for g in optimizer.param_groups for p in g['params']]
    for i, state in optim_state['state'].items():
        p = params[i]
        for k, v in state.items():
            if torch.is_tensor(v) and v.dim() == p.dim() > 0 and v.shape[1:] == p.shape[1:] and len(v) > len(p):
                state[k] = v[:len(p)]
    if not sharded:
        optimizer.load_state_dict(optim_state)
    else:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict
        names = {p: n for n, p in model.named_parameters()}
        index_to_name = [names[p] for g in optimizer.param_groups for p in g['params']]
        set_optimizer_state_dict(model, optimizer, _rekey(optim_state, index_to_name), options=_full_options())
    for group, kernel in zip(optimizer.param_groups, kernels):
        group.update(kernel)
