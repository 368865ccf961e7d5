"""Optimizers and learning-rate schedules: Muon for the weight matrices beside AdamW; cosine, WSD and constant.

GPT.configure_optimizers (model.py) decides which parameters go to which optimizer; the classes here do the stepping.
"""

import math

import torch

MATCH_RMS_ADAMW = 0.2 # match_rms_adamw: the orthogonal update (RMS 1/sqrt(max dim)) scaled to AdamW's typical RMS, 0.2

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
    On the CPU config it reaches a clearly lower loss in the same number of steps (docs/benchmarks.md).
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

class BatchedMuon(torch.optim.Muon):
    """
    torch.optim.Muon's update (same coefficients, momentum, weight decay, adjust_lr_fn and state: one momentum_buffer
    per matrix, so checkpoints load either way), computed for all matrices of one shape at once. torch orthogonalizes
    one matrix at a time: 15 small matmuls each, 240 for a 4-layer model, and on a CPU their dispatch cost made Muon a
    sixth of the CPU config's step. Here each shape (a matrix and its transpose count as one) takes 15 batched matmuls.
    ns_dtype is the dtype of the Newton-Schulz iteration: bf16 as torch's, or fp32 where bf16 is only emulated
    (a CPU with AVX2 only runs bf16 matmuls at 0.9 against 130-160 GFLOP/s in fp32).
    """

    def __init__(self, params, ns_dtype=torch.bfloat16, **kwargs):
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        loss = _run_closure(closure)
        for group in self.param_groups:
            params = [p for p in group['params'] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if 'momentum_buffer' not in self.state[p]:
                    self.state[p]['momentum_buffer'] = torch.zeros_like(p.grad)
            grads = [p.grad for p in params]
            bufs = [self.state[p]['momentum_buffer'] for p in params]
            torch._foreach_lerp_(bufs, grads, 1 - group['momentum'])
            updates = [g.lerp(b, group['momentum']) for g, b in zip(grads, bufs)] if group['nesterov'] else bufs
            # orthogonalize on the wide side, so that the Gram matrix XX^T is the smaller one
            tall = [u.size(0) > u.size(1) for u in updates]
            wide = [u.T if t else u for u, t in zip(updates, tall)]
            by_shape = {}
            for i, w in enumerate(wide):
                by_shape.setdefault(tuple(w.shape), []).append(i)
            torch._foreach_mul_(params, 1 - group['lr'] * group['weight_decay'])
            for idx in by_shape.values():
                x = torch.stack([wide[i] for i in idx]).to(self.ns_dtype)
                x = orthogonalize(x, group['ns_coefficients'], group['ns_steps'], group['eps']).to(params[idx[0]].dtype)
                steps = [xi.T if tall[i] else xi for i, xi in zip(idx, x.unbind())]
                rates = [-group['lr'] * lr_ratio(group['adjust_lr_fn'], params[i].shape) for i in idx]
                torch._foreach_add_([params[i] for i in idx], torch._foreach_mul(steps, rates))
        return loss


def lr_ratio(adjust_lr_fn, shape):
    """torch's Muon's scale of the orthogonal update for a (rows, cols) matrix, by its adjust_lr_fn."""
    rows, cols = shape
    if adjust_lr_fn == 'match_rms_adamw': # the update's RMS, 1/sqrt(max dim), brought to AdamW's typical RMS
        return MATCH_RMS_ADAMW * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols)) # 'original' (and None): Keller Jordan's scale


def orthogonalize(x, coefficients, steps, eps):
    """Newton-Schulz on a batch of wide matrices (n, rows <= cols): X <- aX + (bG + cG^2)X with G = XX^T."""
    a, b, c = coefficients
    x = x / x.flatten(1).norm(dim=1).clamp(min=eps)[:, None, None] # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x


def cosine_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr):
    """nanoGPT's schedule: linear warmup for warmup_iters, cosine decay to min_lr at lr_decay_iters, then flat."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it >= lr_decay_iters: # where the cosine ends anyway; also no division by zero when lr_decay_iters == warmup_iters
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio)) # goes from 1 to 0
    return min_lr + coeff * (learning_rate - min_lr)


LR_SCHEDULES = ('cosine', 'wsd', 'constant')


def wsd_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr, decay_frac):
    """
    Warmup, stable, decay: linear warmup, then learning_rate held flat, then a straight line down to min_lr over the
    last decay_frac of the steps after warmup, ending at lr_decay_iters; flat at min_lr after that.
    """
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it >= lr_decay_iters:
        return min_lr
    decay_start = lr_decay_iters - decay_frac * (lr_decay_iters - warmup_iters)
    if it < decay_start:
        return learning_rate
    return learning_rate + (min_lr - learning_rate) * (it - decay_start) / (lr_decay_iters - decay_start)


def lr_at(it, seconds, learning_rate, warmup_iters, lr_decay_iters, min_lr, max_seconds=0.0, decay=True,
          schedule='cosine', decay_frac=0.2):
    """
    The learning rate of step it under schedule: 'cosine' (cosine_lr, nanoGPT's), 'wsd' (wsd_lr) or 'constant'
    (the same warmup, then learning_rate throughout; decay=False is that too). With a time budget (max_seconds > 0)
    a schedule's position after warmup is the share of the budget spent, not the step, so its decay is placed in time.
    """
    if not decay:
        return learning_rate
    if schedule == 'constant':
        return learning_rate * min(1.0, (it + 1) / (warmup_iters + 1))
    if max_seconds > 0 and it >= warmup_iters:
        it = warmup_iters + (lr_decay_iters - warmup_iters) * min(seconds / max_seconds, 1.0)
    if schedule == 'wsd':
        return wsd_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr, decay_frac)
    return cosine_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr)
