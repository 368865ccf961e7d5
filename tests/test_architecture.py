"""
The architecture options past GPT-2 (GPTConfig's n_kv_head, pos_emb, norm, qk_norm, mlp, tie_embeddings,
logit_softcap, zero_init, and cross-attention), each against a reference written out plainly here; KV-cache decoding
with every pair of them; and how checkpoints keep them. docs/architecture.md says what each one is.
"""
import math
import os
from itertools import combinations, product

import pytest
import torch

from checkpoint import CheckpointError
from common import UserError
from configurator import apply_overrides, script_settings
from conftest import ROOT, TINY, one_line_error, run
from model import (GPT, GPTConfig, MLP, MODEL_ARGS, OPTION_DEFAULTS, OPTIONS_KEY, apply_rope, mlp_width, model_options,
                   rope_angles)

VOCAB, BLOCK, N_HEAD, N_EMBD = 50, 16, 4, 32
HEAD_SIZE = N_EMBD // N_HEAD

def tiny(**kw):
    args = dict(n_layer=2, n_head=N_HEAD, n_embd=N_EMBD, block_size=BLOCK, vocab_size=VOCAB, dropout=0.0, bias=True)
    args.update(kw)
    torch.manual_seed(0)
    return GPT(GPTConfig(**args))

# -----------------------------------------------------------------------------
# references, written the slow and obvious way, in float64

def naive_rms(v, eps):
    return v / torch.sqrt((v * v).mean(-1, keepdim=True) + eps)

def naive_rope(v, theta):
    """v (B, T, hs), token t at position t: dimensions i and i + hs/2 turned together by t * theta**(-2i/hs)."""
    hs = v.size(-1)
    out = v.clone()
    for t in range(v.size(1)):
        for i in range(hs // 2):
            angle = t * theta ** (-2 * i / hs)
            a, b = v[:, t, i], v[:, t, i + hs // 2]
            out[:, t, i] = a * math.cos(angle) - b * math.sin(angle)
            out[:, t, i + hs // 2] = a * math.sin(angle) + b * math.cos(angle)
    return out

def naive_attention(attn, x, memory=None, qk_norm_eps=None, rope_theta=None):
    """
    One query head and one query at a time. Query head h reads key/value head h // (n_head / n_kv_head). Without
    memory, query t sees keys 0..t of x; with memory, every key of memory (queries from x, keys and values from it).
    """
    B, T, C = x.shape
    nh, nkv = attn.n_head, attn.n_kv_head
    hs = C // nh
    w, bias = attn.c_attn.weight.double(), attn.c_attn.bias.double()
    source = x if memory is None else memory
    q = x.double() @ w[:C].T + bias[:C]
    kv = source.double() @ w[C:].T + bias[C:]
    k, v = kv[..., :nkv * hs], kv[..., nkv * hs:]
    out = torch.zeros(B, T, C, dtype=torch.float64)
    for h in range(nh):
        g = h // (nh // nkv)
        qh, kh, vh = q[..., h * hs:(h + 1) * hs], k[..., g * hs:(g + 1) * hs], v[..., g * hs:(g + 1) * hs]
        if qk_norm_eps is not None:
            qh, kh = naive_rms(qh, qk_norm_eps), naive_rms(kh, qk_norm_eps)
        if rope_theta is not None:
            qh, kh = naive_rope(qh, rope_theta), naive_rope(kh, rope_theta)
        for t in range(T):
            seen = t + 1 if memory is None else source.size(1)
            scores = (qh[:, t, None, :] * kh[:, :seen]).sum(-1) / math.sqrt(hs) # (B, seen)
            weights = scores.exp() / scores.exp().sum(-1, keepdim=True)
            out[:, t, h * hs:(h + 1) * hs] = (weights[:, :, None] * vh[:, :seen]).sum(1)
    return out @ attn.c_proj.weight.double().T + attn.c_proj.bias.double()

# -----------------------------------------------------------------------------
# attention: grouped-query, multi-query, rope, qk_norm, cross-attention

def attention(model):
    """The first block's attention, with weights large enough for uneven attention and outputs of order one
    (at GPT-2's init every query attends almost evenly, which would hide a wrong score)."""
    attn = model.transformer.h[0].attn
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0.0, 0.3)
    return attn

@pytest.mark.parametrize('impl', ['math', 'sdpa'])
@pytest.mark.parametrize('n_kv_head', [N_HEAD, 2, 1])
def test_grouped_query_attention_and_its_gradients_equal_a_per_head_loop(n_kv_head, impl):
    """Training mode (dropout 0): the outputs and the gradients of c_attn and c_proj match the plain loop's."""
    model = tiny(n_kv_head=n_kv_head).train()
    model.set_attn_impl(impl)
    attn = attention(model)
    x, direction = torch.randn(3, 7, N_EMBD), torch.randn(3, 7, N_EMBD)
    y = attn(x)
    assert torch.allclose(y.double(), naive_attention(attn, x), atol=1e-4)
    (y * direction).sum().backward()
    grads = [p.grad.clone() for p in (attn.c_attn.weight, attn.c_proj.weight)]
    attn.zero_grad()
    (naive_attention(attn, x) * direction).sum().backward()
    for got, want in zip(grads, (attn.c_attn.weight.grad, attn.c_proj.weight.grad)):
        assert got.abs().sum() > 0 and torch.allclose(got, want, atol=1e-4)


def test_fewer_key_value_heads_shrink_only_the_key_value_rows_and_n_head_of_them_is_nanogpts_model():
    assert tiny(n_kv_head=N_HEAD).transformer.h[0].attn.c_attn.weight.shape == (3 * N_EMBD, N_EMBD)
    assert tiny(n_kv_head=2).transformer.h[0].attn.c_attn.weight.shape == (N_EMBD + 2 * 2 * HEAD_SIZE, N_EMBD)
    assert tiny(n_kv_head=1).transformer.h[0].attn.c_attn.weight.shape == (N_EMBD + 2 * HEAD_SIZE, N_EMBD)
    default, explicit = tiny().state_dict(), tiny(n_kv_head=N_HEAD).state_dict()
    assert list(default) == list(explicit) and all(torch.equal(default[k], explicit[k]) for k in default)
    assert model_options(tiny(n_kv_head=N_HEAD).config) == {} # nothing to store: it is multi-head attention
    assert model_options(tiny(n_kv_head=2).config) == {'n_kv_head': 2}


def test_rope_turns_each_pair_of_dimensions_by_position_times_its_frequency():
    theta, T = 100.0, 6
    x = torch.randn(2, 3, T, HEAD_SIZE, dtype=torch.float64) # (B, heads, T, hs)
    got = apply_rope(x, *rope_angles(torch.arange(T), HEAD_SIZE, theta))
    for h in range(3):
        assert torch.allclose(got[:, h], naive_rope(x[:, h], theta), atol=1e-6)


def test_after_rope_a_query_key_product_depends_only_on_the_relative_position():
    q, k = torch.randn(HEAD_SIZE, dtype=torch.float64), torch.randn(HEAD_SIZE, dtype=torch.float64)
    def score(m, n): # q at position m against k at position n
        cos, sin = rope_angles(torch.tensor([m, n]), HEAD_SIZE, 10000.0)
        rotated = apply_rope(torch.stack([q, k])[None, None], cos, sin)[0, 0]
        return float(rotated[0] @ rotated[1])
    for m, n in [(5, 2), (9, 9), (3, 7), (12, 0)]:
        for shift in (1, 4, 100):
            assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=1e-5)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3) # and it does depend on it


@pytest.mark.parametrize('n_kv_head', [N_HEAD, 1])
def test_rope_attention_equals_the_loop_with_rotated_queries_and_keys(n_kv_head):
    theta = 100.0
    model = tiny(pos_emb='rope', rope_theta=theta, n_kv_head=n_kv_head)
    assert 'wpe' not in model.transformer # no position table
    attn = attention(model)
    x = torch.randn(2, 7, N_EMBD)
    with torch.no_grad():
        y = attn(x, rope=rope_angles(torch.arange(7), HEAD_SIZE, theta))
        assert torch.allclose(y.double(), naive_attention(attn, x, rope_theta=theta), atol=1e-4)
        assert not torch.allclose(y.double(), naive_attention(attn, x), atol=1e-3)


def test_qk_norm_rms_normalises_each_heads_queries_and_keys_before_attention():
    eps = 1e-3
    model = tiny(qk_norm=True, norm_eps=eps, n_kv_head=2)
    assert set(model.state_dict()) == set(tiny().state_dict()) # no weights of its own
    attn = attention(model)
    x = 3 * torch.randn(2, 7, N_EMBD)
    with torch.no_grad():
        y = attn(x).double()
        assert torch.allclose(y, naive_attention(attn, x, qk_norm_eps=eps), atol=1e-4)
        assert not torch.allclose(y, naive_attention(attn, x), atol=1e-3)


@pytest.mark.parametrize('n_kv_head', [N_HEAD, 2, 1])
def test_cross_attention_is_unmasked_softmax_attention_over_a_memory_of_another_length(n_kv_head):
    """softmax(q k^T / sqrt(hs)) v, q from x (5 tokens) and k, v from memory (9 tokens), no mask, no cache."""
    attn = attention(tiny(n_kv_head=n_kv_head))
    x, memory = torch.randn(2, 5, N_EMBD), torch.randn(2, 9, N_EMBD)
    with torch.no_grad():
        y = attn(x, memory=memory)
        assert y.shape == x.shape
        assert torch.allclose(y.double(), naive_attention(attn, x, memory=memory), atol=1e-4)
        later = memory.clone()
        later[:, -1] += 1.0
        assert not torch.allclose(attn(x, memory=later)[:, 0], y[:, 0]) # the first query sees the last memory token

# -----------------------------------------------------------------------------
# norms and MLPs

def test_rmsnorm_divides_by_the_root_mean_square_and_has_no_bias():
    eps = 0.1 # large, so that a norm ignoring it would show
    model = tiny(norm='rmsnorm', norm_eps=eps)
    assert not any('ln' in k and k.endswith('.bias') for k in model.state_dict())
    x = torch.randn(3, 5, N_EMBD) + 0.5 # a mean that LayerNorm would remove
    for norm in (model.transformer.h[0].ln_1, model.transformer.h[1].ln_2, model.transformer.ln_f):
        with torch.no_grad():
            norm.weight.normal_()
            want = x.double() / torch.sqrt((x.double() ** 2).mean(-1, keepdim=True) + eps) * norm.weight.double()
            assert torch.allclose(norm(x).double(), want, atol=1e-5)


def test_layernorm_is_still_gpt2s_with_its_bias_and_the_given_eps():
    eps = 0.1
    model = tiny(norm_eps=eps)
    assert set(model.state_dict()) == set(tiny().state_dict())
    norm, x = model.transformer.ln_f, torch.randn(3, 5, N_EMBD).double() + 0.5
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
        mean, var = x.mean(-1, keepdim=True), ((x - x.mean(-1, keepdim=True)) ** 2).mean(-1, keepdim=True)
        want = (x - mean) / torch.sqrt(var + eps) * norm.weight.double() + norm.bias.double()
        assert torch.allclose(norm(x.float()).double(), want, atol=1e-5)


def test_relu2_mlp_is_relu_squared():
    mlp = tiny(mlp='relu2').transformer.h[0].mlp
    x = torch.randn(3, 5, N_EMBD)
    with torch.no_grad():
        h = x @ mlp.c_fc.weight.T + mlp.c_fc.bias
        want = torch.where(h > 0, h, torch.zeros_like(h)) ** 2 @ mlp.c_proj.weight.T + mlp.c_proj.bias
        assert torch.allclose(mlp(x), want, atol=1e-6)


def test_swiglu_mlp_is_silu_of_the_gate_times_up_with_both_in_c_fc():
    """c_fc's first hidden rows are the gate, the next hidden rows the up projection."""
    hidden = 24
    mlp = tiny(mlp='swiglu', mlp_hidden=hidden).transformer.h[0].mlp
    assert mlp.c_fc.weight.shape == (2 * hidden, N_EMBD) and mlp.c_proj.weight.shape == (N_EMBD, hidden)
    x = torch.randn(3, 5, N_EMBD)
    with torch.no_grad():
        gate = x @ mlp.c_fc.weight[:hidden].T + mlp.c_fc.bias[:hidden]
        up = x @ mlp.c_fc.weight[hidden:].T + mlp.c_fc.bias[hidden:]
        want = (gate / (1 + torch.exp(-gate)) * up) @ mlp.c_proj.weight.T + mlp.c_proj.bias
        assert torch.allclose(mlp(x), want, atol=1e-6)


@pytest.mark.parametrize('n_embd', [384, 512, 768, 1024])
def test_default_mlp_widths_and_swiglus_parameters_match_gelus(n_embd):
    def config(mlp):
        return GPTConfig(n_embd=n_embd, n_head=n_embd // 64, mlp=mlp, bias=False)
    assert mlp_width(config('gelu')) == mlp_width(config('relu2')) == 4 * n_embd # GPT-2's
    width = mlp_width(config('swiglu'))
    assert width % 64 == 0 and 8 * n_embd / 3 <= width < 8 * n_embd / 3 + 64 # 2/3 of 4x, rounded up to 64
    params = {mlp: sum(p.numel() for p in MLP(config(mlp)).parameters()) for mlp in ('gelu', 'swiglu')}
    assert params['swiglu'] == pytest.approx(params['gelu'], rel=0.05)
    assert mlp_width(GPTConfig(n_embd=n_embd, n_head=n_embd // 64, mlp='swiglu', mlp_hidden=100)) == 100

# -----------------------------------------------------------------------------
# output head, softcap, init

def test_untied_embeddings_give_lm_head_its_own_matrix_under_the_same_names():
    tied, untied = tiny(), tiny(tie_embeddings=False)
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert not torch.equal(untied.lm_head.weight, untied.transformer.wte.weight)
    assert list(untied.state_dict()) == list(tied.state_dict())
    assert untied.get_num_params(non_embedding=False) == tied.get_num_params(non_embedding=False) + VOCAB * N_EMBD
    with torch.no_grad():
        untied.lm_head.weight.zero_()
    assert untied.transformer.wte.weight.abs().sum() > 0 # not the same storage either


def test_the_flops_count_has_one_vocabulary_matrix_tied_or_not():
    """
    estimate_mfu's 6N counts the parameters each token multiplies by. wte is a lookup, not a matmul: a tied model
    counts its one matrix (which is lm_head too), so an untied one counts lm_head and leaves wte out.
    """
    assert tiny(tie_embeddings=False).get_num_params() == tiny().get_num_params()


LOGIT_BOOST = 150 # tied embeddings this many times GPT-2's init give raw logits up to a few times the cap (tanh bends)

def test_logit_softcap_squashes_the_logits_with_tanh_below_the_cap():
    cap = 15.0
    capped, raw = tiny(logit_softcap=cap), tiny()
    raw.load_state_dict(capped.state_dict())
    with torch.no_grad():
        for model in (capped, raw):
            model.transformer.wte.weight.mul_(LOGIT_BOOST)
    idx = torch.randint(0, VOCAB, (2, 8))
    with torch.no_grad():
        got, _ = capped(idx, torch.zeros_like(idx))
        want, _ = raw(idx, torch.zeros_like(idx))
    assert want.abs().max() > 2 * cap
    assert torch.allclose(got, cap * torch.tanh(want / cap), atol=1e-4)
    assert got.abs().max() < cap


@pytest.mark.parametrize('pos_emb', ['learned', 'rope'])
def test_zero_init_starts_every_block_as_the_identity(pos_emb):
    model = tiny(zero_init=True, pos_emb=pos_emb, mlp='swiglu')
    for name, p in model.named_parameters():
        if name.endswith('c_proj.weight'):
            assert torch.equal(p, torch.zeros_like(p)), name
        elif name.endswith('c_fc.weight') or name.endswith('c_attn.weight'):
            assert p.std() > 0.01, name # the rest keeps GPT-2's init
    idx = torch.randint(0, VOCAB, (2, 8))
    logits, loss = model(idx, idx)
    x = model.transformer.wte(idx)
    if pos_emb == 'learned':
        x = x + model.transformer.wpe(torch.arange(8))
    ln = model.transformer.ln_f
    h = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + ln.eps)
    assert torch.allclose(logits, (h * ln.weight + ln.bias) @ model.lm_head.weight.T, atol=1e-5)
    loss.backward() # the blocks can still learn: their output projections get a gradient
    assert all(block.attn.c_proj.weight.grad.abs().sum() > 0 and block.mlp.c_proj.weight.grad.abs().sum() > 0
               for block in model.transformer.h)

# -----------------------------------------------------------------------------
# KV-cache decoding with the options together

def pairwise(levels):
    """
    Rows of option values in which every pair of values of every two options appears at least once: each option's
    interaction with each other one is covered by about ten models instead of the full product's hundreds. Greedy and
    deterministic: each row is the one of the product that covers the most pairs not yet covered.
    """
    names = list(levels)
    def pairs(row):
        return {((a, row[a]), (b, row[b])) for a, b in combinations(names, 2)}
    rows = [dict(zip(names, values)) for values in product(*levels.values())]
    todo, chosen = set().union(*map(pairs, rows)), []
    while todo:
        best = max(rows, key=lambda row: len(pairs(row) & todo))
        chosen.append(best)
        todo -= pairs(best)
    return chosen

LEVELS = dict(n_kv_head=[N_HEAD, 2, 1], pos_emb=['learned', 'rope'], norm=['layernorm', 'rmsnorm'],
              qk_norm=[False, True], mlp=['gelu', 'relu2', 'swiglu'], tie_embeddings=[True, False],
              logit_softcap=[0.0, 15.0], attn_impl=['sdpa', 'math'])
GRID = pairwise(LEVELS)

def test_the_grid_covers_every_pair_of_option_values_with_few_models():
    for a, b in combinations(LEVELS, 2):
        assert {(row[a], row[b]) for row in GRID} == set(product(LEVELS[a], LEVELS[b])), (a, b)
    assert len(GRID) <= 16 # of the full product's 576


LOGIT_SCALE = 3.0 # logits of about this standard deviation: greedy and sampled continuations differ

@pytest.mark.parametrize('options', GRID, ids=lambda o: '-'.join(f'{k}={v}' for k, v in o.items()))
def test_kv_cache_generation_equals_full_recompute_with_every_pair_of_options(options):
    options = dict(options)
    attn_impl = options.pop('attn_impl')
    model = tiny(**options).eval()
    model.set_attn_impl(attn_impl)
    with torch.no_grad():
        # Weights of order one: uneven attention, blocks that outweigh the token's own embedding (at GPT-2's init a
        # tied model's likeliest next token is the last one again), and logits a few units apart, which no
        # difference in the order of fp32 sums between the two ways can swap.
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, p.size(1) ** -0.5)
        model.lm_head.weight.mul_(LOGIT_SCALE)
    idx = torch.randint(0, VOCAB, (2, 3), generator=torch.Generator().manual_seed(1))
    new = BLOCK - idx.size(1) # up to a full block: both ways see the whole context
    greedy = [model.generate(idx, new, top_k=1, use_kv_cache=cache) for cache in (True, False)]
    assert torch.equal(greedy[0], greedy[1])
    sampled = [model.generate(idx, new, temperature=2.0, use_kv_cache=cache,
                              generator=torch.Generator().manual_seed(2)) for cache in (True, False)]
    assert torch.equal(sampled[0], sampled[1])
    assert not torch.equal(sampled[0], greedy[0])
    # and not only the argmax: each cached step's logits are the full forward's at that position
    seq = greedy[0]
    with torch.no_grad():
        full, _ = model(seq, torch.zeros_like(seq))
        caches = model._new_kv_caches(2, seq.device)
        steps = [model(seq[:, :3], kv_caches=caches)[0]] + [model(seq[:, n:n + 1], kv_caches=caches)[0]
                                                            for n in range(3, BLOCK)]
        # the fixed-shape step that generate(compile=True) compiles, run eagerly here: one token at a time, from 0
        fixed = model._new_kv_caches(2, seq.device, fixed_shape=True)
        one_by_one = []
        for n in range(BLOCK):
            one_by_one.append(model.decode_step(seq[:, n:n + 1], torch.tensor([n]), fixed))
            for cache in fixed:
                cache.advance()
    assert torch.allclose(torch.cat(steps, dim=1), full[:, 2:], atol=1e-4)
    assert torch.allclose(torch.cat(one_by_one, dim=1), full, atol=1e-4)

# -----------------------------------------------------------------------------
# checkpoints and bad input

def train(out_dir, *args, check=True):
    return run('train.py', '--dataset=shakespeare_char', f'--out_dir={out_dir}', '--eval_iters=1', '--log_interval=1',
               *TINY, *args, check=check)

OPTIONS = {'n_kv_head': 1, 'pos_emb': 'rope', 'rope_theta': 500.0, 'norm': 'rmsnorm', 'norm_eps': 1e-6,
           'qk_norm': True, 'mlp': 'swiglu', 'mlp_hidden': 48, 'tie_embeddings': False, 'logit_softcap': 15.0,
           'zero_init': True}

def test_a_gpt2_checkpoint_is_nanogpts_and_a_resume_may_not_change_its_architecture(char_data, tmp_path):
    train(tmp_path, '--max_iters=1', '--eval_interval=1')
    ckpt = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert list(ckpt['model_args']) == list(MODEL_ARGS) and OPTIONS_KEY not in ckpt
    GPT(GPTConfig(**ckpt['model_args'])).load_state_dict(ckpt['model'], strict=True) # as nanoGPT loads it
    error = one_line_error(train(tmp_path, '--init_from=resume', '--max_iters=2', '--pos_emb=rope', check=False))
    assert "pos_emb='rope'" in error and "pos_emb='learned'" in error


def test_a_run_with_options_stores_exactly_them_and_resumes_and_samples_with_them(char_data, tmp_path):
    train(tmp_path, '--max_iters=1', '--eval_interval=1', *(f'--{k}={v}' for k, v in OPTIONS.items()))
    ckpt = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert list(ckpt['model_args']) == list(MODEL_ARGS) and ckpt[OPTIONS_KEY] == OPTIONS
    assert 'transformer.wpe.weight' not in ckpt['model']
    assert not torch.equal(ckpt['model']['lm_head.weight'], ckpt['model']['transformer.wte.weight'])
    model, _ = GPT.from_checkpoint(str(tmp_path / 'ckpt.pt'))
    assert {k: getattr(model.config, k) for k in OPTIONS} == OPTIONS
    resumed = train(tmp_path, '--init_from=resume', '--max_iters=2', '--eval_interval=2') # no option given again
    assert 'iter 1:' in resumed.stdout
    again = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert again['iter_num'] == 2 and again[OPTIONS_KEY] == OPTIONS
    p = run('sample.py', f'--out_dir={tmp_path}', '--start=ROMEO:', '--num_samples=1', '--max_new_tokens=40')
    assert len(p.stdout.split('ROMEO:')[1].split('\n---------------')[0]) == 40 # past block_size 32: rope rolls on


@pytest.mark.parametrize('bad, words', [
    (dict(n_kv_head=3), 'n_kv_head=3'), # 4 query heads do not split into groups of 3
    (dict(n_kv_head=8), 'n_kv_head=8'), # more key/value heads than query heads
    (dict(n_kv_head=-1), 'n_kv_head=-1'),
    (dict(pos_emb='rope', n_embd=36), 'odd'), # head size 9: rope turns pairs
    (dict(pos_emb='alibi'), "pos_emb='alibi'"),
    (dict(mlp='swiglu', mlp_hidden=-64), 'mlp_hidden=-64'),
    (dict(mlp='swiglu', mlp_hidden=85.3), 'mlp_hidden=85.3'),
    (dict(norm='batchnorm'), "norm='batchnorm'"),
    (dict(rope_theta=0.0), 'rope_theta=0.0'),
    (dict(norm_eps=-1e-5), 'norm_eps'),
    (dict(logit_softcap=-15.0), 'logit_softcap'),
])
def test_a_config_that_cannot_make_a_model_is_one_user_error(bad, words):
    with pytest.raises(UserError, match=words):
        tiny(**bad)


@pytest.mark.parametrize('bad, words', [
    (dict(mlp_hidden=True), 'mlp_hidden=True'), # a flag where a width belongs: not width 1
    (dict(n_kv_head=True), 'n_kv_head=True'), # not multi-query by accident
    (dict(logit_softcap=float('inf')), 'logit_softcap=inf'), # inf * tanh(x / inf) = inf * 0: NaN logits
    (dict(logit_softcap='15'), "logit_softcap='15'"), # a config file's string: a UserError, not a TypeError
])
def test_a_value_of_the_wrong_kind_is_one_user_error_too(bad, words):
    with pytest.raises(UserError, match=words):
        tiny(**bad)


def test_a_checkpoint_with_an_option_this_version_does_not_know_is_refused(tmp_path):
    model = tiny(vocab_size=65)
    torch.save({'model': model.state_dict(), 'model_args': {k: getattr(model.config, k) for k in MODEL_ARGS},
                OPTIONS_KEY: {'foo': 1}, 'iter_num': 0, 'best_val_loss': 9.0,
                'config': {'dataset': 'shakespeare_char'}}, tmp_path / 'ckpt.pt')
    with pytest.raises(CheckpointError, match="'foo'"):
        GPT.from_checkpoint(str(tmp_path / 'ckpt.pt'))
    error = one_line_error(run('sample.py', f'--out_dir={tmp_path}', '--max_new_tokens=5', check=False))
    assert "'foo'" in error and 'does not know' in error


def test_checkpoint_options_rebuild_the_model_and_weights_of_another_width_are_refused(tmp_path):
    model = tiny(mlp='swiglu', mlp_hidden=48)
    args = {k: getattr(model.config, k) for k in MODEL_ARGS}
    torch.save({'model': model.state_dict(), 'model_args': args, OPTIONS_KEY: model_options(model.config)},
               tmp_path / 'ckpt.pt')
    loaded, _ = GPT.from_checkpoint(str(tmp_path / 'ckpt.pt'))
    assert loaded.config.mlp_hidden == 48 and torch.equal(loaded.transformer.h[0].mlp.c_fc.weight,
                                                          model.transformer.h[0].mlp.c_fc.weight)
    # the same weights under options that give the default swiglu width: a clear error, not a silent reshape
    torch.save({'model': model.state_dict(), 'model_args': args, OPTIONS_KEY: {'mlp': 'swiglu'}}, tmp_path / 'w.pt')
    with pytest.raises(CheckpointError, match='c_fc.weight has shape'):
        GPT.from_checkpoint(str(tmp_path / 'w.pt'))
    # where earlier versions kept the GELU choice: beside model_args, still read
    gelu = tiny()
    torch.save({'model': gelu.state_dict(), 'model_args': {k: getattr(gelu.config, k) for k in MODEL_ARGS},
                'gelu_approximate': 'tanh'}, tmp_path / 'old.pt')
    assert GPT.from_checkpoint(str(tmp_path / 'old.pt'))[0].config.gelu_approximate == 'tanh'

# -----------------------------------------------------------------------------
# the CPU config and its modern twin

def config_file(name):
    settings = script_settings(os.path.join(ROOT, 'train.py')) # train.py's defaults, then the file as train.py reads it
    apply_overrides(settings, [os.path.join(ROOT, 'config', name)])
    return settings

def set_options(settings):
    return {k: v for k, v in settings.items() if k in OPTION_DEFAULTS and v != OPTION_DEFAULTS[k]}

CPU, MODERN = config_file('shakespeare_char_cpu.py'), config_file('shakespeare_char_cpu_modern.py')

def test_the_modern_cpu_config_is_the_gpt2_one_with_only_architecture_options_added():
    assert set_options(CPU) == {} and set_options(MODERN) # GPT-2's architecture, and one that differs from it
    training = lambda c: {k: v for k, v in c.items() if k not in OPTION_DEFAULTS and k != 'out_dir'}
    assert training(CPU) == training(MODERN) # the same budget, size, optimizer and schedule: a fair comparison
    assert CPU['out_dir'] != MODERN['out_dir']


@pytest.mark.parametrize('name, settings', [('shakespeare_char_cpu.py', CPU),
                                            ('shakespeare_char_cpu_modern.py', MODERN)])
def test_each_cpu_config_trains_and_its_checkpoint_keeps_exactly_its_options(char_data, tmp_path, name, settings):
    run('train.py', f'config/{name}', f'--out_dir={tmp_path}', '--max_seconds=0', '--max_iters=2',
        '--eval_interval=2', '--eval_iters=1', '--full_eval=False', '--n_layer=1', '--n_embd=32')
    ckpt = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert list(ckpt['model_args']) == list(MODEL_ARGS) and ckpt.get(OPTIONS_KEY, {}) == set_options(settings)
