"""What model.py promises: GPT-2's architecture and init, nanoGPT's names, exact attention and KV-cache decoding."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from common import UserError
from model import (GPT, GPTConfig, Dropout, MODEL_ARGS, PackedLinear, packed_linear_supported, prepare_for_sampling,
                   sample_next)
from optimizers import BatchedMuon, cosine_lr, lr_at

def tiny(**kw):
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50, dropout=0.0, bias=True)
    args.update(kw)
    torch.manual_seed(0)
    return GPT(GPTConfig(**args))


def naive_attention(attn, x):
    """Causal self-attention written out the slow, obvious way: one head and one query at a time."""
    B, T, C = x.shape
    hs = C // attn.n_head
    q, k, v = attn.c_attn(x).split(C, dim=2)
    out = torch.zeros(B, T, C, dtype=torch.float64)
    for h in range(attn.n_head):
        sl = slice(h * hs, (h + 1) * hs)
        for t in range(T):
            scores = (q[:, t, sl].double()[:, None, :] * k[:, :t + 1, sl].double()).sum(-1) / math.sqrt(hs)
            out[:, t, sl] = (torch.softmax(scores, dim=-1)[:, :, None] * v[:, :t + 1, sl].double()).sum(1)
    return attn.c_proj(out.float())


@pytest.mark.parametrize('impl', ['sdpa', 'math'])
def test_attention_equals_naive_masked_softmax(impl):
    model = tiny()
    model.set_attn_impl(impl)
    attn = model.transformer.h[0].attn
    x = torch.randn(3, 11, 32)
    with torch.no_grad():
        assert torch.allclose(attn(x), naive_attention(attn, x), atol=1e-5)


@pytest.mark.parametrize('impl', ['sdpa', 'math'])
def test_changing_a_future_token_never_changes_earlier_logits(impl):
    model = tiny().eval()
    model.set_attn_impl(impl)
    idx = torch.randint(0, 50, (2, 16))
    changed = idx.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 50
    with torch.no_grad():
        a, _ = model(idx, torch.zeros_like(idx)) # with targets: logits at every position
        b, _ = model(changed, torch.zeros_like(idx))
    assert torch.equal(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_parameter_names_are_nanogpts():
    model = tiny(n_layer=1)
    expected = {'transformer.wte.weight', 'transformer.wpe.weight', 'lm_head.weight',
                'transformer.ln_f.weight', 'transformer.ln_f.bias'}
    for name in ('ln_1', 'attn.c_attn', 'attn.c_proj', 'ln_2', 'mlp.c_fc', 'mlp.c_proj'):
        expected |= {f'transformer.h.0.{name}.weight', f'transformer.h.0.{name}.bias'}
    assert set(model.state_dict()) == expected
    assert model.lm_head.weight is model.transformer.wte.weight # tied
    assert set(tiny(n_layer=1, bias=False).state_dict()) == {k for k in expected if not k.endswith('.bias')}
    assert MODEL_ARGS == ('n_layer', 'n_head', 'n_embd', 'block_size', 'bias', 'vocab_size', 'dropout')


def test_gpt2_initialisation():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=8, n_head=4, n_embd=256, block_size=64, vocab_size=500))
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.transformer.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    scaled = 0.02 / math.sqrt(2 * 8) # residual projections
    assert model.transformer.h[0].attn.c_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert model.transformer.h[7].mlp.c_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert model.transformer.h[0].attn.c_attn.bias.abs().sum() == 0


def test_loss_at_init_is_about_log_vocab_and_targets_of_minus_one_are_ignored():
    model = tiny(vocab_size=65)
    idx = torch.randint(0, 65, (8, 16))
    targets = torch.randint(0, 65, (8, 16))
    logits, loss = model(idx, targets)
    assert abs(loss.item() - math.log(65)) < 0.1 # near-uniform predictions at init
    masked_targets = targets.clone()
    masked_targets[:, 8:] = -1
    _, masked = model(idx, masked_targets)
    expected = F.cross_entropy(logits[:, :8].reshape(-1, 65), targets[:, :8].reshape(-1))
    assert masked.item() == pytest.approx(expected.item(), rel=1e-6)


def test_without_targets_only_the_last_position_is_computed():
    model = tiny()
    idx = torch.randint(0, 50, (2, 10))
    logits, loss = model(idx)
    assert loss is None and logits.shape == (2, 1, 50)
    full, _ = model(idx, idx)
    assert torch.allclose(logits[:, 0], full[:, -1], atol=1e-6)


def test_a_tiny_model_overfits_one_batch():
    model = tiny()
    opt = model.configure_optimizers(0.0, 3e-3, (0.9, 0.99), 'cpu')
    idx = torch.randint(0, 50, (4, 16))
    for _ in range(150):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.1


def test_micro_steps_give_the_gradients_of_one_big_batch():
    """k micro-batches of B, each loss divided by k (as train.py does), equal one batch of k*B."""
    model = tiny()
    idx = torch.randint(0, 50, (8, 17))
    x, y = idx[:, :-1], idx[:, 1:]
    _, loss = model(x, y)
    loss.backward()
    big = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    k = 4
    for xs, ys in zip(x.chunk(k), y.chunk(k)):
        _, loss = model(xs, ys)
        (loss / k).backward()
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, big[n], atol=1e-6), n


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_cpu_dropout_drops_a_fraction_p_scales_the_rest_and_passes_gradients_through_the_same_mask(dtype):
    """The CPU dropout draws its own mask (faster than bernoulli_): it must still be dropout, exactly."""
    drop = Dropout(0.3).train()
    x = torch.randn(400, 1000, dtype=dtype).requires_grad_()
    torch.manual_seed(0)
    y = drop(x)
    kept = y != 0
    assert abs((~kept).float().mean().item() - 0.3) < 0.003 # 400k draws: the standard error is 0.0007
    assert torch.equal(y[kept], (x[kept].float() * (1 / 0.7)).to(dtype)) # scaled in fp32, rounded once
    assert torch.equal(kept.sum(0) > 0, torch.ones(1000, dtype=torch.bool)) # no column always dropped,       
    assert kept.float().mean(0).std() < 0.05                                 # no position favoured: independent bits
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, (kept.float() * (1 / 0.7)).to(dtype))
    torch.manual_seed(0)
    assert torch.equal(drop(x), y) # the global generator: seeded runs and resumed runs repeat their masks
    assert torch.equal(drop.eval()(x), x)


def test_cosine_lr_schedule_values():
    lr = lambda it: cosine_lr(it, learning_rate=1e-3, warmup_iters=100, lr_decay_iters=5000, min_lr=1e-4)
    assert lr(0) == pytest.approx(1e-3 / 101) # linear warmup from (it+1)/(warmup+1)
    assert lr(49) == pytest.approx(1e-3 * 50 / 101)
    assert lr(100) == pytest.approx(1e-3) # peak right after warmup
    assert lr(2550) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4)) # half way through the cosine
    assert lr(5000) == pytest.approx(1e-4)
    assert lr(9000) == pytest.approx(1e-4) # flat at min_lr after the decay
    values = [lr(i) for i in range(100, 5001, 50)]
    assert all(a >= b for a, b in zip(values, values[1:])) # monotone decay
    # no cosine at all (lr_decay_iters == warmup_iters, 0 or not): warmup, then min_lr
    assert cosine_lr(5, 1e-3, 5, 5, 1e-4) == cosine_lr(0, 1e-3, 0, 0, 1e-4) == 1e-4


def test_wsd_schedule_warms_up_holds_then_decays_linearly_over_its_last_fraction():
    # warmup 10 steps, then 100 steps to lr_decay_iters=110; decay_frac=0.5: flat up to step 60, a line to 110
    lr = lambda it: lr_at(it, 0.0, 1.0, 10, 110, 0.1, schedule='wsd', decay_frac=0.5)
    assert lr(0) == pytest.approx(1 / 11) and lr(9) == pytest.approx(10 / 11) # the same warmup as cosine
    assert lr(10) == lr(35) == lr(60) == 1.0 # stable
    assert lr(85) == pytest.approx(0.55) # half way down the line from 1.0 to 0.1
    assert lr(110) == lr(500) == pytest.approx(0.1)
    values = [lr(i) for i in range(60, 111)]
    steps = [a - b for a, b in zip(values, values[1:])]
    assert all(s == pytest.approx(0.9 / 50) for s in steps) # a straight line, not a curve


def test_constant_schedule_warms_up_then_stays_and_decay_lr_false_is_flat_from_the_start():
    lr = lambda it, **kw: lr_at(it, 0.0, 1e-3, 10, 1000, 1e-4, schedule='constant', **kw)
    assert lr(0) == pytest.approx(1e-3 / 11) and lr(10) == lr(999) == lr(5000) == 1e-3
    assert lr(0, decay=False) == lr(5000, decay=False) == 1e-3 # nanoGPT's decay_lr=False: no warmup either


@pytest.mark.parametrize('schedule', ['cosine', 'wsd'])
def test_with_a_time_budget_each_schedule_decays_in_time_not_in_steps(schedule):
    """max_seconds places the decay by the share of the budget spent: at step 1000, 30% in, wsd has not begun."""
    at = lambda seconds: lr_at(1000, seconds, 1.0, 10, 110, 0.1, max_seconds=100.0, schedule=schedule,
                               decay_frac=0.5)
    assert at(0.0) == 1.0 and at(100.0) == pytest.approx(0.1) and at(500.0) == pytest.approx(0.1)
    assert at(30.0) == (1.0 if schedule == 'wsd' else pytest.approx(cosine_lr(40, 1.0, 10, 110, 0.1)))
    assert at(75.0) == pytest.approx(0.55 if schedule == 'wsd' else cosine_lr(85, 1.0, 10, 110, 0.1))


def test_optimizer_decays_only_matrices_and_is_fused_on_cpu():
    model = tiny()
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    decay, nodecay = opt.param_groups
    assert decay['weight_decay'] == 0.1 and nodecay['weight_decay'] == 0.0
    assert all(p.dim() >= 2 for p in decay['params']) and all(p.dim() < 2 for p in nodecay['params'])
    assert len(decay['params']) + len(nodecay['params']) == len(list(model.parameters()))
    assert opt.defaults['fused'] is True


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    model = tiny()
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu', muon=True)
    decay, nodecay, muon = opt.param_groups # one optimizer: AdamW's two groups, then Muon's
    names = {p: n for n, p in model.named_parameters()}
    assert sorted(names[p] for p in decay['params']) == ['transformer.wpe.weight', 'transformer.wte.weight']
    assert all(p.dim() < 2 for p in nodecay['params']) and nodecay['weight_decay'] == 0.0
    assert sorted(names[p].split('.', 3)[3] for p in muon['params']) == sorted(
        ['attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight'] * 2)
    assert muon['weight_decay'] == 0.1 and muon['adjust_lr_fn'] == 'match_rms_adamw'
    assert sum(len(g['params']) for g in opt.param_groups) == len(list(model.parameters()))
    for g in opt.param_groups: # the LR schedule sets one list of groups: both optimizers inside follow it
        g['lr'] = 0.5
    assert {g['lr'] for g in opt.adamw.param_groups + opt.muon.param_groups} == {0.5}


# the matrix shapes of a block, twice: c_fc and the MLP's c_proj are one shape up to a transpose
BLOCK_SHAPES = [(96, 32), (32, 32), (128, 32), (32, 128)] * 2


@pytest.mark.parametrize('ns_dtype', [torch.bfloat16, torch.float32])
@pytest.mark.parametrize('adjust_lr_fn', ['match_rms_adamw', 'original'])
def test_batched_muon_makes_the_update_of_torchs_muon(ns_dtype, adjust_lr_fn):
    """
    BatchedMuon orthogonalizes all matrices of a shape at once, in bf16 as torch's Muon does or in fp32 (for CPUs
    that only emulate bf16). Either way its update is torch's Muon's to within bf16's precision, and so is its state.
    """
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(*shape) * 0.02) for shape in BLOCK_SHAPES]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    start = [p.detach().clone() for p in ours]
    kwargs = dict(lr=3e-3, weight_decay=0.1, adjust_lr_fn=adjust_lr_fn)
    opts = [BatchedMuon(ours, ns_dtype=ns_dtype, **kwargs), torch.optim.Muon(theirs, **kwargs)]
    for _ in range(3):
        for p, q in zip(ours, theirs):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        for opt in opts:
            opt.step()
    for p, q, p0 in zip(ours, theirs, start):
        moved = (p - p0).abs().max().item()
        assert moved > 1e-3 # it really stepped
        assert (p - q).abs().max().item() < 0.05 * moved # the same, to bf16's precision
    assert opts[0].state_dict()['state'][0].keys() == opts[1].state_dict()['state'][0].keys() == {'momentum_buffer'}


def test_batched_muon_leaves_a_matrix_without_a_gradient_alone():
    """A matrix that got no gradient this step (a frozen or unused layer) is not moved, not even by weight decay."""
    used, unused = torch.nn.Parameter(torch.randn(32, 96)), torch.nn.Parameter(torch.randn(32, 96))
    before = unused.detach().clone()
    used.grad = torch.randn_like(used)
    BatchedMuon([used, unused], lr=1e-2, weight_decay=0.1, adjust_lr_fn='match_rms_adamw').step()
    assert torch.equal(unused, before)


def test_muon_resumed_from_its_state_dict_continues_exactly():
    """MuonWithAdamW saves and loads as one optimizer: k steps, save, load into a new one, more steps = no stop."""
    def run(n_steps, model, opt):
        torch.manual_seed(1)
        for _ in range(n_steps):
            idx = torch.randint(0, 50, (4, 17))
            _, loss = model(idx[:, :-1], idx[:, 1:])
            loss.backward()
            opt.step()
            opt.zero_grad()
    straight = tiny()
    opt = straight.configure_optimizers(0.1, 1e-2, (0.9, 0.95), 'cpu', muon=True)
    run(3, straight, opt)
    saved_model, saved_opt = copy.deepcopy(straight.state_dict()), copy.deepcopy(opt.state_dict()) # as torch.save keeps them
    run(3, straight, opt)
    resumed = tiny()
    resumed.load_state_dict(saved_model)
    opt2 = resumed.configure_optimizers(0.1, 1e-2, (0.9, 0.95), 'cpu', muon=True)
    opt2.load_state_dict(saved_opt)
    run(3, resumed, opt2)
    for (n, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n


def full_recompute(model, idx, n):
    """The reference decoder: the whole (cropped) context through the model for every token, greedy."""
    for _ in range(n):
        logits, _ = model(idx[:, -model.config.block_size:])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


@pytest.mark.parametrize('impl', ['sdpa', 'math'])
def test_kv_cache_generation_equals_full_recompute_also_past_block_size(impl):
    model = tiny(block_size=16, vocab_size=50).eval()
    model.set_attn_impl(impl)
    with torch.no_grad(): # sharpen the model so that greedy decoding has clear winners
        model.lm_head.weight.mul_(8)
    prompt = torch.randint(0, 50, (2, 5))
    expected = full_recompute(model, prompt, 40) # 45 tokens: far past block_size 16
    got = model.generate(prompt, 40, top_k=1, overflow='recompute')
    assert torch.equal(got, expected)
    assert torch.equal(model.generate(prompt, 40, top_k=1, use_kv_cache=False), expected)


def sliding_recompute(model, idx, n):
    """overflow='slide' written out: the window restarts at the last block_size // 2 tokens whenever it would
    outgrow block_size, and the whole window goes through the model (from position 0) for every token."""
    block_size, start = model.config.block_size, max(0, idx.size(1) - model.config.block_size)
    for _ in range(n):
        if idx.size(1) - start > block_size:
            start = idx.size(1) - block_size // 2
        logits, _ = model(idx[:, start:])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


def sharp_tiny(**kw):
    model = tiny(block_size=16, vocab_size=50, **kw).eval()
    with torch.no_grad(): # sharpen the model so that greedy decoding has clear winners
        model.lm_head.weight.mul_(8)
    return model


@pytest.mark.parametrize('impl', ['sdpa', 'math'])
def test_slide_overflow_keeps_half_a_block_and_positions_consistent(impl):
    model = sharp_tiny()
    model.set_attn_impl(impl)
    prompt = torch.randint(0, 50, (2, 5))
    got = model.generate(prompt, 40, top_k=1, overflow='slide')
    assert torch.equal(got, sliding_recompute(model, prompt, 40))
    exact = full_recompute(model, prompt, 40)
    assert torch.equal(got[:, :17], exact[:, :17]) # within block_size (and its first token past it) nothing changes


@pytest.mark.parametrize('impl', ['sdpa', 'math'])
def test_a_rope_models_rolling_cache_is_exact_past_block_size_and_never_refeeds(impl, monkeypatch):
    """With rope, attention sees relative positions only: overwriting the oldest cache slot gives, for every token,
    exactly what recomputing the last block_size tokens gives, at one token's cost."""
    model = sharp_tiny(pos_emb='rope', n_kv_head=1)
    model.set_attn_impl(impl)
    prompt = torch.randint(0, 50, (2, 5))
    expected = full_recompute(model, prompt, 40) # 45 tokens, past block_size 16
    fed = []
    forward = model.forward
    monkeypatch.setattr(model, 'forward', lambda idx, *a, **k: fed.append(idx.size(1)) or forward(idx, *a, **k))
    assert torch.equal(model.generate(prompt, 40, top_k=1), expected) # 'auto' is 'roll' for rope
    assert fed == [5] + [1] * 39 # the prompt once, then one token per step: no refill at block_size
    assert torch.equal(model.generate(prompt, 40, top_k=1, overflow='roll'), expected)


def test_default_overflow_is_slide_for_learned_positions_and_roll_is_refused_for_them():
    model = sharp_tiny()
    prompt = torch.randint(0, 50, (2, 5))
    assert torch.equal(model.generate(prompt, 40, top_k=1), sliding_recompute(model, prompt, 40))
    with pytest.raises(UserError, match="overflow='roll' needs pos_emb='rope'"):
        model.generate(prompt, 4, overflow='roll')


def test_bf16_sampling_with_packed_weights_stays_close_to_fp32():
    model = sharp_tiny()
    model.set_attn_impl('math')
    prompt = torch.randint(0, 50, (2, 5))
    idx = torch.randint(0, 50, (2, 16))
    fp32_logits, _ = model(idx, idx)
    expected = full_recompute(model, prompt, 40)
    fast = prepare_for_sampling(model, 'cpu', 'bfloat16')
    assert fast.transformer.wte.weight.dtype == torch.bfloat16 # cast once, in place
    if packed_linear_supported(): # else (e.g. an AVX2-only CPU) plain bf16 Linears
        assert isinstance(fast.transformer.h[0].mlp.c_fc, PackedLinear) and isinstance(fast.lm_head, PackedLinear)
    with torch.no_grad():
        bf16_logits, _ = fast(idx, idx)
    # bf16 keeps ~3 significant digits: the logits (spread ~10 here) agree to a few hundredths
    assert (bf16_logits.float() - fp32_logits).abs().max() < 0.1 * fp32_logits.abs().max()
    got = fast.generate(prompt, 40, top_k=1) # KV cache (fp32) with bf16 weights, past block_size
    assert (got == expected).float().mean() > 0.9, (got, expected)


def test_the_fixed_shape_decoding_step_gives_the_logits_of_the_growing_cache():
    """decode_step writes at a position tensor and attends to the whole cache under a mask: same logits as update()."""
    model = tiny(bias=False).eval()
    idx = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        growing, fixed = model._new_kv_caches(2, idx.device), model._new_kv_caches(2, idx.device)
        model(idx[:, :4], kv_caches=growing)
        model(idx[:, :4], kv_caches=fixed)
        for n in range(4, 9):
            expected, _ = model(idx[:, n:n + 1], kv_caches=growing)
            got = model.decode_step(idx[:, n:n + 1], torch.tensor([n]), fixed)
            assert torch.allclose(got, expected, atol=1e-5)
        assert torch.equal(fixed[0].k[:, :, :9], growing[0].k[:, :, :9]) # written at the same positions


def test_compiled_decoding_gives_the_eager_tokens_and_compiles_once():
    import torch._dynamo.utils as dynamo_utils
    model = sharp_tiny(n_layer=1)
    prompt = torch.randint(0, 50, (2, 5))
    with torch.no_grad():
        for overflow in ('slide', 'recompute'): # 40 tokens: past block_size 16, where the cache is refilled
            expected = model.generate(prompt, 40, top_k=1, overflow=overflow)
            assert torch.equal(model.generate(prompt, 40, top_k=1, overflow=overflow, compile=True), expected)
        graphs = dynamo_utils.counters['stats']['unique_graphs']
        model.generate(prompt, 40, top_k=1, compile=True) # a new call, new caches, same shapes: no new compile
        assert dynamo_utils.counters['stats']['unique_graphs'] == graphs
        # sampling, not greedy: the compiled step draws in-graph, from the same generator as eager's multinomial
        for overflow in ('recompute', 'slide'): # the second reuses the step compiled for the first: same settings
            if overflow == 'slide':
                graphs = dynamo_utils.counters['stats']['unique_graphs']
            torch.manual_seed(1)
            expected = model.generate(prompt, 40, temperature=4.0, top_k=5, overflow=overflow)
            torch.manual_seed(1)
            assert torch.equal(model.generate(prompt, 40, temperature=4.0, top_k=5, overflow=overflow, compile=True),
                               expected), overflow
            again = model.generate(prompt, 40, temperature=4.0, top_k=5, overflow=overflow, compile=True)
            assert not torch.equal(again, expected) # random: the same tokens came from the same seed, not by chance
        assert dynamo_utils.counters['stats']['unique_graphs'] == graphs
        rope = sharp_tiny(n_layer=1, pos_emb='rope', n_kv_head=1) # the rolling cache compiled: slots wrap around
        assert torch.equal(rope.generate(prompt, 40, top_k=1, compile=True), full_recompute(rope, prompt, 40))
    if packed_linear_supported(): # weights packed for eager sampling are not for the compiler: one clear error
        with pytest.raises(UserError, match='compile=True'):
            prepare_for_sampling(sharp_tiny(), 'cpu', 'bfloat16').generate(prompt, 3, compile=True)


def test_sample_next_draws_multinomials_token_from_the_same_generator_state():
    """
    sample_next draws as torch.multinomial(probs, 1) does, written out so that no host sync is needed and the
    compiler can fuse it: from the same seed both give the same token, for any probabilities, tempered or top-k.
    """
    draws = differ_from_greedy = 0
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        b, vocab = int(torch.randint(1, 8, (), generator=g)), int(torch.randint(2, 100, (), generator=g))
        logits = torch.randn(b, 3, vocab, generator=g) * 3
        temperature = 0.2 + 2 * float(torch.rand((), generator=g))
        top_k = [None, 1, 5, vocab + 3][seed % 4]
        last = logits[:, -1] / temperature # the probabilities multinomial is given, as generate() makes them
        if top_k is not None:
            v, _ = torch.topk(last, min(top_k, vocab))
            last = last.masked_fill(last < v[:, -1:], -float('inf'))
        torch.manual_seed(seed)
        expected = torch.multinomial(F.softmax(last, dim=-1), 1)
        torch.manual_seed(seed)
        got = sample_next(logits, temperature, top_k)
        assert torch.equal(got, expected), seed
        draws += b
        differ_from_greedy += (got != logits[:, -1].argmax(-1, keepdim=True)).sum().item()
    assert draws > 500 and differ_from_greedy > draws // 4 # real draws: many are not the most likely token


def test_bf16_training_loss_tracks_fp32_within_0_02_over_200_steps():
    """Same init, same batches: autocast bf16 and fp32 loss curves, compared over windows of 20 steps."""
    torch.manual_seed(0)
    # learnable data: a fixed random walk over 24 tokens, so the loss falls well below ln(24)
    text = torch.cumsum(torch.randint(-1, 2, (20000,)), 0).remainder(24)
    starts = torch.randint(0, len(text) - 33, (200, 16))
    curves = {}
    for dtype in ('float32', 'bfloat16'):
        model = tiny(n_layer=2, n_embd=64, n_head=4, block_size=32, vocab_size=24, bias=False)
        model.set_attn_impl('math')
        opt = model.configure_optimizers(0.1, 3e-3, (0.9, 0.99), 'cpu')
        losses = []
        for step in range(200):
            batch = torch.stack([text[s:s + 33] for s in starts[step]])
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=dtype == 'bfloat16'):
                _, loss = model(batch[:, :-1], batch[:, 1:])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
        curves[dtype] = torch.tensor(losses).view(10, 20).mean(1)
    assert curves['float32'][-1] < curves['float32'][0] - 0.5 # it really learned (a walk's floor is ln 3 = 1.1)
    assert (curves['bfloat16'] - curves['float32']).abs().max() < 0.02, curves


def test_generate_rejects_bad_sampling_settings():
    model = tiny().eval()
    idx = torch.zeros(1, 1, dtype=torch.long)
    with pytest.raises(UserError, match='temperature'):
        model.generate(idx, 3, temperature=0)
    with pytest.raises(UserError, match='top_k'):
        model.generate(idx, 3, top_k=0)


def test_config_errors_are_one_clear_line():
    with pytest.raises(UserError, match='not divisible'):
        GPT(GPTConfig(n_embd=30, n_head=4))
    with pytest.raises(UserError, match='block_size=0'):
        GPT(GPTConfig(block_size=0))


def test_crop_block_size_keeps_the_first_positions():
    model = tiny(block_size=16)
    wpe = model.transformer.wpe.weight[:8].clone()
    model.crop_block_size(8)
    assert model.config.block_size == 8 and torch.equal(model.transformer.wpe.weight, wpe)
    with pytest.raises(UserError):
        model.crop_block_size(9)


def test_estimate_mfu_uses_the_peak_it_is_given():
    model = tiny()
    cfg = model.config
    flops = (6 * model.get_num_params() + 12 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * cfg.block_size) * cfg.block_size
    assert model.estimate_mfu(4, 0.5, peak_flops=1e12) == pytest.approx(flops * 4 / 0.5 / 1e12)


@pytest.mark.parametrize('native_bf16', [True, False])
def test_a_cpus_peak_for_bf16_is_its_fp32_rate_when_it_has_no_bf16_units(monkeypatch, native_bf16):
    """Emulated bf16 runs far below fp32 (0.9 vs 164 GFLOP/s measured on an AVX2 CPU): MFU is then against fp32's rate."""
    import device as device_py
    monkeypatch.setattr(device_py, 'cpu_supports_bf16', lambda: native_bf16)
    monkeypatch.setattr(device_py, '_MEASURED_PEAK', {})
    monkeypatch.setattr(device_py, 'measure_matmul_flops', lambda device, dtype: {'float32': 1e11, 'bfloat16': 4e11}[dtype])
    assert device_py.device_peak_flops('cpu', 'bfloat16') == (4e11 if native_bf16 else 1e11)
    assert device_py.device_peak_flops('cpu', 'float32') == 1e11
    assert device_py.device_peak_flops('cpu', 'bfloat16', override=5e12) == 5e12 # the user's peak_flops wins


def test_a_remeasured_peak_keeps_the_best_rate_so_a_noisy_moment_cannot_push_mfu_over_100_percent(monkeypatch):
    """A shared CPU's matmul rate swings (84 to 156 GFLOP/s seen minutes apart): bench measures before and after its run."""
    import device as device_py
    rates = iter([0.9e11, 1.5e11, 1.2e11])
    monkeypatch.setattr(device_py, '_MEASURED_PEAK', {})
    monkeypatch.setattr(device_py, 'measure_matmul_flops', lambda device, dtype: next(rates))
    assert device_py.device_peak_flops('cpu', 'float32') == 0.9e11
    assert device_py.device_peak_flops('cpu', 'float32') == 0.9e11 # cached: no new measurement
    assert device_py.device_peak_flops('cpu', 'float32', remeasure=True) == 1.5e11
    assert device_py.device_peak_flops('cpu', 'float32', remeasure=True) == 1.5e11 # a slower moment does not lower it


def test_measure_matmul_flops_gives_a_plausible_rate_and_leaves_the_global_rng_alone():
    """train.py measures the peak at its first MFU log line, mid-run: the dropout masks after it must not change."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    import device as device_py
    torch.manual_seed(0)
    rate = device_py.measure_matmul_flops('cpu', 'float32', n=256, iters=2, repeats=2)
    assert 1e8 < rate < 1e14
    assert torch.equal(torch.rand(3), expected)
