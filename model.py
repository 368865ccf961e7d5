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

import atexit
import logging
import math
import os
import pickle
import random
import re
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.utils.checkpoint
from torch.nn import functional as F

# -----------------------------------------------------------------------------
# the model

GPT2_EOT = 50256 # <|endoftext|>, the token between documents
GPT2_VOCAB_SIZE = GPT2_EOT + 1 # GPT-2's BPE: 50,257 token ids
GPT2_PADDED_VOCAB_SIZE = 50304 # GPT-2's ids padded up to a multiple of 64: the lm_head matmul runs faster

@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = GPT2_PADDED_VOCAB_SIZE
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True # biases in Linears and LayerNorms, like GPT-2. False: a bit better and faster
    gelu_approximate: str = 'none' # 'none': the exact GELU, as nanoGPT; 'tanh': the approximation OpenAI's GPT-2 was trained with

# the keys of GPTConfig, in the order nanoGPT stores them as a checkpoint's 'model_args'
MODEL_ARGS = ('n_layer', 'n_head', 'n_embd', 'block_size', 'bias', 'vocab_size', 'dropout')
# gelu_approximate is kept out of model_args, because nanoGPT's sample.py calls GPTConfig(**model_args) and
# would fail on a key it does not know. A checkpoint stores it under its own key, and only when it is 'tanh'.
GELU_KEY = 'gelu_approximate'
# Hugging Face's names for the two GELUs (gelu_new is GPT-2's: the same tanh formula as PyTorch's approximate='tanh')
HF_GELUS = {'gelu': 'none', 'gelu_new': 'tanh', 'gelu_pytorch_tanh': 'tanh', 'gelu_fast': 'tanh'}

# How attention is computed. 'sdpa' is PyTorch's fused kernel (flash attention on
# GPUs). 'math' is the plain matmul-mask-softmax; it computes the same thing and
# on CPUs its backward pass is much faster than SDPA's. Not an architecture choice,
# so it never goes into a checkpoint's model_args.
ATTN_IMPLS = ('sdpa', 'math')
# What generate() does once the text outgrows block_size: see GPT.generate
OVERFLOW_MODES = ('recompute', 'slide')

class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's own has no bias=False before 2.1)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, input):
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)

# Dropout on CPUs: torch's bernoulli_ draws one Mersenne-Twister number per element through a slow path (measured
# here: 22 ms for the 3.1M-element attention matrix of the 6-layer/384 model, batch 8; dropout 0.2 then took half of
# a bf16 training step). Drawing 64 random bits at a time and comparing each 16-bit slice with a threshold gives the
# same Bernoulli mask in ~4 ms. p is rounded to a multiple of 1/65536 (off by at most 7.6e-6).
DROPOUT_LEVELS = 2 ** 16 # the values one int16 slice takes

class _CPUDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-2**63, None) # every bit uniform
        bits = words.view(torch.int16)[:x.numel()].view(x.shape) # four uniform 16-bit numbers per word
        threshold = round(p * DROPOUT_LEVELS) - DROPOUT_LEVELS // 2 # keep where bits >= threshold: P = 1 - p
        keep = torch.empty(x.shape, dtype=x.dtype)
        torch.ge(bits, threshold, out=keep) # 1.0 or 0.0, written straight in x's dtype (a bool tensor is slower)
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p) # kept ones are scaled up, as F.dropout does; a Python float, so that a bf16
        return (x * keep).mul_(ctx.scale) # x is scaled exactly (1/0.7 in bf16 would be 0.08% off)

    @staticmethod
    def backward(ctx, grad):
        keep, = ctx.saved_tensors
        return (grad * keep).mul_(ctx.scale), None

class Dropout(nn.Dropout):
    """nn.Dropout, with a faster mask on CPUs (see _CPUDropout); elsewhere PyTorch's own."""
    fast_cpu = True # False: PyTorch's dropout on CPUs too (bench.py's nanoGPT baseline)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        if self.fast_cpu and x.device.type == 'cpu' and 0.0 < self.p < 1.0 and x.is_floating_point():
            return _CPUDropout.apply(x, self.p)
        return F.dropout(x, self.p, self.training, self.inplace)

class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        # key, query, value projections for all heads, in one batched matmul
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = Dropout(config.dropout)
        self.resid_dropout = Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.attn_impl = 'sdpa'

    def forward(self, x, kv_cache=None, decode_pos=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        hs = C // self.n_head
        # (B, T, C) -> (B, nh, T, hs)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        mask = None
        if kv_cache is not None and decode_pos is not None: # one token, the fixed shapes of GPT.decode_step
            k, v, mask = kv_cache.write(decode_pos, k, v)
        elif kv_cache is not None:
            k, v = kv_cache.update(k, v)
        if q.dtype != k.dtype: # a cache kept in fp32 (see GPT._new_kv_caches): attend in fp32, give back q's dtype
            y = self._attend(q.to(k.dtype), k, v, mask).to(q.dtype)
        else:
            y = self._attend(q, k, v, mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C) # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))

    def _attend(self, q, k, v, mask=None):
        # q holds the last Tq of the Tk positions in k and v (Tq < Tk when decoding with a cache):
        # query i may look at keys 0 .. Tk - Tq + i.
        Tq, Tk = q.size(-2), k.size(-2)
        dropout_p = self.dropout if self.training else 0.0
        if mask is not None: # one token against the whole preallocated cache, True where written: plain ops, which
            # torch.compile fuses (its lowering of SDPA with a mask was ~150 us per call here, the math ~10 us)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))
            return F.softmax(att.masked_fill(~mask, float('-inf')), dim=-1) @ v
        if Tq == 1 and not torch.is_grad_enabled(): # decoding one token: no mask, no backward; SDPA is one call
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        if self.attn_impl == 'sdpa':
            if Tq == Tk:
                return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
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
        self.gelu    = nn.GELU(approximate=config.gelu_approximate)
        self.c_proj  = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))

class PackedLinear(nn.Module):
    """
    An nn.Linear for bf16 inference on CPUs: the weight is reordered once into oneDNN's blocked layout, the
    kernel torch.compile's freezing uses. F.linear reorders it on every call; for one token at a time that
    reorder is most of the work (measured here: 24 linears of the 6-layer/384 model, batch 1, 2.0-2.2 ms per
    token with F.linear, 0.75-0.9 ms packed; the outputs are identical). Made by prepare_for_sampling only.
    """

    def __init__(self, linear):
        super().__init__()
        self.weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 1) # 1: tuned for one row
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x):
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, 'none', [], '')

def packed_linear_supported():
    """Whether this torch has oneDNN's packed bf16 linear kernels and this CPU can run them (AVX512 or AVX-NE-CONVERT)."""
    try:
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError): # private ops: a torch without them samples with plain F.linear
        return False

class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, kv_cache=None, decode_pos=None):
        x = x + self.attn(self.ln_1(x), kv_cache, decode_pos)
        x = x + self.mlp(self.ln_2(x))
        return x

class KVCache:
    """Keys and values of the positions seen so far, for one layer, preallocated to block_size."""

    def __init__(self, batch_size, n_head, block_size, head_size, device, dtype):
        shape = (batch_size, n_head, block_size, head_size)
        # zeros, not empty: write()'s masked attention multiplies the unwritten values by 0, and 0 * NaN is NaN
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.len = 0

    def update(self, k, v):
        """Append T positions at self.len; return the keys and values of all positions so far."""
        T = k.size(2)
        self.k[:, :, self.len:self.len + T] = k
        self.v[:, :, self.len:self.len + T] = v
        self.len += T
        return self.k[:, :, :self.len], self.v[:, :, :self.len]

    def write(self, pos, k, v):
        """
        Write one position's keys and values at pos (a 1-element tensor, so that a compiled caller does not
        recompile for every position) and return the whole buffers with a (block_size,) mask of the positions
        0..pos: the same shapes for every token. The caller advances self.len (run_compiled_decode_step).
        """
        self.k.index_copy_(2, pos, k.to(self.k.dtype))
        self.v.index_copy_(2, pos, v.to(self.v.dtype))
        return self.k, self.v, torch.arange(self.k.size(2), device=pos.device) <= pos

class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        check_config(config)
        self.config = config

        self.transformer = nn.ModuleDict(dict(
            wte = nn.Embedding(config.vocab_size, config.n_embd),
            wpe = nn.Embedding(config.block_size, config.n_embd),
            drop = Dropout(config.dropout),
            h = nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f = LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # a runtime choice, not part of config: checkpoints stay nanoGPT's
        self.grad_checkpointing = False # recompute each block's activations in backward instead of storing them
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

    def forward(self, idx, targets=None, kv_caches=None, decode_pos=None):
        """
        idx (b, t) token ids; with targets, also the loss. kv_caches (one KVCache per layer): idx continues
        the positions they hold. decode_pos (with kv_caches, t == 1): idx's position as a 1-element tensor;
        every shape is then the same for every position (see decode_step).
        """
        device = idx.device
        b, t = idx.size()
        if decode_pos is not None:
            pos = decode_pos
        else:
            start = kv_caches[0].len if kv_caches is not None else 0
            if start + t > self.config.block_size:
                raise UserError(f"cannot forward a sequence of length {start + t}: block_size is only {self.config.block_size}")
            pos = torch.arange(start, start + t, dtype=torch.long, device=device)

        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                # keep only the block's input; its inner activations are recomputed in backward (memory for compute)
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x, kv_caches[i] if kv_caches is not None else None, decode_pos)
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

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, fused=None, muon=False):
        """
        AdamW with weight decay on matrices and embeddings (2+ dims) only: biases and
        LayerNorm gains are not decayed. fused=None uses the fused kernel wherever
        this torch has it for the parameters' device (the CPU included since torch 2.4).
        device_type is unused: it stays for nanoGPT's signature, so callers written for it still work.
        muon=True: torch.optim.Muon for the blocks' weight matrices instead, with the same learning_rate
        and weight_decay (see MuonWithAdamW); AdamW keeps the embeddings, LayerNorms and biases.
        """
        param_dict = {pn: p for pn, p in self.named_parameters() if p.requires_grad}
        muon_params = [p for pn, p in param_dict.items() if muon and pn.startswith('transformer.h.') and p.dim() == 2]
        muon_ids = {id(p) for p in muon_params}
        decay_params = [p for p in param_dict.values() if p.dim() >= 2 and id(p) not in muon_ids]
        nodecay_params = [p for p in param_dict.values() if p.dim() < 2]
        optim_groups = [
            {'params': decay_params, 'weight_decay': weight_decay},
            {'params': nodecay_params, 'weight_decay': 0.0}
        ]
        if fused is not None:
            adamw = torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas, fused=fused or None)
        else:
            try: # the fused kernel: one pass over all parameters instead of many small ops
                adamw = torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas, fused=True)
            except (RuntimeError, ValueError): # this torch has no fused AdamW for this device
                adamw = torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas)
        if not muon:
            return adamw
        device = muon_params[0].device
        native_bf16 = torch.cuda.is_bf16_supported() if device.type == 'cuda' else device.type == 'cpu' and cpu_supports_bf16()
        muon_cls = torch.optim.Muon if native_bf16 else MuonFp32
        # 'match_rms_adamw' scales each matrix's step so that its size matches an AdamW step: one learning_rate serves both
        return MuonWithAdamW(adamw, muon_cls(muon_params, lr=learning_rate, weight_decay=weight_decay,
                                             adjust_lr_fn='match_rms_adamw'))

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
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, use_kv_cache=True, overflow='recompute',
                 compile=False):
        """
        Continue the token sequences idx (LongTensor (b, t)) by max_new_tokens tokens.
        Use in eval() mode. With the KV cache only the new token goes through the model
        each step. What happens once the context outgrows block_size is set by overflow:
        - 'recompute' (nanoGPT's behaviour, exact): the context is cropped to the last
          block_size tokens every step; their positions all shift, so the whole cropped
          context goes through the model again for every token. The result is the same
          as running the full forward on the (cropped) context every step, but past
          block_size each token costs a full block_size forward: the cache stops helping.
        - 'slide' (fast, not nanoGPT-equivalent): when the cache is full, only the last
          block_size // 2 tokens are kept, fed again at positions 0.., and decoding goes on
          with the cache. Positions stay consistent (every cached key was computed at the
          position its query side assumes), and a re-fill costs one forward of half a block
          every half block of tokens. The price: a token sees between block_size // 2 and
          block_size - 1 tokens of context instead of always block_size, so samples differ
          from nanoGPT's past block_size (and from 'recompute') and may be slightly worse.
        compile=True (with the KV cache) runs each one-token step through torch.compile: the step has the
        same shapes for every token (decode_step), so it compiles once, on the first call, and its many
        small ops become a few fused kernels. Only for a model that no longer trains, as after
        prepare_for_sampling: a compiled step may keep using the weights it was compiled with.
        """
        check_sampling(temperature, top_k, overflow)
        if compile and any(isinstance(m, PackedLinear) for m in self.modules()):
            raise UserError("compile=True needs the model prepared with prepare_for_sampling(..., compile=True): "
                            "torch.compile cannot take PackedLinear's packed weights")
        block_size = self.config.block_size
        keep = max(1, block_size // 2) # what 'slide' keeps of a full cache
        b, t = idx.size()
        # the output is written in place: no torch.cat of the growing sequence every step
        out = torch.empty(b, t + max_new_tokens, dtype=idx.dtype, device=idx.device)
        out[:, :t] = idx
        caches = None
        checked = False # whether a compiled step of this call has run with dynamo's guards checked
        for n in range(t, t + max_new_tokens):
            if caches is not None and caches[0].len < block_size and compile and use_kv_cache:
                # the model and the sampling below in one compiled call: run eagerly, the sampling ops and the
                # return to Python cost ~0.2 ms per token here (measured against a ~1.5 ms compiled step)
                last = run_compiled_decode_step(self, last, caches, temperature, top_k, check_guards=not checked)
                checked = True
                out[:, n:n + 1] = last
                continue
            if not use_kv_cache:
                logits, _ = self(out[:, max(0, n - block_size):n])
            elif caches is not None and caches[0].len < block_size:
                logits, _ = self(out[:, n - 1:n], kv_caches=caches) # the cache holds everything before it
            else:
                # first step, or the cache is full: refill it from the (cropped) context
                context = keep if caches is not None and overflow == 'slide' else block_size
                if caches is None:
                    caches = self._new_kv_caches(b, idx.device, fixed_shape=compile)
                for cache in caches:
                    cache.len = 0
                logits, _ = self(out[:, max(0, n - context):n], kv_caches=caches)
            last = sample_next(logits, temperature, top_k) # (b, 1), contiguous: what the compiled step was made for
            out[:, n:n + 1] = last
        return out

    def decode_step(self, idx, pos, caches):
        """Logits (b, 1, vocab) for one new token idx (b, 1) at position pos (a 1-element tensor), writing caches."""
        return self(idx, kv_caches=caches, decode_pos=pos)[0]

    def decode_and_sample(self, idx, pos, caches, temperature, top_k):
        """decode_step, then the next token drawn from its logits: what generate(compile=True) compiles."""
        return sample_next(self.decode_step(idx, pos, caches), temperature, top_k, compilable=True)

    def _new_kv_caches(self, batch_size, device, fixed_shape=False):
        cfg = self.config
        dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else self.lm_head.weight.dtype
        if device.type == 'cpu' and not fixed_shape:
            # On CPUs the cache is fp32 even for a bf16 model: oneDNN builds a new bf16 kernel for every new key
            # length, measured here at ~0.7 ms per attention matmul, against ~14 us for fp32's (MKL) matmul.
            # The compiled step (fixed_shape) always attends to the whole cache, so it keeps the model's dtype.
            dtype = torch.float32
        return [KVCache(batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head, device, dtype)
                for _ in range(cfg.n_layer)]

    # -------------------------------------------------------------------------
    # checkpoints

    @classmethod
    def from_checkpoint(cls, path, device='cpu', unsafe=False, **overrides):
        """
        Load a checkpoint written by train.py here or by nanoGPT. Returns (model, checkpoint).
        overrides (e.g. dropout=0.0) replace entries of the stored model_args; unsafe: see load_checkpoint.
        """
        checkpoint = load_checkpoint(path, device, unsafe)
        try:
            model_args = {k: checkpoint['model_args'][k] for k in MODEL_ARGS}
        except (KeyError, TypeError):
            raise CheckpointError(f"{path} has no complete 'model_args' ({', '.join(MODEL_ARGS)}): "
                                  f"it is not a GPT checkpoint from train.py or nanoGPT")
        model_args[GELU_KEY] = checkpoint.get(GELU_KEY, 'none') # nanoGPT's checkpoints: the exact GELU
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

    @classmethod
    def from_pretrained(cls, name_or_dir, override_args=None):
        """
        GPT-2's weights through Hugging Face transformers: a name from GPT2_SIZES (downloaded once into the
        Hugging Face cache, and read from there afterwards, offline too) or a local directory written by
        save_pretrained or export_hf. override_args may only set dropout: the rest is the weights' own shape.
        The MLP uses the GELU the weights were trained with: GPT-2's tanh approximation (HF's 'gelu_new'),
        where nanoGPT uses the exact one and so gets logits that differ by ~1e-3.
        """
        override_args = dict(override_args or {})
        if set(override_args) - {'dropout'}:
            raise UserError(f"only dropout can be changed when loading GPT-2 weights, not {sorted(set(override_args) - {'dropout'})}")
        if name_or_dir not in GPT2_SIZES:
            read_hf_config(name_or_dir) # a clear error for a directory that is not GPT-2, before loading anything big
        from transformers import GPT2LMHeadModel
        from transformers.utils.logging import disable_progress_bar
        disable_progress_bar() # its per-tensor bar for a load of seconds; a download keeps huggingface_hub's bar
        hub_log = logging.getLogger('huggingface_hub')
        hub_level = hub_log.level
        hub_log.setLevel(logging.ERROR) # offline it warns about each failed request; the error below says what to do
        try:
            hf = GPT2LMHeadModel.from_pretrained(name_or_dir)
        except Exception as e:
            where = ("online once to download them into the Hugging Face cache, or set init_from to a local directory"
                     if name_or_dir in GPT2_SIZES else "the directory needs config.json and model.safetensors (or pytorch_model.bin)")
            raise UserError(f"could not load GPT-2 weights {name_or_dir!r} ({type(e).__name__}: {first_line(e)}): {where}")
        finally:
            hub_log.setLevel(hub_level)
        hf_cfg = hf.config
        check_hf_gpt2_config(hf_cfg.to_dict(), name_or_dir)
        print(f"loading weights from pretrained gpt: {name_or_dir} ({hf_cfg.n_layer} layers, {hf_cfg.n_head} heads, {hf_cfg.n_embd} wide)")
        config = GPTConfig(n_layer=hf_cfg.n_layer, n_head=hf_cfg.n_head, n_embd=hf_cfg.n_embd, block_size=hf_cfg.n_positions,
                           vocab_size=hf_cfg.vocab_size, bias=True, dropout=override_args.get('dropout', 0.0),
                           gelu_approximate=HF_GELUS[hf_cfg.activation_function])
        model = cls(config)
        sd_hf = hf.state_dict()
        if 'lm_head.weight' not in sd_hf: # tied: some versions store it only once
            sd_hf['lm_head.weight'] = sd_hf['transformer.wte.weight']
        sd = model.state_dict()
        unknown = [k for k in sd_hf if k not in sd and not k.endswith(('.attn.bias', '.attn.masked_bias'))] # those two are masks
        if unknown:
            raise UserError(f"{name_or_dir} has weights this GPT does not know ({unknown[:3]}): not a plain GPT-2")
        with torch.no_grad():
            for k, v in sd.items():
                if k not in sd_hf:
                    raise UserError(f"{name_or_dir} has no weight {k}: not a complete GPT-2")
                src = sd_hf[k]
                if k.endswith(HF_CONV1D): # HF's Conv1D stores (in, out); nn.Linear wants (out, in)
                    src = src.t()
                v.copy_(src) # the state dict's tensors share storage with the parameters
        return model

# the smallest temperature: logits / temperature must stay finite in fp32 (at 1e-6, logits up to 3e32 do), or
# softmax gives NaNs; top_k=1 is the way to sample greedily
MIN_TEMPERATURE = 1e-6

def check_sampling(temperature, top_k, overflow):
    """One-line errors for sampling settings that generate() cannot use (sample.py checks them before loading)."""
    if not temperature >= MIN_TEMPERATURE:
        raise UserError(f"temperature={temperature} must be >= {MIN_TEMPERATURE} (small values like 0.1 are nearly greedy; "
                        f"top_k=1 is greedy)")
    if top_k is not None and top_k <= 0:
        raise UserError(f"top_k={top_k} must be > 0 (top_k=1 is greedy; a value >= the vocab size, or None, keeps every token)")
    if overflow not in OVERFLOW_MODES:
        raise UserError(f"overflow={overflow!r} is not one of {', '.join(map(repr, OVERFLOW_MODES))}")

def sample_next(logits, temperature, top_k, compilable=False):
    """
    The next token (b, 1) drawn from the last position's logits (b, t, vocab), as nanoGPT draws it.
    compilable: draw it the way torch.multinomial draws one sample, argmax(probs / Exp(1) noise), written out
    (inductor has no kernel for multinomial and calls back into it, slower than eager); from the same generator
    state this gives the same token (tests/test_model.py checks compiled against eager sampling).
    """
    logits = logits[:, -1, :].float() / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits = logits.masked_fill(logits < v[:, [-1]], -float('Inf'))
    probs = F.softmax(logits, dim=-1)
    if compilable:
        return (probs / torch.empty_like(probs).exponential_()).argmax(dim=-1, keepdim=True)
    return torch.multinomial(probs, num_samples=1)

# On CPUs the decoding step compiles with max-autotune: inductor then times its own C++ GEMM kernels (AMX
# micro-kernels on CPUs that have AMX) against the oneDNN call for each linear layer of the frozen model and keeps
# the faster. Measured on Sapphire Rapids, 6-layer/384 model: 680 -> 1,054-1,143 tokens/s; compiling took 18 s
# instead of 11.5 s with inductor's cache warm, 40 s with it cold (~2 s of timing per weight shape).
CPU_DECODE_COMPILE_MODE = 'max-autotune-no-cudagraphs'
_COMPILED_DECODE_STEPS = {} # one compiled function per device type
def run_compiled_decode_step(model, idx, caches, temperature, top_k, check_guards=True):
    """
    The token after idx (b, 1), contiguous, at the length of caches, which it advances, through
    GPT.decode_and_sample compiled (once per process, and again for a new model, shape or sampling
    setting). check_guards=False skips dynamo's checks that the compiled code still fits: only right after
    a checked call with the same model, caches, shapes and settings, as within one generate() (measured
    here: ~0.25 ms of a ~1.6 ms step of the 6-layer/384 model).
    """
    device_type = idx.device.type
    if device_type not in _COMPILED_DECODE_STEPS:
        mode = CPU_DECODE_COMPILE_MODE if device_type == 'cpu' else None
        _COMPILED_DECODE_STEPS[device_type] = torch.compile(GPT.decode_and_sample, fullgraph=True, dynamic=False, mode=mode)
    pos = torch.full((1,), caches[0].len, dtype=torch.long, device=idx.device)
    # inductor settings, read when it compiles: freezing makes the weights constants, which lets it pack the
    # bf16 linears for oneDNN as PackedLinear does (it cannot take PackedLinear's packed weights as inputs);
    # on CPUs cpp_wrapper calls the kernels from C++ instead of Python: less overhead per token;
    # fallback_random draws from torch's own generator, as eager does: the same seed gives the same tokens
    settings = (torch._inductor.config.patch(freezing=True, cpp_wrapper=device_type == 'cpu', fallback_random=True)
                if check_guards else nullcontext())
    with torch.compiler.set_stance('default', skip_guard_eval_unsafe=not check_guards), settings:
        token = _COMPILED_DECODE_STEPS[device_type](model, idx, pos, caches, temperature, top_k)
    for cache in caches:
        cache.len += 1
    return token

def _run_closure(closure):
    """An optimizer's step(closure): the loss the closure recomputes (with gradients), or None."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()

class MuonWithAdamW(torch.optim.Optimizer):
    """
    Muon (torch.optim.Muon: momentum, then each update orthogonalized by a Newton-Schulz iteration) for the
    blocks' weight matrices and AdamW for the rest, presented as one optimizer: one state dict and one list of
    param_groups (AdamW's two first, then Muon's), so that the LR schedule, GradScaler, checkpoints and rollback
    use it just as they use AdamW. The two optimizers inside work on this one's group dicts and state.
    Measured on the CPU config: a clearly lower loss for the same number of steps (README: Muon).
    """

    def __init__(self, adamw, muon):
        self.adamw, self.muon = adamw, muon
        super().__init__(adamw.param_groups + muon.param_groups, {})
        self._share()

    def _share(self):
        n = len(self.adamw.param_groups)
        self.adamw.param_groups, self.muon.param_groups = self.param_groups[:n], self.param_groups[n:]
        self.adamw.state = self.muon.state = self.state # keyed by parameter: the two sets of parameters are disjoint

    @torch.no_grad()
    def step(self, closure=None):
        loss = _run_closure(closure)
        self.adamw.step()
        self.muon.step()
        return loss

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict) # this makes new group dicts and a new state: share them again
        self._share()

class MuonFp32(torch.optim.Muon):
    """
    torch.optim.Muon with its Newton-Schulz iteration in fp32 instead of bf16, for devices without native bf16:
    a CPU with AVX2 only emulates bf16 matmuls (0.9 against 130-160 GFLOP/s in fp32), where torch's bf16 iteration
    made a step of the CPU config 3x slower. The same update, coefficients and state (one momentum_buffer) as torch's,
    for the adjust_lr_fn='match_rms_adamw' that configure_optimizers gives it.
    """

    @torch.no_grad()
    def step(self, closure=None):
        loss = _run_closure(closure)
        for group in self.param_groups:
            a, b, c = group['ns_coefficients']
            for p in group['params']:
                if p.grad is None:
                    continue
                state = self.state[p]
                if 'momentum_buffer' not in state:
                    state['momentum_buffer'] = torch.zeros_like(p.grad)
                buf = state['momentum_buffer']
                buf.lerp_(p.grad, 1 - group['momentum'])
                update = p.grad.lerp(buf, group['momentum']) if group['nesterov'] else buf
                # X <- aX + (bG + cG^2)X with G = XX^T, on the wide side so that G is the smaller Gram matrix
                tall = update.size(0) > update.size(1)
                x = update.T if tall else update
                x = x / x.norm().clamp(min=group['eps']) # spectral norm at most 1
                for _ in range(group['ns_steps']):
                    gram = x @ x.T
                    x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
                p.mul_(1 - group['lr'] * group['weight_decay'])
                p.add_(x.T if tall else x, alpha=-group['lr'] * 0.2 * math.sqrt(max(p.shape))) # match_rms_adamw
        return loss

def cosine_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr):
    """nanoGPT's schedule: linear warmup for warmup_iters, cosine decay to min_lr at lr_decay_iters, then flat."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it >= lr_decay_iters: # where the cosine ends anyway; also no division by zero when lr_decay_iters == warmup_iters
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

def load_checkpoint(path, device='cpu', unsafe=False):
    """
    torch.load with a one-line error for a file that is missing or not a checkpoint.
    Checkpoints load with weights_only=True: tensors and plain Python values, nothing executable.
    A (nanoGPT) checkpoint that holds other Python objects is refused unless unsafe=True, which
    unpickles it in full (that can run code: only for files you trust) and says so on stderr.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}: train one first (python train.py ...) or set out_dir to the run's directory")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch words every refusal 'Weights only load failed'; only 'Unsupported global' means a class or function
        # was named (an object beyond tensors): anything else (e.g. 'Unsupported operand') is not a pickle at all
        if 'Unsupported global' not in str(e):
            raise CheckpointError(f"{path} is not a readable checkpoint (truncated, corrupt, or another format)")
        if not unsafe:
            raise CheckpointError(f"{path} holds Python objects beyond tensors and plain values, and loading it could run code: "
                                  f"if you trust the file, rerun with --unsafe_load=True")
        print(f"warning: loading {path} with the unsafe pickle loader (unsafe_load=True): it can run code", file=sys.stderr)
        try:
            checkpoint = torch.load(path, map_location=device, weights_only=False)
        except Exception as e:
            raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {type(e).__name__}: {first_line(e)}")
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
    tmp = f"{path}{TMP_MARK}{os.getpid()}"
    try:
        with open(tmp, 'wb') as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(path)) # make the rename itself durable
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

TMP_MARK = '.tmp.' # a save in progress: <name>.tmp.<pid>; one left behind was cut short by a crash
BEST_CKPT = 'best.pt'
HISTORY_CKPT = re.compile(r'^ckpt_(\d+)\.pt$') # the keep_last history: ckpt_<iter>.pt

def _fsync_dir(path):
    try:
        fd = os.open(path or '.', os.O_RDONLY)
    except OSError: # not every OS can open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

def _link_atomic(src, dst):
    """dst becomes the same file as src: a hard link (no copy, instant), or a copy where links are not supported."""
    tmp = f"{dst}{TMP_MARK}{os.getpid()}"
    try:
        try:
            os.link(src, tmp)
        except OSError:
            import shutil
            shutil.copyfile(src, tmp)
            with open(tmp, 'rb+') as f:
                os.fsync(f.fileno())
        os.replace(tmp, dst)
        _fsync_dir(os.path.dirname(dst))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

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
    intact) and return their names. An out_dir created here that is still empty when the process
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
    partial = [n for n in os.listdir(out_dir) if TMP_MARK in n and n.split(TMP_MARK)[0].endswith('.pt')]
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
    return state

def set_rng_state(state):
    """Restore what rng_state() captured, so that a resumed run draws the same dropout masks."""
    torch.set_rng_state(state['torch'].cpu())
    n = state['numpy']
    np.random.set_state(('MT19937', n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'], n['cached_gaussian']))
    p = state['python']
    random.setstate((p['version'], tuple(p['internal']), p['gauss_next']))
    if 'cuda' in state and torch.cuda.is_available():
        for i, s in enumerate(state['cuda'][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu(), i)

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
                reason = f"loss spike: {loss:.4f} is {(loss - mean) / std:.1f} standard deviations above the last {self.window} steps' mean {mean:.4f}"
        if reason is None:
            self.bad_streak = 0
            self.recent = (self.recent + [loss])[-self.window:]
        else:
            self.skipped += 1
            self.bad_streak += 1
        return reason

    def state_dict(self):
        return {'recent': list(self.recent), 'skipped': self.skipped, 'bad_streak': self.bad_streak, 'lr_scale': self.lr_scale}

    def load_state_dict(self, state):
        self.recent = [float(x) for x in state['recent']][-self.window:]
        self.skipped, self.bad_streak, self.lr_scale = int(state['skipped']), int(state['bad_streak']), float(state['lr_scale'])

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
        os.write(sys.stderr.fileno(), f"{self.signal}: stopping after this step (send it again to quit at once)\n".encode())

def resume_command(argv, world_size=1):
    """The command line that continues this run: the same arguments with init_from='resume'."""
    import shlex
    args = [a for a in argv[1:] if not a.startswith('--init_from=')]
    launcher = ['python'] if world_size == 1 else ['torchrun', f'--nproc_per_node={world_size}']
    return shlex.join(launcher + [argv[0], *args, '--init_from=resume'])

# -----------------------------------------------------------------------------
# datasets: data/<name>/{train,val}.bin and, for char-level data, meta.pkl

def step_windows(stream, n_windows, n_positions):
    """
    The start positions of one training step's n_windows windows, drawn from n_positions, reproducibly from
    stream (a list of ints, e.g. [seed, split, step]). Distinct while n_positions allows, so ranks and micro-steps
    that each take their own slice of them never see the same window twice in one step.
    """
    rng = np.random.default_rng(stream)
    return rng.choice(n_positions, size=n_windows, replace=n_windows > n_positions)

class _PlainUnpickler(pickle.Unpickler):
    """Unpickles only builtin containers and values (dict, list, str, int...): those need no class lookup."""

    def find_class(self, module, name):
        raise UserError(f"it refers to {module}.{name}")

def meta_file(data_dir):
    """The file load_meta reads in data_dir: meta.json first, else nanoGPT's meta.pkl; None if neither is there."""
    for name in ('meta.json', 'meta.pkl'):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    return None

def load_meta(data_dir):
    """
    The tokenizer metadata {'vocab_size', 'itos', 'stoi'} of a dataset, or None if it has none (GPT-2 BPE).
    meta.json is read first; meta.pkl (nanoGPT's format) only when there is no JSON, and only if it
    is a plain dict of plain values: a pickle that names any class or function is refused unread.
    """
    path = meta_file(data_dir)
    fix = "run the dataset's prepare.py again"
    if path is None:
        return None
    if path.endswith('.json'):
        import json
        try:
            with open(path, encoding='utf-8') as f:
                raw = json.load(f)
            itos = dict(enumerate(raw['itos'])) # JSON keeps itos as a list: the token id is the index
            meta = {'vocab_size': raw['vocab_size'], 'itos': itos, 'stoi': {s: i for i, s in itos.items()}}
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path} is not valid tokenizer metadata ({type(e).__name__}: {first_line(e)}): {fix}")
    else:
        try:
            with open(path, 'rb') as f:
                meta = _PlainUnpickler(f).load()
        except UserError as e:
            raise UserError(f"{path} is not a plain dict ({e}), so it is not unpickled: it could run code; {fix}")
        except Exception as e:
            raise UserError(f"{path} is unreadable ({type(e).__name__}): {fix}")
    if not isinstance(meta, dict) or not {'vocab_size', 'itos', 'stoi'} <= set(meta):
        raise UserError(f"{path} is not a dict with vocab_size, itos and stoi: {fix}")
    if (not isinstance(meta['vocab_size'], int) or not isinstance(meta['itos'], dict) or not isinstance(meta['stoi'], dict)
            or not all(isinstance(i, int) and isinstance(s, str) for i, s in meta['itos'].items())
            or not all(isinstance(s, str) and isinstance(i, int) for s, i in meta['stoi'].items())):
        raise UserError(f"{path} does not map token ids to strings (vocab_size int, itos {{int: str}}, stoi {{str: int}}): {fix}")
    return meta

def open_tokens(data_dir, split, min_len):
    """A split's uint16 token ids as a read-only memmap, checked for the mistakes that make training fail later."""
    path = os.path.join(data_dir, f'{split}.bin')
    if not os.path.exists(path):
        prepare = os.path.join(data_dir, 'prepare.py')
        if os.path.exists(prepare):
            raise UserError(f"{path} not found: prepare the dataset first with python {prepare}")
        data_root = os.path.dirname(os.path.abspath(data_dir))
        known = sorted(d for d in (os.listdir(data_root) if os.path.isdir(data_root) else [])
                       if os.path.isfile(os.path.join(data_root, d, 'prepare.py')))
        raise UserError(f"no dataset {os.path.basename(data_dir)!r}: {path} does not exist and there is no {prepare} "
                        f"to make it; give dataset= one of {', '.join(known) or 'the folders under data/'}, "
                        f"or write {split}.bin there yourself")
    size = os.path.getsize(path)
    if size % 2:
        raise UserError(f"{path} has an odd number of bytes ({size:,}): it is truncated or not uint16 tokens; run prepare.py again")
    if size // 2 < min_len:
        raise UserError(f"{path} holds {size // 2:,} tokens but block_size + 1 = {min_len:,} are needed: "
                        f"use a smaller block_size or more data")
    return np.memmap(path, dtype=np.uint16, mode='r')

# -----------------------------------------------------------------------------
# sharded training (FSDP2) and its checkpoints, which stay in the single-process format

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

def set_cpu_threads(threads, ranks_here=1):
    """
    Set this process's intra-op threads for CPU work and return how many it has. threads > 0: that many.
    0: torch's default (one per core) for one process; for ranks_here > 1 processes on this machine (torchrun),
    the CPUs this process may use split evenly among them. More threads than cores made steps 3-5x slower
    (README, "Multi-GPU and multi-node"), and torchrun's own default of 1 thread leaves the rest of a bigger
    machine idle.
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
        raise UserError("dtype='float16' is for GPUs, not the CPU: use 'bfloat16' or 'float32' (or 'auto')")
    if dtype == 'bfloat16' and device_type == 'cpu' and not cpu_supports_bf16():
        print("warning: this CPU has no native bf16 (AVX512-BF16 or AMX), so bfloat16 is emulated and runs "
              "many times slower than float32; dtype='auto' picks float32 here", file=sys.stderr)
    return dtype

def autocast_context(device, dtype):
    """
    Mixed precision for the forward pass; a no-op context in fp32. It really runs on the CPU too.
    On CUDA it also lets fp32 matmuls use TF32 tensor cores.
    """
    if torch.device(device).type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if dtype == 'float32':
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=PTDTYPE[dtype])

def prepare_for_sampling(model, device, dtype, compile=False):
    """
    Make model (in place, so use it only to sample from) run generate() fast in dtype, and return it.
    fp32: unchanged. Otherwise the weights are cast to dtype once, instead of autocast casting each
    weight for every op of every token, and the caller runs generate() without autocast. On CPUs in
    bf16 the linear layers are also packed (PackedLinear), where this torch has oneDNN's packed kernels,
    unless compile (generate(compile=True)), whose frozen weights inductor packs itself.
    The residual stream and LayerNorms then run in bf16 too: tests/test_model.py checks that greedy
    bf16 samples stay close to the fp32 model's.
    """
    model.eval()
    if dtype == 'float32':
        return model
    model.to(PTDTYPE[dtype])
    if torch.device(device).type == 'cpu' and dtype == 'bfloat16' and not compile and packed_linear_supported():
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.Linear):
                    try:
                        setattr(module, name, PackedLinear(child))
                    except (RuntimeError, AttributeError): # a torch without these kernels: plain F.linear
                        return model
    return model

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
    freed, so every step page-faults megabytes of fresh zeroed pages in again. Measured here on the
    6-layer/384, block 256, batch 8 model in bf16: 530 -> 465 ms/iter (the CPU config's smaller
    activations: no change). The process keeps its peak memory
    instead. Call it once in a process that runs on the CPU; it does nothing without glibc (macOS, Windows).
    Returns True if the settings were applied.
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
                        ((M_MMAP_THRESHOLD, MALLOC_MMAP_MAX), (M_TRIM_THRESHOLD, MALLOC_NEVER_TRIM), (M_TOP_PAD, MALLOC_TOP_PAD)))
    return _MALLOC_TUNED

def resolve_attn_impl(attn_impl, device):
    """'auto' means sdpa (flash attention) on GPUs and 'math' on CPUs, whose SDPA backward is slow."""
    if attn_impl == 'auto':
        return 'math' if torch.device(device).type == 'cpu' else 'sdpa'
    if attn_impl not in ATTN_IMPLS:
        raise UserError(f"attn_impl={attn_impl!r} is not one of 'auto', {', '.join(map(repr, ATTN_IMPLS))}")
    return attn_impl

# Dense (no sparsity) peak tensor-core FLOP/s per GPU for bf16/fp16, from the vendors' data sheets.
GPU_PEAK_FLOPS = {
    'H200': 989e12, 'H100': 989e12, 'A100': 312e12, 'A10G': 125e12, 'A10': 125e12, 'L40S': 362e12,
    'L4': 121e12, 'RTX 4090': 165e12, 'RTX 3090': 71e12, 'V100': 125e12, 'T4': 65e12,
}
_CPU_PEAK = {}

MATMUL_WARMUP_SECONDS = 0.2 # start the thread pool and reach full clocks before timing anything

def measure_matmul_flops(device, dtype, n=1024, iters=8, repeats=5):
    """FLOP/s of an n x n matmul in dtype, measured now (the best of a few tries): the practical peak."""
    # its own generator: train.py measures mid-run, and drawing from the global one would change the dropout masks
    g = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, dtype=PTDTYPE[dtype], generator=g) for _ in range(2))
    is_cuda = torch.device(device).type == 'cuda'
    def timed(k):
        if is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(k):
            a @ b
        if is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0
    # warm up for a fixed time rather than a fixed count: long enough however fast one matmul is
    t_end = time.perf_counter() + MATMUL_WARMUP_SECONDS
    while time.perf_counter() < t_end:
        timed(1)
    return 2 * n**3 * iters / min(timed(iters) for _ in range(repeats))

def device_peak_flops(device, dtype, override=0.0, remeasure=False):
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
    if torch.device(device).type == 'cpu' and not cpu_supports_bf16():
        # no bf16 units: bf16 is emulated far below the fp32 rate (measured: 0.9 vs 164 GFLOP/s on an AVX2-only
        # EPYC), so the hardware's peak is its fp32 rate, and a bf16 run's MFU shows how little of it is used
        dtype = 'float32'
    key = (str(device), dtype)
    if key not in _CPU_PEAK or remeasure: # a shared machine's rate swings: keep the best of every measurement
        _CPU_PEAK[key] = max(_CPU_PEAK.get(key, 0.0), measure_matmul_flops(device, dtype))
    return _CPU_PEAK[key]

# -----------------------------------------------------------------------------
# GPT-2: its tokenizer, uint16 token files, and Hugging Face weights in and out

# the pretrained GPT-2 sizes init_from accepts: (n_layer, n_head, n_embd); all have vocab 50257, block 1024, biases
GPT2_SIZES = {
    'gpt2':        (12, 12, 768),  # 124M params
    'gpt2-medium': (24, 16, 1024), # 350M params
    'gpt2-large':  (36, 20, 1280), # 774M params
    'gpt2-xl':     (48, 25, 1600), # 1558M params
}
MIN_SHARD_TOKENS = 2**20 # write_token_shards' smallest piece (2 MB of uint16)
# the weights that Hugging Face's GPT-2 keeps in Conv1D modules, stored transposed relative to nn.Linear
HF_CONV1D = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')
# where tiktoken fetches GPT-2's BPE files, and their sha256 (tiktoken checks it, and drops a cached file that fails)
GPT2_BPE_FILES = {
    'encoder.json': ('https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json',
                     '196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783'),
    'vocab.bpe': ('https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe',
                  '1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5'),
}
_GPT2_ENCODING = None

ERROR_DETAIL_CHARS = 200 # how much of a library's error message goes into ours

def first_line(e):
    """The start of an exception's message for a one-line error: its first line, cut after a sentence if long."""
    lines = str(e).strip().splitlines()
    if not lines:
        return 'no message'
    line = lines[0]
    if len(line) > ERROR_DETAIL_CHARS:
        end = line.rfind('. ', 0, ERROR_DETAIL_CHARS)
        line = line[:end + 1] if end > 0 else line[:ERROR_DETAIL_CHARS] + '...'
    return line

def read_utf8(path, what):
    """The text of a file; one that is not UTF-8 is a UserError that says how to convert it (what: e.g. 'the prompt')."""
    try:
        with open(path, encoding='utf-8') as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start:,}): convert it, "
                        f"e.g. iconv -f latin1 -t utf-8 {path} > utf8.txt, and use utf8.txt in its place") from None

def is_pretrained(init_from):
    """True for init_from values that name GPT-2 weights: a GPT2_SIZES name or a local directory."""
    return init_from in GPT2_SIZES or os.path.isdir(init_from)

def gpt2_encoding():
    """
    tiktoken's 'gpt2' encoding: the one tokenizer of the prepare scripts, sample.py and evals.
    tiktoken downloads encoder.json and vocab.bpe once and caches them (in $TIKTOKEN_CACHE_DIR when set).
    Offline, set GPT2_BPE_DIR to a directory that holds those two files (e.g. ../shared/data/gpt2-bpe):
    they are checked and copied into a private cache under the names tiktoken looks for, so the
    directory itself may be read-only and is never written to.
    """
    global _GPT2_ENCODING
    if _GPT2_ENCODING is not None:
        return _GPT2_ENCODING
    import tiktoken
    bpe_dir = os.environ.get('GPT2_BPE_DIR')
    if not bpe_dir:
        try:
            _GPT2_ENCODING = tiktoken.get_encoding('gpt2')
        except Exception as e:
            raise UserError(f"the GPT-2 tokenizer could not be loaded ({type(e).__name__}: {first_line(e)}); offline, "
                            f"set GPT2_BPE_DIR to a directory holding GPT-2's encoder.json and vocab.bpe "
                            f"(or TIKTOKEN_CACHE_DIR to a tiktoken cache that has them)")
        return _GPT2_ENCODING
    import hashlib, shutil, tempfile
    cache = tempfile.mkdtemp(prefix='gpt2-bpe-')
    old = os.environ.get('TIKTOKEN_CACHE_DIR')
    try:
        for name, (url, sha256) in GPT2_BPE_FILES.items():
            path = os.path.join(bpe_dir, name)
            if not os.path.isfile(path):
                raise UserError(f"GPT2_BPE_DIR={bpe_dir} has no {name}: the directory must hold GPT-2's encoder.json and vocab.bpe")
            with open(path, 'rb') as f:
                data = f.read()
            if hashlib.sha256(data).hexdigest() != sha256:
                raise UserError(f"{path} is not GPT-2's {name} (its sha256 differs): use an unmodified copy")
            with open(os.path.join(cache, hashlib.sha1(url.encode()).hexdigest()), 'wb') as f:
                f.write(data)
        os.environ['TIKTOKEN_CACHE_DIR'] = cache
        _GPT2_ENCODING = tiktoken.get_encoding('gpt2') # reads the files once; tiktoken keeps the encoding
    finally:
        # the encoding is in memory now: the private cache and the variable are no longer needed
        if old is None:
            os.environ.pop('TIKTOKEN_CACHE_DIR', None)
        else:
            os.environ['TIKTOKEN_CACHE_DIR'] = old
        shutil.rmtree(cache, ignore_errors=True)
    return _GPT2_ENCODING

def write_token_shards(dset, path, n_shards=1024, desc=None, min_shard_tokens=MIN_SHARD_TOKENS):
    """
    Write the 'ids' of every row of a Hugging Face Dataset (that also has each row's 'len') to path as one
    stream of uint16, through a memmap of the final size filled in n_shards contiguous pieces: memory holds
    one piece at a time, never the whole split. Written to a temp file first, then renamed. Returns the token count.
    """
    from tqdm import tqdm
    total = int(np.sum(np.asarray(dset['len']), dtype=np.uint64))
    if total == 0:
        raise UserError(f"no tokens to write to {path}: the documents are all empty")
    # no shard smaller than min_shard_tokens: for a small corpus, per-shard overhead would dominate the writing
    n_shards = max(1, min(n_shards, len(dset), -(-total // min_shard_tokens)))
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        arr = np.memmap(tmp, dtype=np.uint16, mode='w+', shape=(total,))
        pos = 0
        for i in tqdm(range(n_shards), desc=desc or f'writing {path}'):
            shard = dset.shard(num_shards=n_shards, index=i, contiguous=True).with_format('numpy')
            ids = np.concatenate(list(shard['ids']))
            if ids.size and (ids.max() >= 2**16 or ids.min() < 0):
                raise UserError(f"token id {int(ids.max())} does not fit in uint16 (0..65535): {path} cannot store it; "
                                f"use a tokenizer with fewer than 65,536 tokens")
            arr[pos:pos + len(ids)] = ids
            pos += len(ids)
        arr.flush()
        del arr
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return total

def read_hf_config(path):
    """The config.json of a local Hugging Face directory, checked to be a GPT-2 this model can load."""
    if not os.path.isdir(path):
        raise UserError(f"init_from={path!r} is neither a GPT-2 model ({', '.join(GPT2_SIZES)}) nor a directory "
                        f"holding a Hugging Face GPT-2 (config.json and weights)")
    config_path = os.path.join(path, 'config.json')
    if not os.path.isfile(config_path):
        hint = (f"; for the train.py checkpoint in it use init_from='resume' with out_dir={path!r}"
                if os.path.isfile(os.path.join(path, 'ckpt.pt')) else " (write one with save_pretrained or export_hf)")
        raise UserError(f"{path} has no config.json: it is not a Hugging Face model directory{hint}")
    import json
    try:
        with open(config_path) as f:
            config = json.load(f)
    except ValueError as e:
        raise UserError(f"{config_path} is not valid JSON ({first_line(e)})")
    check_hf_gpt2_config(config, path)
    return config

def check_hf_gpt2_config(config, where):
    """One clear error for a Hugging Face config that our GPT cannot reproduce."""
    model_type = config.get('model_type')
    if model_type != 'gpt2':
        raise UserError(f"{where} holds a {model_type!r} model, not GPT-2: only GPT-2 weights (model_type 'gpt2') can be loaded")
    unsupported = []
    if config.get('n_inner') not in (None, 4 * config.get('n_embd', 0)):
        unsupported.append(f"n_inner={config['n_inner']} (we use 4 * n_embd)")
    if config.get('activation_function', 'gelu_new') not in HF_GELUS:
        unsupported.append(f"activation_function={config['activation_function']!r} (we have {', '.join(HF_GELUS)})")
    if config.get('layer_norm_epsilon', 1e-5) != 1e-5:
        unsupported.append(f"layer_norm_epsilon={config['layer_norm_epsilon']} (we use 1e-5)")
    if config.get('scale_attn_by_inverse_layer_idx') or not config.get('scale_attn_weights', True):
        unsupported.append("a non-standard attention scaling")
    if not config.get('tie_word_embeddings', True):
        unsupported.append("untied input and output embeddings")
    if unsupported:
        raise UserError(f"{where} is a GPT-2 variant this model cannot reproduce: {'; '.join(unsupported)}")

def export_hf(model, out_dir, vocab_size=None):
    """
    Write a GPT as a Hugging Face GPT-2 directory (config.json + model.safetensors) that
    transformers.GPT2LMHeadModel.from_pretrained(out_dir) loads, giving the same logits. Returns out_dir.
    - bias=False models get zero biases, since HF's GPT-2 always has them: the outputs do not change.
    - A vocab padded from GPT-2's 50257 up to 50304 for speed is cut back to 50257 (give vocab_size to
      choose); logits[..., :50257] are unchanged.
    - activation_function is the model's own GELU: 'gelu' (exact) or 'gelu_new' (GPT-2's tanh approximation).
    From the shell: python model.py export_hf out-shakespeare hf-shakespeare
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"cannot export to {out_dir}: it is a file; give a directory (new, or one to write into)")
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils.logging import disable_progress_bar
    disable_progress_bar() # a bar for writing one small file
    cfg = model.config
    if vocab_size is None:
        vocab_size = GPT2_VOCAB_SIZE if cfg.vocab_size == GPT2_PADDED_VOCAB_SIZE else cfg.vocab_size
    if not 0 < vocab_size <= cfg.vocab_size:
        raise UserError(f"vocab_size={vocab_size} must be in 1..{cfg.vocab_size} (the model's vocab_size)")
    eot = GPT2_EOT if vocab_size > GPT2_EOT else None # only a GPT-2 vocabulary has <|endoftext|>
    hf_config = GPT2Config(vocab_size=vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                           n_head=cfg.n_head, layer_norm_epsilon=1e-5,
                           activation_function='gelu_new' if cfg.gelu_approximate == 'tanh' else 'gelu',
                           resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                           bos_token_id=eot, eos_token_id=eot, tie_word_embeddings=True)
    hf = GPT2LMHeadModel(hf_config)
    ours = clean_state_dict(model.state_dict())
    sd = {}
    for k, v in hf.state_dict().items():
        if k in ours:
            src = ours[k].detach().float().cpu()
            if k.endswith(HF_CONV1D):
                src = src.t()
            if k in ('transformer.wte.weight', 'lm_head.weight'):
                src = src[:vocab_size]
            sd[k] = src.contiguous()
        elif k.endswith('.bias') and not cfg.bias:
            sd[k] = torch.zeros_like(v) # the bias a bias=False model does without
        else:
            raise UserError(f"cannot export: Hugging Face's GPT-2 has {k} but this model has no such weight")
    hf.load_state_dict(sd, strict=True)
    os.makedirs(out_dir, exist_ok=True)
    hf.save_pretrained(out_dir)
    return out_dir

if __name__ == '__main__':
    # python model.py export_hf CKPT OUT_DIR: CKPT is a ckpt.pt, or the out_dir that holds one
    exit_on_user_error()
    if len(sys.argv) != 4 or sys.argv[1] != 'export_hf':
        sys.exit("usage: python model.py export_hf CKPT OUT_DIR  (CKPT: a ckpt.pt or the out_dir holding one)")
    src, dst = sys.argv[2], sys.argv[3]
    if os.path.isdir(src):
        src = os.path.join(src, 'ckpt.pt')
    model, _ = GPT.from_checkpoint(src)
    export_hf(model, dst)
    print(f"wrote a Hugging Face GPT-2 to {dst}: transformers.GPT2LMHeadModel.from_pretrained({dst!r}), or init_from={dst!r} here")
