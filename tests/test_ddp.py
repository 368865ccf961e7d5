"""
Training on many processes under torchrun, on the CPU with gloo: DDP and FSDP give what one process gives on
the same global batch, their checkpoints move between them, and the options that save memory change nothing else.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY, one_line_error, run
from device import shard_model
from model import GPT, GPTConfig
from tokens import step_windows
from test_train import losses, train

pytestmark = pytest.mark.usefixtures('char_data')

# fp32 and dropout 0 (TINY), a global batch of 4 micro-batches, 5 optimizer steps;
# 3 eval batches, so that 2 ranks split them unevenly
STEPS = ['--gradient_accumulation_steps=4', '--eval_iters=3', '--max_iters=5', '--eval_interval=5']


def torchrun(out_dir, *args, nproc=2, check=True, script='train.py', omp_threads='1'):
    """train.py (or a script that runs it) under torchrun with nproc gloo ranks, OMP_NUM_THREADS=omp_threads."""
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}', script,
           '--dataset=shakespeare_char', f'--out_dir={out_dir}', '--log_interval=1', *TINY, *args]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS=omp_threads, PYTHONUNBUFFERED='1'))
    if check:
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p


def evals(stdout):
    """{(step, split): loss} from train.py's eval lines."""
    found = re.findall(r'^step (\d+): train loss ([\d.]+), val loss ([\d.]+)', stdout, re.M)
    return {(int(s), split): float(x) for s, t, v in found for split, x in (('train', t), ('val', v))}


def max_difference(a, b):
    """The largest difference between two checkpoints' weights and optimizer states, which must have the same keys."""
    assert set(a['model']) == set(b['model']) and set(a['optimizer']['state']) == set(b['optimizer']['state'])
    assert [g['params'] for g in a['optimizer']['param_groups']] == [g['params'] for g in b['optimizer']['param_groups']]
    diffs = [(a['model'][k] - b['model'][k]).abs().max().item() for k in a['model']]
    diffs += [(a['optimizer']['state'][i][n] - b['optimizer']['state'][i][n]).abs().max().item()
              for i in a['optimizer']['state'] for n in ('exp_avg', 'exp_avg_sq', 'step')]
    return max(diffs)


@pytest.fixture(scope='module')
def one_process(tmp_path_factory):
    """The reference: one process, 4 micro-steps per optimizer step. Returns (stdout, checkpoint at step 5)."""
    out = tmp_path_factory.mktemp('one_process')
    p = train(out, *STEPS)
    return p.stdout, torch.load(out / 'ckpt.pt', weights_only=True)


def test_two_ddp_ranks_give_the_losses_and_weights_of_one_process(one_process, tmp_path):
    """2 ranks x 2 micro-steps == 1 process x 4 micro-steps: logged losses, evals, weights and optimizer state."""
    ref_stdout, ref = one_process
    # OMP_NUM_THREADS=2 would give each rank as many threads as the machine has cores (2 here): cpu_threads=0
    # splits the CPUs among the ranks instead
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    p = torchrun(tmp_path, *STEPS, omp_threads=str(cpus))
    split = max(1, cpus // 2)
    assert f'2 process(es), {split} CPU thread(s) each' in p.stdout and p.stdout.count('iter 4: loss') == 1 # rank 0 logs
    assert losses(p.stdout) == pytest.approx(losses(ref_stdout), abs=1.5e-4) and len(losses(p.stdout)) == 5
    assert evals(p.stdout) == pytest.approx(evals(ref_stdout), abs=1.5e-4) # eval batches split over ranks, then averaged
    ckpt = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert ckpt['iter_num'] == 5 and max_difference(ckpt, ref) < 1e-6 # observed: 1.9e-9


@pytest.mark.skipif(not os.path.isdir('/proc/self/task'), reason="reads the process's threads from Linux's /proc")
def test_ddp_leaves_no_gloo_thread_running_when_train_py_ends(tmp_path):
    """
    destroy_process_group really ends the group, so none of its gloo threads is left for the interpreter's teardown
    (where they can abort a run that ended well: see the end of train.py). Each rank runs train.py, then counts them.
    """
    probe = tmp_path / 'probe.py'
    probe.write_text("import os, runpy, sys\n"
                     "sys.argv, sys.path[0] = ['train.py', *sys.argv[1:]], os.getcwd() # as python train.py would have them\n"
                     "runpy.run_path('train.py', run_name='__main__')\n"
                     "names = [open(f'/proc/self/task/{t}/comm').read() for t in os.listdir('/proc/self/task')]\n"
                     f"with open(os.path.join({str(tmp_path)!r}, 'gloo_threads_' + os.environ['RANK']), 'w') as f:\n"
                     "    f.write(str(sum('gloo' in name for name in names)))\n") # a file per rank: stdout interleaves
    torchrun(tmp_path, '--gradient_accumulation_steps=2', '--max_iters=1', '--eval_iters=1', script=str(probe))
    assert [(tmp_path / f'gloo_threads_{rank}').read_text() for rank in (0, 1)] == ['0', '0']


def test_fsdp_trains_like_one_process_and_its_checkpoints_resume_in_either(one_process, tmp_path):
    """
    Steps 0-2 under FSDP (2 ranks, with activation checkpointing), step 3 in one process resumed from
    FSDP's checkpoint, step 4 under FSDP resumed from that one's: the same run as one process straight through.
    """
    ref_stdout, ref = one_process
    ref_losses = losses(ref_stdout)
    first = torchrun(tmp_path, *STEPS, '--fsdp=True', '--grad_checkpointing=True', '--max_iters=3', '--eval_interval=3')
    ckpt = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    # the single-process format: nanoGPT loads the model strictly, parameters are indexed as optimizer.state_dict() does
    GPT(GPTConfig(**ckpt['model_args'])).load_state_dict(ckpt['model'], strict=True)
    assert set(ckpt['optimizer']['state']) == set(ref['optimizer']['state'])
    single = train(tmp_path, *STEPS, '--init_from=resume', '--max_iters=4', '--eval_interval=4')
    last = torchrun(tmp_path, *STEPS, '--fsdp=True', '--init_from=resume')
    resumed = {**losses(first.stdout), **losses(single.stdout), **losses(last.stdout)}
    assert resumed == pytest.approx(ref_losses, abs=1.5e-4) and len(resumed) == 5
    assert evals(last.stdout)[5, 'val'] == pytest.approx(evals(ref_stdout)[5, 'val'], abs=1.5e-4)
    ckpt = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert ckpt['iter_num'] == 5 and max_difference(ckpt, ref) < 1e-6 # observed: 1.9e-9


def test_fsdp_computes_in_bf16_and_keeps_fp32_shards(tmp_path):
    """
    shard_model's MixedPrecisionPolicy: during forward a block sees bf16 weights; between steps the shards stay fp32.
    In a fresh one-rank process: sharding keeps the process group alive until exit (see the end of train.py).
    """
    script = tmp_path / 'shard.py'
    script.write_text(f"""
import os, sys
sys.path[0] = os.getcwd()
import torch
from device import shard_model
from model import GPT, GPTConfig
torch.distributed.init_process_group('gloo', init_method='file://{tmp_path}/store', rank=0, world_size=1)
model = shard_model(GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=65, dropout=0.0)), 'bfloat16')
seen = []
model.transformer.h[1].mlp.register_forward_hook(lambda m, i, o: seen.append(m.c_fc.weight.dtype))
_, loss = model(torch.randint(0, 65, (2, 16)), torch.randint(0, 65, (2, 16)))
loss.backward()
print('block weights in forward:', seen, '| loss:', loss.dtype)
print('shards:', {{p.dtype for p in model.parameters()}}, '| gradients:', {{p.grad.dtype for p in model.parameters()}})
torch.distributed.destroy_process_group()
sys.stdout.flush()
os._exit(0)
""")
    out = run(str(script)).stdout
    assert 'block weights in forward: [torch.bfloat16] | loss: torch.float32' in out # the loss is computed in fp32
    assert 'shards: {torch.float32} | gradients: {torch.float32}' in out


def test_fsdp_in_bf16_trains_close_to_fp32(one_process, tmp_path):
    """2 FSDP ranks in bf16 (bf16 all-gathers over gloo): the losses stay within bf16's reach of one fp32 process."""
    ref_losses = losses(one_process[0])
    p = torchrun(tmp_path, *STEPS, '--fsdp=True', '--dtype=bfloat16', '--max_iters=3', '--eval_interval=3')
    assert 'dtype bfloat16' in p.stdout and len(losses(p.stdout)) == 3
    assert losses(p.stdout) == pytest.approx({k: ref_losses[k] for k in range(3)}, abs=0.02)


def test_a_steps_windows_are_distinct_so_ranks_never_share_one_and_reproducible_from_the_seed():
    """train.py's get_batch gives rank r, micro-step m slice r * micro_steps + m of one step's windows."""
    starts = step_windows([1337, 0, 0, 7], 64, 1000) # 64 windows, few positions: sampled with replacement, repeats would be likely
    assert len(set(starts.tolist())) == 64 and starts.min() >= 0 and starts.max() < 1000
    for world_size in (2, 4): # every rank's slices together are exactly one process's batch, none shared
        slices = [set(starts[r * 64 // world_size:(r + 1) * 64 // world_size].tolist()) for r in range(world_size)]
        assert set().union(*slices) == set(starts.tolist()) and sum(map(len, slices)) == 64
    assert np.array_equal(step_windows([1337, 0, 0, 7], 64, 1000), starts) # the same seed and step: the same windows
    assert not np.array_equal(step_windows([1338, 0, 0, 7], 64, 1000), starts) # another seed
    assert not np.array_equal(step_windows([1337, 0, 0, 8], 64, 1000), starts) # the next step
    assert len(step_windows([1337, 0, 0, 7], 8, 3)) == 8 # more windows than positions: repeats are unavoidable


def test_grad_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=3, n_head=2, n_embd=32, block_size=16, vocab_size=65, dropout=0.0, bias=True))
    x, y = torch.randint(0, 65, (4, 16)), torch.randint(0, 65, (4, 16))
    results = []
    for checkpointing in (False, True):
        model.zero_grad()
        model.grad_checkpointing = checkpointing
        _, loss = model(x, y)
        loss.backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss_plain, grads_plain), (loss_ckpt, grads_ckpt) = results
    assert loss_ckpt == loss_plain
    for n in grads_plain:
        torch.testing.assert_close(grads_ckpt[n], grads_plain[n], rtol=0, atol=1e-7)


def test_bad_multi_process_settings_give_one_line_errors(tmp_path):
    """Checked in each rank before it joins the process group (here one rank, as torchrun would start it)."""
    rank0_of_2 = {'RANK': '0', 'LOCAL_RANK': '0', 'WORLD_SIZE': '2'}
    def rank0(*args):
        return one_line_error(run('train.py', '--dataset=shakespeare_char', f'--out_dir={tmp_path}', *TINY, *args,
                                  check=False, env_extra=rank0_of_2))
    assert 'not divisible by the world size 2' in rank0('--gradient_accumulation_steps=3')
    assert "dtype='float16'" in rank0('--gradient_accumulation_steps=2', '--fsdp=True', '--dtype=float16')
    if not torch.cuda.is_available():
        assert 'needs CUDA' in rank0('--gradient_accumulation_steps=2', '--backend=nccl')
    assert 'torchrun' in one_line_error(train(tmp_path, '--fsdp=True', check=False))


def test_a_rank_that_fails_ends_the_whole_run(tmp_path):
    """Rank 0 stops at a bad out_dir after joining the group: rank 1 must not wait for it forever."""
    (tmp_path / 'a_file').write_text('')
    p = torchrun(tmp_path / 'a_file' / 'out', '--gradient_accumulation_steps=2', '--max_iters=2', check=False)
    assert p.returncode != 0 and 'error: out_dir=' in p.stderr
