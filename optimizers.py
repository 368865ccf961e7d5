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
                p.add_(x.T if tall else x, alpha=-group['lr'] * MATCH_RMS_ADAMW * math.sqrt(max(p.shape)))
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
