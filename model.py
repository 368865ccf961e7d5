"""The GPT language model: GPTConfig, its layers, GPT (forward, KV-cache generation, optimizer groups, MFU).

Also the entry points that build a GPT from a checkpoint or from GPT-2 weights.

Parameter names and checkpoint keys are exactly nanoGPT's, so checkpoints move freely between the two projects.
The architecture is GPT-2's, as in:
1) OpenAI's TensorFlow GPT-2: https://github.com/openai/gpt-2/blob/master/src/model.py
2) Hugging Face transformers' PyTorch GPT-2: modeling_gpt2.py

python model.py export_hf CKPT OUT_DIR writes a checkpoint as a Hugging Face GPT-2 directory (see huggingface.py).
"""

import math
import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.utils.checkpoint
from torch.nn import functional as F

from checkpoint import CheckpointError, clean_state_dict, load_checkpoint
from common import UserError, exit_on_user_error
from device import PTDTYPE, native_bf16
from optimizers import MuonFp32, MuonWithAdamW
from tokens import GPT2_PADDED_VOCAB_SIZE


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = GPT2_PADDED_VOCAB_SIZE
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True # biases in Linears and LayerNorms, like GPT-2. False: a bit better and faster
    gelu_approximate: str = 'none' # 'none': the exact GELU, as nanoGPT; 'tanh': the one OpenAI's GPT-2 was trained with

# the keys of GPTConfig, in the order nanoGPT stores them as a checkpoint's 'model_args'
MODEL_ARGS = ('n_layer', 'n_head', 'n_embd', 'block_size', 'bias', 'vocab_size', 'dropout')
# gelu_approximate is kept out of model_args, because nanoGPT's sample.py calls GPTConfig(**model_args) and
# would fail on a key it does not know. A checkpoint stores it under its own key, and only when it is 'tanh'.
GELU_KEY = 'gelu_approximate'

# How attention is computed. 'sdpa' is PyTorch's fused kernel (flash attention on
# GPUs). 'math' is the plain matmul-mask-softmax; it computes the same thing and
# on CPUs its backward pass is much faster than SDPA's. Not an architecture choice,
# so it never goes into a checkpoint's model_args.
ATTN_IMPLS = ('sdpa', 'math')
# What generate() does once the text outgrows block_size: see GPT.generate
OVERFLOW_MODES = ('recompute', 'slide')
LAYER_NORM_EPS = 1e-5 # GPT-2's


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


def check_overrides(shape, changed, block_size, source, fix):
    """Settings the user gave (changed) that contradict the architecture (shape) of weights being loaded are errors."""
    for k in ('n_layer', 'n_head', 'n_embd', 'bias'):
        if k in changed and changed[k] != shape[k]:
            raise UserError(f"{k}={changed[k]} but {source} has {k}={shape[k]}: {fix}")
    if block_size > shape['block_size']:
        raise UserError(f"block_size={block_size} is larger than the {shape['block_size']} positions of {source}: "
                        f"a model cannot attend further than it was built for; use block_size <= {shape['block_size']}")


def resolve_attn_impl(attn_impl, device):
    """'auto' means sdpa (flash attention) on GPUs and 'math' on CPUs, whose SDPA backward is slow (docs/attention.md)."""
    if attn_impl == 'auto':
        return 'math' if torch.device(device).type == 'cpu' else 'sdpa'
    if attn_impl not in ATTN_IMPLS:
        raise UserError(f"attn_impl={attn_impl!r} is not one of 'auto', {', '.join(map(repr, ATTN_IMPLS))}")
    return attn_impl


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's own has no bias=False before 2.1)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, input):
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, LAYER_NORM_EPS)

# Dropout on CPUs: torch's bernoulli_ draws one random number per element through a slow path (22 ms for the attention
# matrix of the 6-layer/384 model, batch 8). Drawing 64 random bits at a time and comparing each 16-bit slice with a
# threshold gives the same Bernoulli mask in ~4 ms (docs/cpu-dropout.md). p is rounded to a multiple of 1/65536.
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
        y = y.transpose(1, 2).contiguous().view(B, T, C) # (B, nh, T, hs) -> (B, T, C): the heads side by side again
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
        bias = torch.zeros(Tq, Tk, device=device, dtype=dtype)
        _MASKS[key] = bias.masked_fill(~causal_mask(Tq, Tk, device), float('-inf'))
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
                raise UserError(f"cannot forward a sequence of length {start + t}: "
                                f"block_size is only {self.config.block_size}")
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
            # inference: only the last position's logits are needed; a slice (no gather, no host copy) keeps the time dim
            logits = self.lm_head(x[:, -1:, :])
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
        # torch's Muon runs its Newton-Schulz iteration in bf16: where bf16 is emulated, MuonFp32 runs it in fp32
        muon_cls = torch.optim.Muon if native_bf16(muon_params[0].device) else MuonFp32
        # 'match_rms_adamw' sizes each matrix's step like an AdamW step: one learning_rate serves both
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
        return sample_next(self.decode_step(idx, pos, caches), temperature, top_k)

    def _new_kv_caches(self, batch_size, device, fixed_shape=False):
        cfg = self.config
        autocast = torch.is_autocast_enabled(device.type)
        dtype = torch.get_autocast_dtype(device.type) if autocast else self.lm_head.weight.dtype
        if device.type == 'cpu' and not fixed_shape:
            # On CPUs the cache is fp32 even for a bf16 model: oneDNN builds a new bf16 kernel for every new key
            # length, measured here at ~0.7 ms per attention matmul, against ~14 us for fp32's (MKL) matmul.
            # The compiled step (fixed_shape) always attends to the whole cache, so it keeps the model's dtype.
            dtype = torch.float32
        return [KVCache(batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head, device, dtype)
                for _ in range(cfg.n_layer)]

    # -------------------------------------------------------------------------
    # building a GPT from saved weights

    @classmethod
    def from_checkpoint(cls, path, device='cpu', unsafe=False, **overrides):
        """
        Load a checkpoint written by train.py here or by nanoGPT. Returns (model, checkpoint); the checkpoint's
        tensors stay on the CPU (drop it once read: it may hold the optimizer's moments, twice the model's size).
        overrides (e.g. dropout=0.0) replace entries of the stored model_args; unsafe: see load_checkpoint.
        """
        checkpoint = load_checkpoint(path, unsafe)
        try:
            model_args = {k: checkpoint['model_args'][k] for k in MODEL_ARGS}
        except (KeyError, TypeError):
            raise CheckpointError(f"{path} has no complete 'model_args' ({', '.join(MODEL_ARGS)}): "
                                  f"it is not a GPT checkpoint from train.py or nanoGPT")
        model_args[GELU_KEY] = checkpoint.get(GELU_KEY, 'none') # nanoGPT's checkpoints: the exact GELU
        model_args.update(overrides)
        model = cls(GPTConfig(**model_args))
        model.load_weights(clean_state_dict(checkpoint['model']), path, CheckpointError)
        return model.to(device), checkpoint

    @classmethod
    def from_pretrained(cls, name_or_dir, override_args=None):
        """
        GPT-2's weights (a name such as 'gpt2', or a local Hugging Face directory), through huggingface.py.
        override_args may only set dropout: the rest is the weights' own shape. The MLP uses the GELU the weights
        were trained with: GPT-2's tanh approximation, where nanoGPT uses the exact one (logits differ by ~1e-3).
        """
        from huggingface import gpt2_weights # transformers is imported only when GPT-2 weights are asked for
        override_args = dict(override_args or {})
        if set(override_args) - {'dropout'}:
            raise UserError(f"only dropout can be changed when loading GPT-2 weights, "
                            f"not {sorted(set(override_args) - {'dropout'})}")
        config, state_dict = gpt2_weights(name_or_dir)
        model = cls(GPTConfig(**config, dropout=override_args.get('dropout', 0.0)))
        model.load_weights(state_dict, name_or_dir, UserError)
        return model

    def load_weights(self, state_dict, source, error=UserError):
        """load_state_dict, with an error that names source when the weights do not fit this model's shape."""
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        if missing or unexpected:
            raise error(f"{source} does not fit this GPT: missing {missing[:3]}, unexpected {unexpected[:3]}")
        for k, v in state_dict.items():
            if v.shape != expected[k].shape:
                raise error(f"{source}: {k} has shape {tuple(v.shape)} but the model's shape implies "
                            f"{tuple(expected[k].shape)}: the weights are inconsistent")
        self.load_state_dict(state_dict)


def prepare_for_sampling(model, device, dtype, compile=False):
    """
    Make model (in place, so use it only to sample from) run generate() fast in dtype on device, and return it.
    The weights are cast to dtype once (before they move, so that only the cast copy reaches a GPU), instead of
    autocast casting each weight for every op of every token; the caller runs generate() without autocast.
    On CPUs in bf16 the linear layers are also packed (PackedLinear), where this torch has oneDNN's packed
    kernels, unless compile (generate(compile=True)), whose frozen weights inductor packs itself.
    The residual stream and LayerNorms then run in bf16 too: tests/test_model.py checks that greedy
    bf16 samples stay close to the fp32 model's.
    """
    model.eval()
    model.to(PTDTYPE[dtype]).to(device)
    if torch.device(device).type == 'cpu' and dtype == 'bfloat16' and not compile and packed_linear_supported():
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.Linear):
                    try:
                        setattr(module, name, PackedLinear(child))
                    except (RuntimeError, AttributeError): # a torch without these kernels: plain F.linear
                        return model
    return model

# the smallest temperature: logits / temperature must stay finite in fp32 (at 1e-6, logits up to 3e32 do), or
# softmax gives NaNs; top_k=1 is the way to sample greedily
MIN_TEMPERATURE = 1e-6

def check_sampling(temperature, top_k, overflow):
    """One-line errors for sampling settings that generate() cannot use (sample.py checks them before loading)."""
    if not temperature >= MIN_TEMPERATURE:
        raise UserError(f"temperature={temperature} must be >= {MIN_TEMPERATURE} (small values like 0.1 are nearly "
                        f"greedy; top_k=1 is greedy)")
    if top_k is not None and top_k <= 0:
        raise UserError(f"top_k={top_k} must be > 0 (top_k=1 is greedy; a value >= the vocab size, or None, "
                        f"keeps every token)")
    if overflow not in OVERFLOW_MODES:
        raise UserError(f"overflow={overflow!r} is not one of {', '.join(map(repr, OVERFLOW_MODES))}")

def sample_next(logits, temperature, top_k):
    """
    The next token (b, 1) drawn from the last position's logits (b, t, vocab). It is drawn the way
    torch.multinomial draws one sample, argmax(probs / Exp(1) noise), written out: from the same generator state it
    gives multinomial's token (tests/test_model.py checks this on the CPU), with no host sync, and torch.compile
    can fuse it (inductor has no multinomial kernel and calls back into eager code for it).
    """
    logits = logits[:, -1, :].float() / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits = logits.masked_fill(logits < v[:, -1:], -float('Inf'))
    probs = F.softmax(logits, dim=-1)
    return (probs / torch.empty_like(probs).exponential_()).argmax(dim=-1, keepdim=True)

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
        _COMPILED_DECODE_STEPS[device_type] = torch.compile(GPT.decode_and_sample, fullgraph=True, dynamic=False,
                                                            mode=mode)
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


if __name__ == '__main__':
    # python model.py export_hf CKPT OUT_DIR: CKPT is a ckpt.pt, or the out_dir that holds one
    from common import error_exit
    from huggingface import export_hf
    exit_on_user_error()
    if len(sys.argv) != 4 or sys.argv[1] != 'export_hf':
        error_exit("usage: python model.py export_hf CKPT OUT_DIR  (CKPT: a ckpt.pt or the out_dir holding one)")
    src, dst = sys.argv[2], sys.argv[3]
    if os.path.isdir(src):
        src = os.path.join(src, 'ckpt.pt')
    model, _ = GPT.from_checkpoint(src)
    export_hf(model, dst)
    print(f"wrote a Hugging Face GPT-2 to {dst}: transformers.GPT2LMHeadModel.from_pretrained({dst!r}), "
          f"or init_from={dst!r} here")
