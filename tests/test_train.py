"""train.py and sample.py end to end, run as a user runs them: subprocesses on the real Tiny Shakespeare."""
import os
import re
import subprocess

import numpy as np
import pytest
import torch

from conftest import TINY, one_line_error, run
from checkpoint import save_checkpoint
from model import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures('char_data')

def train(out_dir, *args, check=True, env_extra=None):
    return run('train.py', '--dataset=shakespeare_char', f'--out_dir={out_dir}', '--eval_iters=2',
               '--log_interval=1', *TINY, *args, check=check, env_extra=env_extra)


def losses(stdout):
    """{iter: loss} from train.py's log lines."""
    return {int(i): float(l) for i, l in re.findall(r'^iter (\d+): loss ([\d.]+)', stdout, re.M)}


def test_checkpoint_has_nanogpts_keys_and_loads_with_weights_only(tmp_path):
    train(tmp_path, '--max_iters=2', '--eval_interval=2')
    ckpt = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert {'model', 'optimizer', 'model_args', 'iter_num', 'best_val_loss', 'config'} <= set(ckpt)
    assert set(ckpt['model_args']) == {'n_layer', 'n_head', 'n_embd', 'block_size', 'bias', 'vocab_size', 'dropout'}
    assert ckpt['iter_num'] == 2 and ckpt['model_args']['vocab_size'] == 65
    assert ckpt['config']['dataset'] == 'shakespeare_char' and ckpt['config']['batch_size'] == 4
    # nanoGPT rebuilds the model as GPT(GPTConfig(**model_args)) and loads the state dict strictly
    GPT(GPTConfig(**ckpt['model_args'])).load_state_dict(ckpt['model'], strict=True)


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    """4 steps, stop, resume for 2 more == 6 steps straight: same losses, same weights, same optimizer state."""
    straight = train(tmp_path / 'a', '--max_iters=6', '--eval_interval=2')
    train(tmp_path / 'b', '--max_iters=4', '--eval_interval=2')
    stopped = torch.load(tmp_path / 'b' / 'ckpt.pt', weights_only=True)
    assert stopped['iter_num'] == 4
    resumed = train(tmp_path / 'b', '--max_iters=6', '--eval_interval=2', '--init_from=resume')
    assert 'Resuming training' in resumed.stdout
    assert losses(resumed.stdout) == {k: v for k, v in losses(straight.stdout).items() if k >= 4}
    a = torch.load(tmp_path / 'a' / 'ckpt.pt', weights_only=True)
    b = torch.load(tmp_path / 'b' / 'ckpt.pt', weights_only=True)
    assert b['iter_num'] == 6
    assert_same_training_state(a, b)


def assert_same_training_state(a, b):
    """Two checkpoints at the same iter with bitwise equal weights and optimizer state."""
    assert a['iter_num'] == b['iter_num']
    for k in a['model']:
        assert torch.equal(a['model'][k], b['model'][k]), k
    for i, state in a['optimizer']['state'].items():
        for name in ('exp_avg', 'exp_avg_sq', 'step'):
            assert torch.equal(state[name], b['optimizer']['state'][i][name])


def test_gradient_accumulation_steps_see_the_same_data_as_one_big_batch(tmp_path):
    """2 micro-steps of batch 4 and 1 step of batch 8 draw the same windows: same loss, nearly the same weights."""
    split = train(tmp_path / 'a', '--max_iters=3', '--eval_interval=3', '--gradient_accumulation_steps=2')
    whole = train(tmp_path / 'b', '--max_iters=3', '--eval_interval=3', '--batch_size=8')
    for (i, x), (j, y) in zip(losses(split.stdout).items(), losses(whole.stdout).items()):
        assert i == j and x == pytest.approx(y, abs=2e-4)
    a = torch.load(tmp_path / 'a' / 'ckpt.pt', weights_only=True)['model']
    b = torch.load(tmp_path / 'b' / 'ckpt.pt', weights_only=True)['model']
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_bf16_autocast_trains_on_the_cpu(tmp_path):
    """Not only runs: in bf16 the loss is finite and falls (a learning rate high enough to show it in 12 steps)."""
    p = train(tmp_path, '--max_iters=12', '--eval_interval=12', '--dtype=bfloat16', '--learning_rate=1e-2',
              '--warmup_iters=0', '--decay_lr=False')
    assert 'dtype bfloat16' in p.stdout
    loss = list(losses(p.stdout).values())
    assert len(loss) == 12 and np.isfinite(loss).all(), loss
    assert np.mean(loss[-3:]) < loss[0] - 0.5, loss # from ln(65) = 4.17
    val = [float(v) for v in re.findall(r'^step \d+: .* val loss ([\d.]+)', p.stdout, re.M)]
    assert len(val) == 2 and val[1] < val[0] - 0.3, val # the held-out loss falls too


def test_compile_trains_on_the_cpu_and_compiles_only_the_training_step(tmp_path):
    # one layer: a cold inductor cache (as in CI) compiles every kernel with the C++ compiler
    p = train(tmp_path, '--max_iters=3', '--eval_interval=3', '--compile=True', '--n_layer=1',
              env_extra={'TORCH_LOGS': 'recompiles'}) # dynamo logs each graph it compiles again for new guards
    assert 'compiling the model' in p.stdout and len(losses(p.stdout)) == 3
    assert all(np.isfinite(list(losses(p.stdout).values())))
    # the evals (no grad, eval mode) ran the uncompiled model: compiling a second graph would cost more than they take
    assert 'Recompiling function' not in p.stderr, p.stderr[-2000:]


def test_compile_without_a_cpp_compiler_says_so_and_trains_uncompiled(tmp_path):
    """torch.compile needs a C++ compiler for CPU kernels; a machine without one gets a note, not a crash."""
    p = train(tmp_path, '--max_iters=3', '--eval_interval=3', '--compile=True',
              env_extra={'CXX': str(tmp_path / 'no-such-compiler')}) # inductor looks for $CXX
    assert 'compile=True needs a C++ compiler on the CPU' in p.stdout and 'compiling the model' not in p.stdout
    assert len(losses(p.stdout)) == 3 and (tmp_path / 'ckpt.pt').exists()


def test_log_lines_show_loss_time_tokens_per_second_and_mfu(tmp_path):
    p = train(tmp_path, '--max_iters=7', '--eval_interval=7', '--full_eval=True', '--cpu_threads=1')
    assert '1 process(es), 1 CPU thread(s) each' in p.stdout # cpu_threads > 0 sets the intra-op threads
    line = re.findall(r'^iter 6: .*$', p.stdout, re.M)[0]
    assert re.match(r'iter 6: loss [\d.]+, time [\d.]+ms, tok/s [\d,]+, mfu [\d.]+%', line)
    assert re.search(r'^full val loss [\d.]+ \(every block of val.bin', p.stdout, re.M)


def test_a_run_that_never_improves_says_it_wrote_no_checkpoint(tmp_path):
    """always_save_checkpoint=False saves improvements only: a diverging run ends with a line saying none was written."""
    p = train(tmp_path / 'out', '--max_iters=6', '--eval_interval=2', '--always_save_checkpoint=False',
              '--learning_rate=1.0', '--warmup_iters=0') # far too high: every val loss is above step 0's
    assert 'no checkpoint written: the val loss never went below' in p.stdout
    # and the out_dir this run created keeps only its run log (plot.py can draw the divergence)
    assert os.listdir(tmp_path / 'out') == ['log.jsonl']


def printed_samples(stdout, prompt):
    """The samples sample.py printed: each from its prompt to the line of dashes that ends it."""
    chunks = stdout.split('\n---------------\n')
    assert chunks[-1] == '', stdout # the output ends with a sample's closing line
    return [chunk[chunk.index(prompt):] for chunk in chunks[:-1]] # the first is after the 'Loading meta' line


def test_sample_runs_end_to_end_from_a_checkpoint(tmp_path):
    train(tmp_path, '--max_iters=2', '--eval_interval=2')
    p = run('sample.py', f'--out_dir={tmp_path}', '--start=ROMEO:', '--num_samples=2', '--max_new_tokens=20')
    samples = printed_samples(p.stdout, 'ROMEO:')
    # a char-level model: each sample is the prompt and then 20 new characters, one per token
    assert len(samples) == 2 and [len(s) for s in samples] == [len('ROMEO:') + 20] * 2, samples
    assert samples[0] != samples[1] # two draws, not one printed twice
    prompt = tmp_path / 'prompt.txt'
    prompt.write_text('JULIET:')
    p = run('sample.py', f'--out_dir={tmp_path}', f'--start=FILE:{prompt}', '--num_samples=1', '--max_new_tokens=5')
    assert [len(s) for s in printed_samples(p.stdout, 'JULIET:')] == [len('JULIET:') + 5]


def test_sample_loads_a_nanogpt_checkpoint(tmp_path):
    """nanoGPT's compiled runs save '_orig_mod.' names, old torch adds attn.bias buffers, best_val_loss is a tensor."""
    cfg = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, bias=False, vocab_size=65, dropout=0.0)
    model = GPT(GPTConfig(**cfg))
    state = {'_orig_mod.' + k: v for k, v in model.state_dict().items()}
    state['_orig_mod.transformer.h.0.attn.bias'] = torch.tril(torch.ones(32, 32)).view(1, 1, 32, 32)
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), 'cpu', fused=False)
    torch.save({'model': state, 'optimizer': opt.state_dict(), 'model_args': cfg, 'iter_num': 10,
                'best_val_loss': torch.tensor(2.5), 'config': {'dataset': 'shakespeare_char'}}, tmp_path / 'ckpt.pt')
    p = run('sample.py', f'--out_dir={tmp_path}', '--num_samples=1', '--max_new_tokens=10')
    assert 'Loading meta from data/shakespeare_char/meta.json' in p.stdout # prepare.py writes it beside meta.pkl
    resumed = train(tmp_path, '--init_from=resume', '--max_iters=12', '--eval_interval=12', '--bias=False')
    assert 'iter 11:' in resumed.stdout


def test_an_interrupted_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = str(tmp_path / 'ckpt.pt')
    save_checkpoint({'model': {'w': torch.ones(3)}}, path)
    def crash(obj, f):
        with open(f, 'wb') as half:
            half.write(b'half a checkpoint')
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, 'save', crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({'model': {'w': torch.zeros(3)}}, path)
    assert os.listdir(tmp_path) == ['ckpt.pt']
    assert torch.equal(torch.load(path, weights_only=True)['model']['w'], torch.ones(3))


def test_wandb_logging_works_offline(tmp_path):
    p = run('train.py', '--dataset=shakespeare_char', f'--out_dir={tmp_path}', '--eval_iters=2', *TINY,
            '--max_iters=2', '--eval_interval=2', '--wandb_log=True', '--wandb_project=test', cwd=tmp_path,
            env_extra={'WANDB_MODE': 'offline', 'WANDB_DIR': str(tmp_path), 'WANDB_SILENT': 'true'})
    assert list((tmp_path / 'wandb').glob('offline-run-*')), p.stdout


def test_wandb_without_a_login_is_a_one_line_error(tmp_path):
    env = {'WANDB_MODE': 'online', 'WANDB_API_KEY': '', 'HOME': str(tmp_path), 'WANDB_DIR': str(tmp_path)} # no key anywhere
    p = run('train.py', '--dataset=shakespeare_char', f'--out_dir={tmp_path}', '--eval_iters=1', *TINY, '--max_iters=1',
            '--wandb_log=True', check=False, env_extra=env, stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert 'wandb login' in one_line_error(p) and 'WANDB_MODE=offline' in one_line_error(p)


def test_a_time_budget_ends_the_run_and_resume_counts_the_time_already_spent(tmp_path):
    p = train(tmp_path, '--max_seconds=3', '--max_iters=100000', '--eval_interval=100000', '--log_interval=1000')
    ckpt = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert 3.0 <= ckpt['train_seconds'] < 6.0 and 0 < ckpt['iter_num'] < 100000
    assert f"step {ckpt['iter_num']}:" in p.stdout # the final eval ran at the last step
    resumed = train(tmp_path, '--init_from=resume', '--max_seconds=4', '--max_iters=100000', '--eval_interval=100000',
                    '--log_interval=1000', '--always_save_checkpoint=True')
    again = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert 4.0 <= again['train_seconds'] < 6.0 and again['iter_num'] > ckpt['iter_num'] # one more second of training
    spent = train(tmp_path, '--init_from=resume', '--max_seconds=4', '--max_iters=100000', '--eval_interval=100000')
    assert 'already trained its max_seconds=4' in spent.stdout and 'raise --max_seconds' in spent.stdout
    assert torch.load(tmp_path / 'ckpt.pt', weights_only=True)['iter_num'] == again['iter_num']


def test_eval_only_writes_nothing_and_a_new_run_warns_before_it_replaces_a_checkpoint(tmp_path):
    train(tmp_path, '--max_iters=2', '--eval_interval=2')
    before = (tmp_path / 'ckpt.pt').read_bytes()
    p = train(tmp_path, '--init_from=resume', '--eval_only=True', '--always_save_checkpoint=True', '--block_size=16')
    assert 'step 2: train loss' in p.stdout and 'saving' not in p.stdout
    assert (tmp_path / 'ckpt.pt').read_bytes() == before # not even with a cropped block_size to write
    p = train(tmp_path, '--eval_only=True') # a new run from scratch in the same out_dir: told before anything is replaced
    assert "holds an earlier run's ckpt.pt, which this new run replaces" in p.stdout


def test_resume_with_a_smaller_block_size_crops_the_position_embeddings_and_their_adamw_moments(tmp_path):
    first = train(tmp_path, '--max_iters=2', '--eval_interval=2') # block_size 32
    assert 'warning' not in first.stdout
    train(tmp_path, '--init_from=resume', '--block_size=16', '--max_iters=3', '--eval_interval=3')
    ckpt = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert ckpt['model_args']['block_size'] == 16 and ckpt['model']['transformer.wpe.weight'].shape == (16, 32)
    model = GPT(GPTConfig(**ckpt['model_args']))
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), 'cpu')
    optimizer.load_state_dict(ckpt['optimizer'])
    for group in optimizer.param_groups: # every moment has its parameter's shape, as a strict loader needs
        for p in group['params']:
            assert optimizer.state[p]['exp_avg'].shape == optimizer.state[p]['exp_avg_sq'].shape == p.shape
