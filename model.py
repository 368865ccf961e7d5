"""
The whole GPT language model in one file, plus the few helpers that every script
(train.py, sample.py, bench.py) shares: picking a device and a precision, the
device's peak FLOP/s for MFU, and reading and writing checkpoints.

Parameter names and checkpoint keys are exactly nanoGPT's, so checkpoints move
freely between the two projects.
References:
1) OpenAI's GPT-2 TensorFlow implementation: https://github.com/openai/gpt-2/blob/master/src/model.py
2) huggingface/transformers PyTorch implementation: modeling_gpt2.py
"""

import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
from torch.nn import functional as F

# -----------------------------------------------------------------------------
# the model

@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304 # GPT-2's 50257 padded up to a multiple of 64 for speed
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True # biases in Linears and LayerNorms, like GPT-2. False: a bit better and faster

# the keys of GPTConfig, in the order nanoGPT stores them as a checkpoint's 'model_args'
MODEL_ARGS = ('n_layer', 'n_head', 'n_embd', 'block_size', 'bias', 'vocab_size', 'dropout')

# How attention is computed. 'sdpa' is PyTorch's fused kernel (flash attention on
# GPUs). 'math' is the plain matmul-mask-softmax; it computes the same thing and
# on CPUs its backward pass is much faster than SDPA's. Not an architecture choice,
# so it never goes into a checkpoint's model_args.
ATTN_IMPLS = ('sdpa', 'math')

class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's own has no bias=False before 2.1)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, input):
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)

class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        # key, query, value projections for all heads, in one batched matmul
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.attn_impl = 'sdpa'

    def forward(self, x, kv_cache=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        hs = C // self.n_head
        # (B, T, C) -> (B, nh, T, hs)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)
        y = self._attend(q, k, v)
        y = y.transpose(1, 2).contiguous().view(B, T, C) # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))

    def _attend(self, q, k, v):
        # q holds the last Tq of the Tk positions in k and v (Tq < Tk when decoding with a cache):
        # query i may look at keys 0 .. Tk - Tq + i.
        Tq, Tk = q.size(-2), k.size(-2)
        dropout_p = self.dropout if self.training else 0.0
        if self.attn_impl == 'sdpa':
            if Tq == Tk:
                return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
            if Tq == 1: # one new token sees the whole cache: no mask needed
                return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(Tq, Tk, q.device), dropout_p=dropout_p)
        # scale and mask fused into the matmul: att = mask_bias + (q @ k^T) / sqrt(hs), where
        # mask_bias is 0 where attention is allowed and -inf elsewhere (saves two passes over att)
        B, nh, _, hs = q.shape
        att = torch.baddbmm(causal_bias(Tq, Tk, q.device, q.dtype), q.reshape(B * nh, Tq, hs),
                            k.reshape(B * nh, Tk, hs).transpose(1, 2), alpha=1.0 / math.sqrt(hs)).view(B, nh, Tq, Tk)
        att = F.softmax(att, dim=-1)
        att = self.attn_dropout(att)
        return att @ v

_MASKS = {}
def causal_mask(Tq, Tk, device):
    """Boolean (Tq, Tk) mask, True where query i may attend to key j. Cached: it never changes."""
    key = (Tq, Tk, str(device))
    if key not in _MASKS:
        _MASKS[key] = torch.ones(Tq, Tk, dtype=torch.bool, device=device).tril(diagonal=Tk - Tq)
    return _MASKS[key]

def causal_bias(Tq, Tk, device, dtype):
    """The same mask as an additive (Tq, Tk) bias: 0 where allowed, -inf where not."""
    key = (Tq, Tk, str(device), dtype)
    if key not in _MASKS:
        _MASKS[key] = torch.zeros(Tq, Tk, device=device, dtype=dtype).masked_fill(~causal_mask(Tq, Tk, device), float('-inf'))
    return _MASKS[key]

class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc    = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu    = nn.GELU()
        self.c_proj  = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))

class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, kv_cache=None):
        x = x + self.attn(self.ln_1(x), kv_cache)
        x = x + self.mlp(self.ln_2(x))
        return x

class KVCache:
    """Keys and values of the positions seen so far, for one layer, preallocated to block_size."""

    def __init__(self, batch_size, n_head, block_size, head_size, device, dtype):
        shape = (batch_size, n_head, block_size, head_size)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.len = 0

    def update(self, k, v):
        T = k.size(2)
        self.k[:, :, self.len:self.len + T] = k
        self.v[:, :, self.len:self.len + T] = v
        self.len += T
        return self.k[:, :, :self.len], self.v[:, :, :self.len]

class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        check_config(config)
        self.config = config

        self.transformer = nn.ModuleDict(dict(
            wte = nn.Embedding(config.vocab_size, config.n_embd),
            wpe = nn.Embedding(config.block_size, config.n_embd),
            drop = nn.Dropout(config.dropout),
            h = nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f = LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: the output projection is the token embedding
        # https://paperswithcode.com/method/weight-tying
        self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # GPT-2 scales the init of each residual output projection by 1/sqrt(2 * n_layer),
        # since 2 * n_layer of them add into the residual stream
        for pn, p in self.named_parameters():
            if pn.endswith('c_proj.weight'):
                torch.nn.init.normal_(p, mean=0.0, std=0.02/math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def set_attn_impl(self, impl):
        if impl not in ATTN_IMPLS:
            raise UserError(f"attn_impl={impl!r} is not one of {ATTN_IMPLS}")
        for block in self.transformer.h:
            block.attn.attn_impl = impl

    def get_num_params(self, non_embedding=True):
        """
        Number of parameters. By default the position embeddings are not counted;
        the token embeddings are, because they are tied to lm_head and so do real work.
        """
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n_params -= self.transformer.wpe.weight.numel()
        return n_params

    def forward(self, idx, targets=None, kv_caches=None):
        device = idx.device
        b, t = idx.size()
        start = kv_caches[0].len if kv_caches is not None else 0
        if start + t > self.config.block_size:
            raise UserError(f"cannot forward a sequence of length {start + t}: block_size is only {self.config.block_size}")
        pos = torch.arange(start, start + t, dtype=torch.long, device=device)

        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            x = block(x, kv_caches[i] if kv_caches is not None else None)
        x = self.transformer.ln_f(x)

        if targets is not None:
            logits = self.lm_head(x)
            # targets of -1 are ignored (padding)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        else:
            # inference: only the last position's logits are needed
            logits = self.lm_head(x[:, [-1], :]) # the list index keeps the time dim
            loss = None
        return logits, loss

    def crop_block_size(self, block_size):
        """Shrink the context length, e.g. to fine-tune GPT-2 (1024) with a smaller block."""
        if not 0 < block_size <= self.config.block_size:
            raise UserError(f"block_size={block_size} must be in 1..{self.config.block_size} (the model's block_size)")
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, fused=None):
        """
        AdamW with weight decay on matrices and embeddings (2+ dims) only: biases and
        LayerNorm gains are not decayed. fused=None uses the fused kernel wherever
        this torch has it for the parameters' device (the CPU included since torch 2.4).
        device_type is unused: it stays for nanoGPT's signature, so callers written for it still work.
        """
        param_dict = {pn: p for pn, p in self.named_parameters() if p.requires_grad}
        decay_params = [p for p in param_dict.values() if p.dim() >= 2]
        nodecay_params = [p for p in param_dict.values() if p.dim() < 2]
        optim_groups = [
            {'params': decay_params, 'weight_decay': weight_decay},
            {'params': nodecay_params, 'weight_decay': 0.0}
        ]
        if fused is not None:
            return torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas, fused=fused or None)
        try: # the fused kernel: one pass over all parameters instead of many small ops
            return torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas, fused=True)
        except (RuntimeError, ValueError): # this torch has no fused AdamW for this device
            return torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas)

    def estimate_mfu(self, fwdbwd_per_iter, dt, peak_flops):
        """Model FLOPs utilization: achieved FLOP/s over the device's peak_flops (see device_peak_flops)."""
        # the PaLM paper, Appendix B: https://arxiv.org/abs/2204.02311
        N = self.get_num_params()
        cfg = self.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd//cfg.n_head, cfg.block_size
        flops_per_token = 6*N + 12*L*H*Q*T
        flops_per_iter = flops_per_token * T * fwdbwd_per_iter
        return (flops_per_iter / dt) / peak_flops

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, use_kv_cache=True):
        """
        Continue the token sequences idx (LongTensor (b, t)) by max_new_tokens tokens.
        Use in eval() mode. With the KV cache only the new token goes through the model
        each step. Once the context outgrows block_size it is cropped to the last
        block_size tokens, as nanoGPT does; their positions then all shift, so the
        cache is refilled from the cropped context. The result is the same as running
        the full forward on the (cropped) context every step.
        """
        if temperature <= 0:
            raise UserError(f"temperature={temperature} must be > 0")
        if top_k is not None and top_k <= 0:
            raise UserError(f"top_k={top_k} must be > 0 (or None for no limit)")
        block_size = self.config.block_size
        caches = None
        for _ in range(max_new_tokens):
            if not use_kv_cache:
                logits, _ = self(idx[:, -block_size:])
            elif caches is not None and caches[0].len < block_size:
                logits, _ = self(idx[:, -1:], kv_caches=caches) # the cache holds everything before it
            else:
                # first step, or the context no longer fits: fill a fresh cache from the cropped context
                caches = self._new_kv_caches(idx.size(0), idx.device)
                logits, _ = self(idx[:, -block_size:], kv_caches=caches)
            logits = logits[:, -1, :].float() / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float('Inf')
            probs = F.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx

    def _new_kv_caches(self, batch_size, device):
        cfg = self.config
        dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else self.lm_head.weight.dtype
        return [KVCache(batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head, device, dtype)
                for _ in range(cfg.n_layer)]

    # -------------------------------------------------------------------------
    # checkpoints

    @classmethod
    def from_checkpoint(cls, path, device='cpu', **overrides):
        """
        Load a checkpoint written by train.py here or by nanoGPT. Returns (model, checkpoint).
        overrides (e.g. dropout=0.0) replace entries of the stored model_args.
        """
        checkpoint = load_checkpoint(path, device)
        try:
            model_args = {k: checkpoint['model_args'][k] for k in MODEL_ARGS}
        except (KeyError, TypeError):
            raise CheckpointError(f"{path} has no complete 'model_args' ({', '.join(MODEL_ARGS)}): "
                                  f"it is not a GPT checkpoint from train.py or nanoGPT")
        model_args.update(overrides)
        model = cls(GPTConfig(**model_args))
        state_dict = clean_state_dict(checkpoint['model'])
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        if missing or unexpected:
            raise CheckpointError(f"{path} does not match its model_args: missing {missing[:3]}, unexpected {unexpected[:3]}")
        for k, v in state_dict.items():
            if v.shape != expected[k].shape:
                raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)} but model_args imply "
                                      f"{tuple(expected[k].shape)}: the checkpoint is inconsistent")
        model.load_state_dict(state_dict)
        model.to(device)
        return model, checkpoint

def cosine_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr):
    """nanoGPT's schedule: linear warmup for warmup_iters, cosine decay to min_lr at lr_decay_iters, then flat."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio)) # goes from 1 to 0
    return min_lr + coeff * (learning_rate - min_lr)

class UserError(ValueError):
    """Bad input from the user (a setting, a file): scripts print it as one line, no traceback."""

class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, or does not fit the model asked for."""

def exit_on_user_error():
    """Make an uncaught UserError print 'error: ...' as one line and exit 1, instead of a traceback."""
    default_hook = sys.excepthook
    def hook(exc_type, exc, tb):
        if issubclass(exc_type, UserError):
            print(f"error: {exc}", file=sys.stderr)
        else:
            default_hook(exc_type, exc, tb)
    sys.excepthook = hook

def check_config(config):
    """One clear error for a GPTConfig that cannot make a model."""
    for f in ('n_layer', 'n_head', 'n_embd', 'block_size', 'vocab_size'):
        v = getattr(config, f)
        if not isinstance(v, int) or v <= 0:
            raise UserError(f"{f}={v!r} must be a positive integer")
    if config.n_embd % config.n_head != 0:
        raise UserError(f"n_embd={config.n_embd} is not divisible by n_head={config.n_head}: "
                         f"choose sizes where n_embd % n_head == 0")
    if not 0.0 <= config.dropout < 1.0:
        raise UserError(f"dropout={config.dropout} must be in [0, 1)")

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

def load_checkpoint(path, device='cpu'):
    """torch.load with a one-line error for a file that is missing or not a checkpoint."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}: train one first (python train.py ...) or set out_dir to the run's directory")
    try:
        # weights_only: a checkpoint is tensors and plain Python values, nothing executable
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {str(e).splitlines()[0][:200]}")
    if not isinstance(checkpoint, dict) or 'model' not in checkpoint:
        raise CheckpointError(f"{path} is not a training checkpoint (no 'model' entry)")
    return checkpoint

def save_checkpoint(checkpoint, path):
    """
    Write atomically: a temp file in the same directory, fsync, then rename over
    the old one. A crash or Ctrl-C mid-save leaves the previous checkpoint intact.
    """
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, 'wb') as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

# -----------------------------------------------------------------------------
# datasets: data/<name>/{train,val}.bin and, for char-level data, meta.pkl

def load_meta(data_dir):
    """The tokenizer metadata ({'vocab_size', 'itos', 'stoi'}) of a dataset, or None if it has none (GPT-2 BPE)."""
    meta_path = os.path.join(data_dir, 'meta.pkl')
    if not os.path.exists(meta_path):
        return None
    import pickle
    try:
        with open(meta_path, 'rb') as f:
            meta = pickle.load(f)
    except Exception as e:
        raise UserError(f"{meta_path} is unreadable ({type(e).__name__}): run the dataset's prepare.py again")
    if not isinstance(meta, dict) or not {'vocab_size', 'itos', 'stoi'} <= set(meta):
        raise UserError(f"{meta_path} is not a dict with vocab_size, itos and stoi: run the dataset's prepare.py again")
    return meta

def open_tokens(data_dir, split, min_len):
    """A split's uint16 token ids as a read-only memmap, checked for the mistakes that make training fail later."""
    path = os.path.join(data_dir, f'{split}.bin')
    if not os.path.exists(path):
        raise UserError(f"{path} not found: prepare the dataset first with python {os.path.join(data_dir, 'prepare.py')}")
    size = os.path.getsize(path)
    if size % 2:
        raise UserError(f"{path} has an odd number of bytes ({size:,}): it is truncated or not uint16 tokens; run prepare.py again")
    if size // 2 < min_len:
        raise UserError(f"{path} holds {size // 2:,} tokens but block_size + 1 = {min_len:,} are needed: "
                        f"use a smaller block_size or more data")
    import numpy as np
    return np.memmap(path, dtype=np.uint16, mode='r')

# -----------------------------------------------------------------------------
# device and precision: one place for train.py, sample.py and bench.py

PTDTYPE = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}

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

def cpu_supports_bf16():
    """
    True on CPUs with native bf16 instructions (AVX512-BF16 or AMX), where bf16 matmuls are
    2.5x (AVX512-BF16) to 10x (AMX) faster than fp32. Elsewhere bf16 is emulated and slower.
    """
    check = lambda name: bool(getattr(torch.cpu, name, lambda: False)())
    return check('_is_avx512_bf16_supported') or check('_is_amx_tile_supported')

def resolve_dtype(dtype, device):
    """'auto' means bf16 where the device runs it natively, else fp16 on CUDA, else fp32."""
    device_type = torch.device(device).type
    if dtype == 'auto':
        if device_type == 'cuda':
            return 'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'
        if device_type == 'cpu':
            return 'bfloat16' if cpu_supports_bf16() else 'float32'
        return 'float32' # mps: autocast there is still young; fp32 is the safe default
    if dtype not in PTDTYPE:
        raise UserError(f"dtype={dtype!r} is not one of 'auto', 'float32', 'bfloat16', 'float16'")
    if dtype == 'bfloat16' and device_type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise UserError("dtype='bfloat16' but this GPU has no bf16: use dtype='float16' or 'auto'")
    if dtype == 'float16' and device_type == 'cpu':
        raise UserError("dtype='float16' is not supported for training on the CPU: use 'bfloat16' or 'float32'")
    return dtype

def autocast_context(device, dtype):
    """Mixed precision for the forward pass; a no-op context in fp32. It really runs on the CPU too."""
    if dtype == 'float32':
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=PTDTYPE[dtype])

# Dense (no sparsity) peak tensor-core FLOP/s per GPU for bf16/fp16, from the vendors' data sheets.
GPU_PEAK_FLOPS = {
    'H200': 989e12, 'H100': 989e12, 'A100': 312e12, 'A10G': 125e12, 'A10': 125e12, 'L40S': 362e12,
    'L4': 121e12, 'RTX 4090': 165e12, 'RTX 3090': 71e12, 'V100': 125e12, 'T4': 65e12,
}
_CPU_PEAK = {}

def measure_matmul_flops(device, dtype, n=1024, iters=8, repeats=3):
    """FLOP/s of an n x n matmul in dtype, measured now (the best of a few tries): the practical peak."""
    a = torch.randn(n, n, device=device, dtype=PTDTYPE[dtype])
    b = torch.randn(n, n, device=device, dtype=PTDTYPE[dtype])
    a @ b # warm up
    best = float('inf')
    for _ in range(repeats):
        if torch.device(device).type == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            a @ b
        if torch.device(device).type == 'cuda':
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 * iters / best

def device_peak_flops(device, dtype, override=0.0):
    """
    The denominator of MFU. override > 0 wins. A GPU by name from GPU_PEAK_FLOPS (fp32 is
    taken as 1/8 of it, the TF32-less ratio on recent parts, honestly rough); anything else,
    the CPU included, gets a matmul rate measured on the spot in that dtype.
    """
    if override > 0:
        return override
    if torch.device(device).type == 'cuda':
        name = torch.cuda.get_device_name(device)
        for key, flops in GPU_PEAK_FLOPS.items():
            if key in name:
                return flops if dtype != 'float32' else flops / 8
    key = (str(device), dtype)
    if key not in _CPU_PEAK:
        _CPU_PEAK[key] = measure_matmul_flops(device, dtype)
    return _CPU_PEAK[key]
