"""The GPT language model: GPTConfig, its layers, GPT (forward, KV-cache generation, optimizer groups, MFU).

Also the entry points that build a GPT from a checkpoint or from GPT-2 weights.

Parameter names and checkpoint keys are exactly nanoGPT's, so checkpoints move freely between the two projects.
The architecture is GPT-2's, as in:
1) OpenAI's TensorFlow GPT-2: https://github.com/openai/gpt-2/blob/master/src/model.py
2) Hugging Face transformers' PyTorch GPT-2: modeling_gpt2.py

python model.py export_hf CKPT OUT_DIR writes a checkpoint as a Hugging Face GPT-2 directory, or a rope model as a
Llama directory (see huggingface.py, docs/llama.md).
"""

import math
import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.utils.checkpoint
from torch.nn import functional as F

from checkpoint import CheckpointError, clean_state_dict, load_checkpoint
from common import UserError, exit_on_user_error
from device import PTDTYPE, native_bf16
from optimizers import BatchedMuon, MuonWithAdamW
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
    # Options past GPT-2. Each default is GPT-2's; docs/architecture.md says what each changes and what it bought.
    gelu_approximate: str = 'none' # 'none': the exact GELU, as nanoGPT; 'tanh': the one OpenAI's GPT-2 was trained with
    n_kv_head: int = 0 # key/value heads: 0 (= n_head) multi-head, a divisor of n_head grouped-query, 1 multi-query
    pos_emb: str = 'learned' # 'learned': a table of block_size positions (wpe); 'rope': rotary q and k, no table
    rope_theta: float = 10000.0 # rope's base: the slowest pair of dimensions turns once in ~2*pi*theta positions
    norm: str = 'layernorm' # 'layernorm' (GPT-2) or 'rmsnorm' (scale by the root mean square only: no mean, no bias)
    norm_eps: float = 1e-5 # the norms' epsilon (GPT-2's 1e-5; Llama models bring their own)
    qk_norm: bool = False # RMS-normalise each head's queries and keys: bounds the attention logits, steadies high lrs
    mlp: str = 'gelu' # 'gelu' (GPT-2), 'relu2' (relu(x)**2) or 'swiglu' (silu(gate) * up, as in Llama)
    mlp_hidden: int = 0 # the MLP's hidden width; 0: 4 * n_embd, or for swiglu ~8/3 * n_embd (the same parameters)
    tie_embeddings: bool = True # lm_head shares wte's weights, as GPT-2; False gives the output its own matrix
    logit_softcap: float = 0.0 # > 0: logits = c * tanh(logits / c), smoothly bounded to (-c, c); 0: off
    zero_init: bool = False # the blocks' output projections start at zero, so each block starts as the identity

# the keys of GPTConfig, in the order nanoGPT stores them as a checkpoint's 'model_args'
MODEL_ARGS = ('n_layer', 'n_head', 'n_embd', 'block_size', 'bias', 'vocab_size', 'dropout')
# The other fields stay out of model_args, because nanoGPT's sample.py calls GPTConfig(**model_args) and would fail
# on a key it does not know. A checkpoint stores those that differ from their default in a dict of its own, so a
# GPT-2-architecture checkpoint is exactly nanoGPT's.
OPTIONS_KEY = 'model_options'
OPTION_DEFAULTS = {f.name: f.default for f in fields(GPTConfig) if f.name not in MODEL_ARGS}
GELU_KEY = 'gelu_approximate' # where earlier checkpoints kept the GELU choice, beside model_args
POS_EMBS = ('learned', 'rope')
NORMS = ('layernorm', 'rmsnorm')
MLPS = ('gelu', 'relu2', 'swiglu')
SWIGLU_HIDDEN_MULTIPLE = 64 # swiglu's default width is rounded up to this, for matmul-friendly shapes

# How attention is computed. 'sdpa' is PyTorch's fused kernel (flash attention on
# GPUs). 'math' is the plain matmul-mask-softmax; it computes the same thing and
# on CPUs its backward pass is much faster than SDPA's. Not an architecture choice,
# so it never goes into a checkpoint's model_args.
ATTN_IMPLS = ('sdpa', 'math')
# What generate() does once the text outgrows block_size: see GPT.generate. 'auto' is 'roll' with rope, else 'slide'.
OVERFLOW_MODES = ('auto', 'recompute', 'slide', 'roll')


def check_config(config):
    """One clear error for a GPTConfig that cannot make a model."""
    for f in ('n_layer', 'n_head', 'n_embd', 'block_size', 'vocab_size'):
        v = getattr(config, f)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise UserError(f"{f}={v!r} must be a positive integer")
    if config.n_embd % config.n_head != 0:
        raise UserError(f"n_embd={config.n_embd} is not divisible by n_head={config.n_head}: "
                        f"choose sizes where n_embd % n_head == 0")
    if not 0.0 <= config.dropout < 1.0:
        raise UserError(f"dropout={config.dropout} must be in [0, 1)")
    for f, allowed in (('pos_emb', POS_EMBS), ('norm', NORMS), ('mlp', MLPS), ('gelu_approximate', ('none', 'tanh'))):
        if getattr(config, f) not in allowed:
            raise UserError(f"{f}={getattr(config, f)!r} is not one of {', '.join(map(repr, allowed))}")
    if not isinstance(config.n_kv_head, int) or isinstance(config.n_kv_head, bool) \
            or not 0 <= config.n_kv_head <= config.n_head \
            or config.n_kv_head and config.n_head % config.n_kv_head:
        raise UserError(f"n_head={config.n_head} is not a multiple of n_kv_head={config.n_kv_head}: each key/value "
                        f"head serves a whole group of query heads; use a divisor of n_head (1 = multi-query)")
    head_size = config.n_embd // config.n_head
    if config.pos_emb == 'rope' and head_size % 2:
        raise UserError(f"pos_emb='rope' rotates pairs of dimensions, but the head size n_embd/n_head = {head_size} "
                        f"is odd: choose n_embd and n_head with an even quotient")
    if not isinstance(config.mlp_hidden, int) or isinstance(config.mlp_hidden, bool) or config.mlp_hidden < 0:
        raise UserError(f"mlp_hidden={config.mlp_hidden!r} must be a positive integer, or 0 for the default width")
    for f in ('rope_theta', 'norm_eps', 'logit_softcap'):
        v = getattr(config, f)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise UserError(f"{f}={v!r} must be a finite number")
    for f in ('rope_theta', 'norm_eps'):
        if not getattr(config, f) > 0:
            raise UserError(f"{f}={getattr(config, f)} must be > 0")
    if not config.logit_softcap >= 0:
        raise UserError(f"logit_softcap={config.logit_softcap} must be >= 0 (0 turns it off)")


def mlp_width(config):
    """The MLP's hidden width: mlp_hidden, or by default GPT-2's 4 * n_embd. swiglu has three matrices, not two, so
    its default is 2/3 of that (rounded up to SWIGLU_HIDDEN_MULTIPLE), for about the same parameters, as in Llama."""
    if config.mlp_hidden:
        return config.mlp_hidden
    if config.mlp == 'swiglu':
        return -(-8 * config.n_embd // 3 // SWIGLU_HIDDEN_MULTIPLE) * SWIGLU_HIDDEN_MULTIPLE
    return 4 * config.n_embd


def model_options(config):
    """The options of config that differ from their default: what a checkpoint stores under OPTIONS_KEY."""
    options = {k: getattr(config, k) for k, v in OPTION_DEFAULTS.items() if getattr(config, k) != v}
    if options.get('n_kv_head') == config.n_head: # n_kv_head == n_head is the default, multi-head attention
        del options['n_kv_head']
    return options


def checkpoint_options(checkpoint, source):
    """The options a checkpoint was trained with (nanoGPT's: none); one this version does not know is an error."""
    options = dict(checkpoint.get(OPTIONS_KEY) or {})
    if GELU_KEY in checkpoint: # where earlier versions kept it
        options.setdefault(GELU_KEY, checkpoint[GELU_KEY])
    unknown = sorted(set(options) - set(OPTION_DEFAULTS))
    if unknown:
        raise CheckpointError(f"{source} uses the model option {unknown[0]!r}, which this version does not know: "
                              f"sample or resume it with the version of this code that trained it")
    return options


def check_overrides(shape, changed, block_size, source, fix):
    """Settings the user gave (changed) that contradict the architecture (shape) of weights being loaded are errors."""
    for k in ('n_layer', 'n_head', 'n_embd', 'bias', *OPTION_DEFAULTS):
        if k not in changed or k not in shape:
            continue
        have, want = shape[k], changed[k]
        if k == 'n_kv_head': # 0 and n_head both mean multi-head
            have, want = have or shape['n_head'], want or shape['n_head']
        if want != have:
            raise UserError(f"{k}={changed[k]!r} but {source} has {k}={shape[k]!r}: {fix}")
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

    def __init__(self, ndim, bias, eps=OPTION_DEFAULTS['norm_eps']):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None
        self.eps = eps

    def forward(self, input):
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, self.eps)

class RMSNorm(nn.Module):
    """x / rms(x) * weight: LayerNorm without the mean and the bias (Llama's norm)."""

    def __init__(self, ndim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.eps = eps

    def forward(self, input):
        return F.rms_norm(input, self.weight.shape, self.weight, self.eps)

def make_norm(config):
    if config.norm == 'rmsnorm':
        return RMSNorm(config.n_embd, config.norm_eps)
    return LayerNorm(config.n_embd, config.bias, config.norm_eps)

def rope_angles(pos, head_size, theta):
    """
    cos and sin (T, head_size) of rotary embeddings at positions pos (T,). Dimension i is paired with i + head_size/2
    (Llama's layout, so that its weights load unchanged), and pair j turns by theta**(-2j/head_size) per position.
    Computed in fp32 from the positions each time: no table to outgrow, so a rolling cache can go on forever.
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, head_size, 2, device=pos.device, dtype=torch.float32) / head_size)
    angles = pos.float()[:, None] * inv_freq[None, :]
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()

def apply_rope(x, cos, sin):
    """Rotate each pair of x's (B, nh, T, hs) dimensions by its position's angle (a relative position survives q.k)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat((-x2, x1), dim=-1) * sin.to(x.dtype)

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
    """
    Multi-head attention, causal over its own sequence. With n_kv_head < n_head (grouped-query; 1 is multi-query)
    each key/value head serves n_head / n_kv_head query heads: fewer keys and values to compute and, above all, to
    keep in the KV cache. With memory (a second sequence), the queries come from x and the keys and values from
    memory, unmasked: cross-attention (docs/architecture.md).
    """

    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head or config.n_head
        self.head_size = config.n_embd // config.n_head
        self.n_embd = config.n_embd
        kv_size = self.n_kv_head * self.head_size
        # queries, keys and values of all heads in one matmul (with n_kv_head == n_head, nanoGPT's 3 * n_embd)
        self.c_attn = nn.Linear(config.n_embd, config.n_embd + 2 * kv_size, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = Dropout(config.dropout)
        self.resid_dropout = Dropout(config.dropout)
        self.dropout = config.dropout
        self.qk_norm_eps = config.norm_eps if config.qk_norm else None
        self.attn_impl = 'sdpa'

    def forward(self, x, kv_cache=None, decode_pos=None, rope=None, memory=None):
        B, T, C = x.size()
        hs, kv_size = self.head_size, self.n_kv_head * self.head_size
        if memory is None:
            q, k, v = self.c_attn(x).split([C, kv_size, kv_size], dim=2)
        else: # the same weights, the query rows applied to x and the key/value rows to memory
            bias = self.c_attn.bias
            q = F.linear(x, self.c_attn.weight[:C], None if bias is None else bias[:C])
            k, v = F.linear(memory, self.c_attn.weight[C:], None if bias is None else bias[C:]).split(kv_size, dim=2)
        # (B, T, heads * hs) -> (B, heads, T, hs)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)
        k = k.view(B, k.size(1), self.n_kv_head, hs).transpose(1, 2)
        v = v.view(B, v.size(1), self.n_kv_head, hs).transpose(1, 2)
        if self.qk_norm_eps is not None: # no weights: the scale is left to the projections
            q, k = F.rms_norm(q, (hs,), eps=self.qk_norm_eps), F.rms_norm(k, (hs,), eps=self.qk_norm_eps)
        if memory is not None: # positions of two sequences do not compare: no rope, no mask, no cache
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                               enable_gqa=self.n_kv_head != self.n_head)
            return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
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
        B, nh, Tq, hs = q.shape
        nkv, Tk = k.size(1), k.size(-2)
        group = nh // nkv # query heads per key/value head: head h reads key/value head h // group
        dropout_p = self.dropout if self.training else 0.0
        if mask is not None: # one token against the whole preallocated cache, True where written: plain ops, which
            # torch.compile fuses (its lowering of SDPA with a mask was ~150 us per call here, the math ~10 us)
            att = (q.reshape(B, nkv, group * Tq, hs) @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
            y = F.softmax(att.masked_fill(~mask, float('-inf')), dim=-1) @ v
            return y.view(B, nh, Tq, hs)
        gqa = group > 1
        if Tq == 1 and not torch.is_grad_enabled(): # decoding one token: no mask, no backward; SDPA is one call
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, enable_gqa=gqa)
        if self.attn_impl == 'sdpa':
            if Tq == Tk:
                return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True, enable_gqa=gqa)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(Tq, Tk, q.device),
                                                  dropout_p=dropout_p, enable_gqa=gqa)
        # scale and mask fused into the matmul: att = mask_bias + (q @ k^T) / sqrt(hs), where mask_bias is 0 where
        # attention is allowed and -inf elsewhere (saves two passes over att). A key/value head's group of query
        # heads is stacked along the rows, so keys and values are never copied out per query head.
        att = torch.baddbmm(causal_bias(Tq, Tk, q.device, q.dtype, group), q.reshape(B * nkv, group * Tq, hs),
                            k.reshape(B * nkv, Tk, hs).transpose(1, 2), alpha=1.0 / math.sqrt(hs))
        att = F.softmax(att.view(B, nh, Tq, Tk), dim=-1)
        att = self.attn_dropout(att)
        return (att.view(B * nkv, group * Tq, Tk) @ v.reshape(B * nkv, Tk, hs)).view(B, nh, Tq, hs)

_MASKS = {}
def causal_mask(Tq, Tk, device):
    """Boolean (Tq, Tk) mask, True where query i may attend to key j. Cached: it never changes."""
    key = (Tq, Tk, str(device))
    if key not in _MASKS:
        _MASKS[key] = torch.ones(Tq, Tk, dtype=torch.bool, device=device).tril(diagonal=Tk - Tq)
    return _MASKS[key]

def causal_bias(Tq, Tk, device, dtype, repeat=1):
    """The same mask as an additive (repeat * Tq, Tk) bias, 0 where allowed and -inf where not, stacked repeat times."""
    key = (Tq, Tk, str(device), dtype, repeat)
    if key not in _MASKS:
        bias = torch.zeros(Tq, Tk, device=device, dtype=dtype)
        _MASKS[key] = bias.masked_fill(~causal_mask(Tq, Tk, device), float('-inf')).repeat(repeat, 1)
    return _MASKS[key]

class MLP(nn.Module):
    """The feed-forward layer: GPT-2's GELU, relu(x)**2, or SwiGLU (c_fc then holds the gate and the up projection)."""

    def __init__(self, config):
        super().__init__()
        hidden = mlp_width(config)
        self.kind = config.mlp
        self.c_fc    = nn.Linear(config.n_embd, 2 * hidden if self.kind == 'swiglu' else hidden, bias=config.bias)
        self.gelu    = nn.GELU(approximate=config.gelu_approximate)
        self.c_proj  = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x):
        h = self.c_fc(x)
        if self.kind == 'gelu':
            h = self.gelu(h)
        elif self.kind == 'relu2':
            h = F.relu(h).square()
        else:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        return self.dropout(self.c_proj(h))

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
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x, kv_cache=None, decode_pos=None, rope=None):
        x = x + self.attn(self.ln_1(x), kv_cache, decode_pos, rope)
        x = x + self.mlp(self.ln_2(x))
        return x

class KVCache:
    """
    Keys and values of the positions seen so far, for one layer, preallocated to block_size slots. len counts the
    slots in use, pos the positions seen. They are equal until a rolling cache (rope models, overflow='roll') is
    full: from then on position p overwrites slot p % block_size, the oldest, and attention reads every slot. That
    is exact for rope, whose keys carry their own rotation, so the order of the slots does not matter.
    """

    def __init__(self, batch_size, n_head, block_size, head_size, device, dtype):
        shape = (batch_size, n_head, block_size, head_size)
        # zeros, not empty: write()'s masked attention multiplies the unwritten values by 0, and 0 * NaN is NaN
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.len = self.pos = 0

    def reset(self):
        self.len = self.pos = 0

    def advance(self, T=1):
        self.pos += T
        self.len = min(self.len + T, self.k.size(2))

    def update(self, k, v):
        """Append T positions (or, when full, overwrite the oldest slot with one); return the keys and values in use."""
        T, size = k.size(2), self.k.size(2)
        slot = self.len if self.len + T <= size else self.pos % size # only a full rolling cache takes a T == 1 here
        self.k[:, :, slot:slot + T] = k
        self.v[:, :, slot:slot + T] = v
        self.advance(T)
        return self.k[:, :, :self.len], self.v[:, :, :self.len]

    def write(self, pos, k, v):
        """
        Write one position's keys and values for position pos (a 1-element tensor, so that a compiled caller does
        not recompile for every position) and return the whole buffers with a (block_size,) mask of the slots in
        use: the same shapes for every token. The caller advances the cache (run_compiled_decode_step).
        """
        slot = pos % self.k.size(2)
        self.k.index_copy_(2, slot, k.to(self.k.dtype))
        self.v.index_copy_(2, slot, v.to(self.v.dtype))
        return self.k, self.v, torch.arange(self.k.size(2), device=pos.device) <= pos

class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        check_config(config)
        self.config = config

        layers = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if config.pos_emb == 'learned':
            layers['wpe'] = nn.Embedding(config.block_size, config.n_embd)
        self.transformer = nn.ModuleDict(dict(
            **layers,
            drop = Dropout(config.dropout),
            h = nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f = make_norm(config),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # a runtime choice, not part of config: checkpoints stay nanoGPT's
        self.grad_checkpointing = False # recompute each block's activations in backward instead of storing them
        if config.tie_embeddings: # weight tying: the output projection is the token embedding
            # https://paperswithcode.com/method/weight-tying
            self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # GPT-2 scales the init of each residual output projection by 1/sqrt(2 * n_layer),
        # since 2 * n_layer of them add into the residual stream
        for pn, p in self.named_parameters():
            if pn.endswith('c_proj.weight'):
                if config.zero_init: # the block adds nothing at first; its gradient still reaches c_proj
                    torch.nn.init.zeros_(p)
                else:
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
        Number of parameters. By default the position embeddings are not counted; the token embeddings are when
        they are tied to lm_head, which does real (matmul) work with them, and are not when untied.
        """
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding and 'wpe' in self.transformer:
            n_params -= self.transformer.wpe.weight.numel()
        if non_embedding and not self.config.tie_embeddings: # then wte is only a lookup; lm_head does the matmul
            n_params -= self.transformer.wte.weight.numel()
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
            start = kv_caches[0].pos if kv_caches is not None else 0
            rolling = kv_caches is not None and t == 1 and self.config.pos_emb == 'rope' # see KVCache
            if start + t > self.config.block_size and not rolling:
                raise UserError(f"cannot forward a sequence of length {start + t}: "
                                f"block_size is only {self.config.block_size}")
            pos = torch.arange(start, start + t, dtype=torch.long, device=device)

        x = self.transformer.wte(idx)
        rope = None
        if self.config.pos_emb == 'learned':
            x = x + self.transformer.wpe(pos)
        else:
            rope = rope_angles(pos, self.config.n_embd // self.config.n_head, self.config.rope_theta)
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                # keep only the block's input; its inner activations are recomputed in backward (memory for compute)
                x = torch.utils.checkpoint.checkpoint(block, x, None, None, rope, use_reentrant=False)
            else:
                x = block(x, kv_caches[i] if kv_caches is not None else None, decode_pos, rope)
        x = self.transformer.ln_f(x)

        if targets is not None:
            logits = self.softcap(self.lm_head(x))
            # targets of -1 are ignored (padding)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        else:
            # inference: only the last position's logits are needed; a slice (no gather, no host copy) keeps the time dim
            logits = self.softcap(self.lm_head(x[:, -1:, :]))
            loss = None
        return logits, loss

    def softcap(self, logits):
        """logit_softcap * tanh(logits / logit_softcap), in fp32: large logits are squashed, small ones kept."""
        cap = self.config.logit_softcap
        return cap * torch.tanh(logits.float() / cap) if cap else logits

    def crop_block_size(self, block_size):
        """Shrink the context length, e.g. to fine-tune GPT-2 (1024) with a smaller block."""
        if not 0 < block_size <= self.config.block_size:
            raise UserError(f"block_size={block_size} must be in 1..{self.config.block_size} (the model's block_size)")
        self.config.block_size = block_size
        if 'wpe' in self.transformer: # rope has no table to cut
            self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, fused=None, muon=False):
        """
        AdamW with weight decay on matrices and embeddings (2+ dims) only: biases and
        LayerNorm gains are not decayed. fused=None uses the fused kernel wherever
        this torch has it for the parameters' device (the CPU included since torch 2.4).
        device_type is unused: it stays for nanoGPT's signature, so callers written for it still work.
        muon=True: Muon (BatchedMuon) for the blocks' weight matrices instead, with the same learning_rate
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
        # Newton-Schulz in bf16 as torch's Muon does, except where bf16 is emulated: there fp32 is ~100x faster
        ns_dtype = torch.bfloat16 if native_bf16(muon_params[0].device) else torch.float32
        # 'match_rms_adamw' sizes each matrix's step like an AdamW step: one learning_rate serves both
        return MuonWithAdamW(adamw, BatchedMuon(muon_params, ns_dtype=ns_dtype, lr=learning_rate,
                                                weight_decay=weight_decay, adjust_lr_fn='match_rms_adamw'))

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
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, use_kv_cache=True, overflow='auto',
                 compile=False, top_p=1.0, generator=None):
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
        - 'roll' (rope models; fast and exact for them): a full cache overwrites its oldest slot (see KVCache), so
          each token sees the last block_size tokens, as with 'recompute', and no token is ever fed again.
        - 'auto' (the default): 'roll' for rope models, 'slide' for learned positions.
        compile=True (with the KV cache) runs each one-token step through torch.compile: the step has the
        same shapes for every token (decode_step), so it compiles once, on the first call, and its many
        small ops become a few fused kernels. Only for a model that no longer trains, as after
        prepare_for_sampling: a compiled step may keep using the weights it was compiled with.
        top_p < 1 samples from the nucleus only: the fewest most likely tokens whose probabilities add up to
        top_p (after temperature and top_k). generator (a torch.Generator) draws the tokens instead of torch's
        default generator, so that interleaved generations can each follow their own seed.
        """
        b, t = idx.size()
        tokens = self.generate_tokens(idx, max_new_tokens, temperature, top_k, use_kv_cache, overflow, compile,
                                      top_p, generator)
        out = torch.empty(b, t + max_new_tokens, dtype=idx.dtype, device=idx.device)
        out[:, :t] = idx
        for n, token in enumerate(tokens, start=t):
            out[:, n:n + 1] = token
        return out

    def generate_tokens(self, idx, max_new_tokens, temperature=1.0, top_k=None, use_kv_cache=True,
                        overflow='auto', compile=False, top_p=1.0, generator=None):
        """
        generate(), one token at a time: an iterator of the max_new_tokens new tokens, each a (b, 1) tensor, each
        computed only when asked for. A caller streams them, or stops early (at a stop string, or when its reader
        has gone) by asking no further. The settings are checked now, not at the first token.
        """
        check_sampling(temperature, top_k, overflow, top_p, self.config.pos_emb)
        if compile and any(isinstance(m, PackedLinear) for m in self.modules()):
            raise UserError("compile=True needs the model prepared with prepare_for_sampling(..., compile=True): "
                            "torch.compile cannot take PackedLinear's packed weights")
        if compile and generator is not None:
            raise UserError("a generator needs compile=False: the compiled step draws from torch's default generator")
        return self._generate_tokens(idx, max_new_tokens, temperature, top_k, use_kv_cache, overflow, compile,
                                     top_p, generator)

    @torch.no_grad()
    def _generate_tokens(self, idx, max_new_tokens, temperature, top_k, use_kv_cache, overflow, compile, top_p,
                         generator):
        block_size = self.config.block_size
        keep = max(1, block_size // 2) # what 'slide' keeps of a full cache
        if overflow == 'auto':
            overflow = 'roll' if self.config.pos_emb == 'rope' else 'slide'
        rolls = overflow == 'roll' and use_kv_cache # the cache never needs a refill: see KVCache
        b, t = idx.size()
        # the context is written in place: no torch.cat of the growing sequence every step
        out = torch.empty(b, t + max_new_tokens, dtype=idx.dtype, device=idx.device)
        out[:, :t] = idx
        caches = None
        checked = False # whether a compiled step of this call has run with dynamo's guards checked
        for n in range(t, t + max_new_tokens):
            if caches is not None and (caches[0].len < block_size or rolls) and compile and use_kv_cache:
                # the model and the sampling below in one compiled call: run eagerly, the sampling ops and the
                # return to Python cost ~0.2 ms per token here (measured against a ~1.5 ms compiled step)
                last = run_compiled_decode_step(self, last, caches, temperature, top_k, check_guards=not checked,
                                                top_p=top_p)
                checked = True
                out[:, n:n + 1] = last
                yield last
                continue
            if not use_kv_cache:
                logits, _ = self(out[:, max(0, n - block_size):n])
            elif caches is not None and (caches[0].len < block_size or rolls):
                logits, _ = self(out[:, n - 1:n], kv_caches=caches) # the cache holds everything before it
            else:
                # first step, or the cache is full: refill it from the (cropped) context
                context = keep if caches is not None and overflow == 'slide' else block_size
                if caches is None:
                    caches = self._new_kv_caches(b, idx.device, fixed_shape=compile)
                for cache in caches:
                    cache.reset()
                logits, _ = self(out[:, max(0, n - context):n], kv_caches=caches)
            # (b, 1), contiguous: what the compiled step was made for
            last = sample_next(logits, temperature, top_k, top_p, generator)
            out[:, n:n + 1] = last
            yield last

    def decode_step(self, idx, pos, caches):
        """Logits (b, 1, vocab) for one new token idx (b, 1) at position pos (a 1-element tensor), writing caches."""
        return self(idx, kv_caches=caches, decode_pos=pos)[0]

    def decode_and_sample(self, idx, pos, caches, temperature, top_k, top_p=1.0):
        """decode_step, then the next token drawn from its logits: what generate(compile=True) compiles."""
        return sample_next(self.decode_step(idx, pos, caches), temperature, top_k, top_p)

    def _new_kv_caches(self, batch_size, device, fixed_shape=False):
        cfg = self.config
        autocast = torch.is_autocast_enabled(device.type)
        dtype = torch.get_autocast_dtype(device.type) if autocast else self.lm_head.weight.dtype
        if device.type == 'cpu' and not fixed_shape:
            # On CPUs the cache is fp32 even for a bf16 model: oneDNN builds a new bf16 kernel for every new key
            # length, measured here at ~0.7 ms per attention matmul, against ~14 us for fp32's (MKL) matmul.
            # The compiled step (fixed_shape) always attends to the whole cache, so it keeps the model's dtype.
            dtype = torch.float32
        kv_heads, head_size = cfg.n_kv_head or cfg.n_head, cfg.n_embd // cfg.n_head
        return [KVCache(batch_size, kv_heads, cfg.block_size, head_size, device, dtype)
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
        model_args.update(checkpoint_options(checkpoint, path))
        model_args.update(overrides)
        model = cls(GPTConfig(**model_args))
        model.load_weights(clean_state_dict(checkpoint['model']), path, CheckpointError)
        return model.to(device), checkpoint

    @classmethod
    def from_pretrained(cls, name_or_dir, override_args=None):
        """
        GPT-2's weights (a name such as 'gpt2', or a local Hugging Face directory) or a local Hugging Face Llama
        directory (docs/llama.md), through huggingface.py. override_args may only set dropout: the rest is the
        weights' own shape. The MLP uses the GELU GPT-2's weights were trained with: GPT-2's tanh approximation,
        where nanoGPT uses the exact one (logits differ by ~1e-3).
        """
        from huggingface import read_pretrained # transformers is imported only when pretrained weights are asked for
        override_args = dict(override_args or {})
        if set(override_args) - {'dropout'}:
            raise UserError(f"only dropout can be changed when loading pretrained weights, "
                            f"not {sorted(set(override_args) - {'dropout'})}")
        config, state_dict = read_pretrained(name_or_dir)
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

def check_sampling(temperature, top_k, overflow, top_p=1.0, pos_emb=None):
    """
    One-line errors for sampling settings that generate() cannot use (sample.py checks them before loading, and
    generate() again with the model's pos_emb).
    """
    if not temperature >= MIN_TEMPERATURE:
        raise UserError(f"temperature={temperature} must be >= {MIN_TEMPERATURE} (small values like 0.1 are nearly "
                        f"greedy; top_k=1 is greedy)")
    if top_k is not None and top_k <= 0:
        raise UserError(f"top_k={top_k} must be > 0 (top_k=1 is greedy; a value >= the vocab size, or None, "
                        f"keeps every token)")
    if overflow not in OVERFLOW_MODES:
        raise UserError(f"overflow={overflow!r} is not one of {', '.join(map(repr, OVERFLOW_MODES))}")
    if overflow == 'roll' and pos_emb not in (None, 'rope'):
        raise UserError("overflow='roll' needs pos_emb='rope': a learned position table has no positions past "
                        "block_size; use 'auto' or 'slide'")
    if not 0 < top_p <= 1:
        raise UserError(f"top_p={top_p} must be in (0, 1] (1 keeps every token; a tiny value keeps only the most "
                        f"likely one)")

def sample_next(logits, temperature, top_k, top_p=1.0, generator=None):
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
    if top_p < 1.0: # skipped at 1.0, so the default draw is exactly the one without top_p
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = F.softmax(sorted_logits, dim=-1)
        # a token goes when the more likely ones already hold top_p; the most likely one always stays
        drop = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), -float('Inf'))
    probs = F.softmax(logits, dim=-1)
    return (probs / torch.empty_like(probs).exponential_(generator=generator)).argmax(dim=-1, keepdim=True)

# On CPUs the decoding step compiles with max-autotune: inductor then times its own C++ GEMM kernels (AMX
# micro-kernels on CPUs that have AMX) against the oneDNN call for each linear layer of the frozen model and keeps
# the faster. Measured on Sapphire Rapids, 6-layer/384 model: 680 -> 1,054-1,143 tokens/s; compiling took 18 s
# instead of 11.5 s with inductor's cache warm, 40 s with it cold (~2 s of timing per weight shape).
CPU_DECODE_COMPILE_MODE = 'max-autotune-no-cudagraphs'
_COMPILED_DECODE_STEPS = {} # one compiled function per device type
def run_compiled_decode_step(model, idx, caches, temperature, top_k, check_guards=True, top_p=1.0):
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
    pos = torch.full((1,), caches[0].pos, dtype=torch.long, device=idx.device)
    # inductor settings, read when it compiles: freezing makes the weights constants, which lets it pack the
    # bf16 linears for oneDNN as PackedLinear does (it cannot take PackedLinear's packed weights as inputs);
    # on CPUs cpp_wrapper calls the kernels from C++ instead of Python: less overhead per token;
    # fallback_random draws from torch's own generator, as eager does: the same seed gives the same tokens
    settings = (torch._inductor.config.patch(freezing=True, cpp_wrapper=device_type == 'cpu', fallback_random=True)
                if check_guards else nullcontext())
    with torch.compiler.set_stance('default', skip_guard_eval_unsafe=not check_guards), settings:
        token = _COMPILED_DECODE_STEPS[device_type](model, idx, pos, caches, temperature, top_k, top_p)
    for cache in caches:
        cache.advance()
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
    arch, name = ('LlamaForCausalLM', 'Llama') if model.config.pos_emb == 'rope' else ('GPT2LMHeadModel', 'GPT-2')
    print(f"wrote a Hugging Face {name} to {dst}: transformers.{arch}.from_pretrained({dst!r}), "
          f"or init_from={dst!r} here")
