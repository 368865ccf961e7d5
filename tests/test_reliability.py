"""
Never lose a run: bit-exact resume (dropout included), best and keep_last checkpoints, SIGKILL at any
moment, graceful stop on SIGINT/SIGTERM, the loss-spike and NaN guard, and safe loading.
Every run is a real train.py subprocess on Tiny Shakespeare with a tiny model.
"""
import argparse
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, TINY, run
from checkpoint import LossGuard, load_checkpoint, prepare_out_dir, save_run_checkpoint
from common import TMP_MARK, temp_path
from model import GPT
from test_train import assert_same_training_state, losses, train

pytestmark = pytest.mark.usefixtures('char_data')

# later in the argument list than TINY's dropout=0.0, so it wins; a given peak_flops skips the ~1 s matmul benchmark
DROPOUT_RUN = ['--dropout=0.1', '--peak_flops=1e12']


def ckpt(path):
    return torch.load(path, weights_only=True)


def test_resume_with_dropout_is_bit_exact_and_can_extend_the_run(tmp_path):
    """
    A trains 8 steps; B trains 4, stops, and is resumed with max_iters=8: the same 8 losses (the guard's window holds
    them as exact floats), the same weights and optimizer state, bit for bit. Without the saved RNG state the
    dropout masks differ, and so do the losses: the state is what makes the resume exact.
    """
    common = ['--eval_interval=4', *DROPOUT_RUN]
    straight = train(tmp_path / 'a', '--max_iters=8', *common)
    train(tmp_path / 'b', '--max_iters=4', *common)
    os.makedirs(tmp_path / 'no_rng')
    stopped = ckpt(tmp_path / 'b' / 'ckpt.pt')
    assert stopped['iter_num'] == 4 and {'torch', 'numpy', 'python'} <= set(stopped['rng'])
    del stopped['rng']
    torch.save(stopped, tmp_path / 'no_rng' / 'ckpt.pt')

    resumed = train(tmp_path / 'b', '--max_iters=8', '--init_from=resume', *common)
    a, b = ckpt(tmp_path / 'a' / 'ckpt.pt'), ckpt(tmp_path / 'b' / 'ckpt.pt')
    assert len(a['guard']['recent']) == 8 and a['guard']['recent'] == b['guard']['recent']
    assert_same_training_state(a, b)
    assert losses(resumed.stdout) == {k: v for k, v in losses(straight.stdout).items() if k >= 4}

    train(tmp_path / 'no_rng', '--max_iters=8', '--init_from=resume', *common)
    assert ckpt(tmp_path / 'no_rng' / 'ckpt.pt')['guard']['recent'] != a['guard']['recent']


def test_best_checkpoint_survives_worse_evals_and_keep_last_prunes_the_history(tmp_path):
    """ckpt.pt is the latest (always_save_checkpoint), best.pt the best eval, ckpt_<iter>.pt the last keep_last saves."""
    first = train(tmp_path, '--max_iters=4', '--eval_interval=2', '--keep_last=2')
    # a learning rate far too high: the later evals get worse, and best.pt must not follow them
    p = train(tmp_path, '--init_from=resume', '--max_iters=10', '--eval_interval=2', '--keep_last=2',
              '--learning_rate=0.5', '--decay_lr=False', '--guard=False')
    vals = {int(i): float(v) for i, v in re.findall(r'^step (\d+): .* val loss ([\d.]+)', p.stdout, re.M)}
    assert max(vals.values()) > min(vals.values()) # some eval was worse than an earlier one
    files = sorted(os.listdir(tmp_path))
    assert files == ['best.pt', 'ckpt.pt', 'ckpt_00000008.pt', 'ckpt_00000010.pt', 'log.jsonl'] # and the run log
    latest, best = ckpt(tmp_path / 'ckpt.pt'), ckpt(tmp_path / 'best.pt')
    assert latest['iter_num'] == 10
    vals.update({int(i): float(v) for i, v in re.findall(r'^step (\d+): .* val loss ([\d.]+)', first.stdout, re.M)})
    assert best['iter_num'] == min((v, i) for i, v in vals.items() if i > 0)[1]
    assert_same_training_state(ckpt(tmp_path / 'ckpt_00000010.pt'), latest)


def test_keep_last_after_a_rollback_keeps_the_new_saves_and_prunes_the_abandoned_ones(tmp_path):
    """The README's rollback, cp ckpt_<iter>.pt ckpt.pt and resume: the resumed run's saves are the newest history."""
    for it in (5, 10, 15): # the run the user went back from
        save_run_checkpoint({'iter_num': it}, str(tmp_path), keep_last=3)
    history = lambda: sorted(n for n in os.listdir(tmp_path) if n.startswith('ckpt_'))
    assert history() == ['ckpt_00000005.pt', 'ckpt_00000010.pt', 'ckpt_00000015.pt']
    for it in (6, 8): # resumed from iter 5
        save_run_checkpoint({'iter_num': it}, str(tmp_path), keep_last=3)
    assert history() == ['ckpt_00000005.pt', 'ckpt_00000006.pt', 'ckpt_00000008.pt']


def wait_for(condition, timeout=60, what='the condition', poll=0.005):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def test_sigkill_at_random_moments_never_loses_the_run(tmp_path):
    """
    12 trials, each resuming the run that the previous trial killed with SIGKILL. A quarter die at a random
    moment of their life (importing, loading, training or saving), a quarter at a random moment after their
    first training step, and half are caught in the middle of a save, after 0 to 2 saves that complete (frozen
    with SIGSTOP while the save's temp file exists, then killed). After every kill a loadable ckpt.pt remains and
    never goes backwards; the next trial resumes from it; a last resume runs to the end and cleans up.
    """
    out = tmp_path / 'out'
    args = [sys.executable, os.path.join(ROOT, 'train.py'), '--dataset=shakespeare_char', f'--out_dir={out}',
            *TINY, *DROPOUT_RUN, '--eval_interval=1', '--eval_iters=1', '--log_interval=1', '--keep_last=2']
    subprocess.run(args + ['--max_iters=2'], check=True, capture_output=True) # a first checkpoint to resume from
    rng = random.Random(1234)
    last_iter, mid_save, resumed = 2, 0, 0
    trials = 12 # a multiple of 4: each kind of kill below gets its share
    for trial in range(trials):
        log = tmp_path / f'trial{trial}.log'
        with open(log, 'w') as f:
            p = subprocess.Popen(args + ['--max_iters=100000', '--init_from=resume'], stdout=f, stderr=subprocess.STDOUT,
                                 env=dict(os.environ, PYTHONUNBUFFERED='1'))
        try:
            if trial % 4 == 0: # any moment of the process's life
                time.sleep(rng.uniform(0.2, 2.5))
            elif trial % 4 == 2: # any moment once it trains
                wait_for(lambda: p.poll() is not None or ': loss ' in log.read_text(), what='a training step')
                time.sleep(rng.uniform(0.0, 0.3))
            else: # in the middle of a save
                saves = rng.randint(1, 3) # the kill hits this save; the ones before it complete
                wait_for(lambda: p.poll() is not None or log.read_text().count('\nsaved ') >= saves - 1, what='saves')
                while True:
                    wait_for(lambda: p.poll() is not None or any('.tmp.' in n for n in os.listdir(out)), what='a save',
                             poll=0.0002) # a save of this tiny model lasts a few milliseconds
                    assert p.poll() is None, log.read_text()
                    p.send_signal(signal.SIGSTOP)
                    if any('.tmp.' in n for n in os.listdir(out)): # still saving: kill it now
                        mid_save += 1
                        break
                    p.send_signal(signal.SIGCONT) # the save had just finished: catch the next one
            p.kill()
        finally:
            p.kill()
            p.wait()
        text = log.read_text()
        assert 'Traceback' not in text and 'error' not in text, text
        resumed += 'loaded the checkpoint of iter' in text
        state = load_checkpoint(str(out / 'ckpt.pt')) # what a resume reads: it must load
        GPT.from_checkpoint(str(out / 'ckpt.pt'))
        assert state['iter_num'] >= last_iter
        last_iter = state['iter_num']
        for name in os.listdir(out):
            if name.endswith('.pt'):
                load_checkpoint(str(out / name))
    print(f"SIGKILL trials: {trials}, killed mid-save: {mid_save}, resumed and trained before the kill: {resumed}, "
          f"each left a loadable checkpoint (iter {last_iter} at the end)")
    # every mid-save kill caught its save; every trial but those killed at a random moment resumed and trained
    assert mid_save == trials // 2 and resumed >= trials * 3 // 4 and last_iter > 2
    final = subprocess.run(args + [f'--max_iters={last_iter + 3}', '--init_from=resume'], capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert f'iter {last_iter + 2}: loss' in final.stdout and 'an unfinished save of a run that was killed' in final.stdout
    assert not [n for n in os.listdir(out) if '.tmp.' in n]
    assert ckpt(out / 'ckpt.pt')['iter_num'] == last_iter + 3


def start_training(out_dir, log, *extra):
    with open(log, 'w') as f:
        return subprocess.Popen([sys.executable, os.path.join(ROOT, 'train.py'), '--dataset=shakespeare_char',
                                 f'--out_dir={out_dir}', '--eval_iters=2', '--log_interval=1', *TINY, *DROPOUT_RUN, *extra],
                                cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED='1'))


def test_sigterm_finishes_the_step_saves_and_prints_the_exact_resume_command(tmp_path):
    """Preempted mid-run, then resumed with the printed command: bit-exact with the run that was never stopped."""
    common = ['--max_iters=60', '--eval_interval=60']
    p = start_training(tmp_path / 'b', tmp_path / 'b.log', *common)
    wait_for(lambda: 'iter 3: loss' in (tmp_path / 'b.log').read_text(), what='training to start')
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 0
    text = (tmp_path / 'b.log').read_text()
    stopped_at = ckpt(tmp_path / 'b' / 'ckpt.pt')['iter_num']
    assert 3 < stopped_at < 60 and f'iter {stopped_at - 1}: loss' in text and f'iter {stopped_at}: loss' not in text
    line = text.strip().splitlines()[-1]
    assert line.startswith(f'stopped on SIGTERM at iter {stopped_at}; resume with: python ')
    command = shlex.split(line.split('resume with: ')[1])
    assert command[-1] == '--init_from=resume'
    resumed = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    train(tmp_path / 'a', *DROPOUT_RUN, *common)
    assert_same_training_state(ckpt(tmp_path / 'a' / 'ckpt.pt'), ckpt(tmp_path / 'b' / 'ckpt.pt'))


def test_a_second_signal_exits_at_once(tmp_path):
    p = start_training(tmp_path, tmp_path / 'log', '--max_iters=100000', '--eval_interval=100000')
    wait_for(lambda: 'iter 3: loss' in (tmp_path / 'log').read_text(), what='training to start')
    p.send_signal(signal.SIGINT)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 128 + signal.SIGTERM # exits with the second signal's code, like a process it killed
    text = (tmp_path / 'log').read_text()
    assert 'SIGINT: stopping after this step' in text and 'resume with' not in text and 'Traceback' not in text


# a config file (plain Python, run by configurator.py) that makes the gradients NaN in chosen training steps:
# it counts the training forwards of the GPT and poisons their loss's gradient; the loss itself stays finite
NAN_GRADIENTS = """
import torch
_BAD_STEPS = {2, 6, 7, 8}
_steps = [0]
def _poison(module, args, output):
    if type(module).__name__ == 'GPT' and module.training:
        if _steps[0] in _BAD_STEPS:
            output[1].register_hook(lambda grad: grad * float('nan'))
        _steps[0] += 1
torch.nn.modules.module.register_module_forward_hook(_poison)
"""


def test_nan_gradients_are_skipped_and_a_bad_streak_rolls_back_with_a_lower_lr(tmp_path):
    config = tmp_path / 'nan_gradients.py'
    config.write_text(NAN_GRADIENTS)
    p = train(tmp_path, str(config), '--max_iters=10', '--eval_interval=4', '--guard_max_bad=3', '--guard_lr_factor=0.5')
    assert 'iter 2: skipped the update, gradient norm is nan (1 skipped so far)' in p.stdout
    assert 'iter 8: skipped the update, gradient norm is nan (4 skipped so far)' in p.stdout
    assert 'not saving a checkpoint: 2 bad step(s) in a row just now' in p.stdout # at the eval of iter 8
    assert f"iter 8: 3 bad steps in a row: reloaded {tmp_path / 'ckpt.pt'} (iter 4), learning rate now x0.5" in p.stdout
    assert re.search(r'^iter 9: loss [\d.]+, .*, skipped 4$', p.stdout, re.M) # the run went on, the count is logged
    final = ckpt(tmp_path / 'ckpt.pt')
    assert final['iter_num'] == 10 and final['guard']['skipped'] == 4 and final['guard']['lr_scale'] == 0.5
    assert all(torch.isfinite(v).all() for v in final['model'].values())


def test_a_rollback_reloads_only_a_checkpoint_of_this_run(tmp_path):
    """
    A new run into an out_dir that holds an earlier run's ckpt.pt has nothing of its own to go back to before its
    first save: it keeps its weights rather than load another run's. A resumed run owns the file it resumed from.
    """
    config = tmp_path / 'first_three_steps_nan.py'
    config.write_text(NAN_GRADIENTS.replace('{2, 6, 7, 8}', '{0, 1, 2}')) # counted from this process's first step
    out = tmp_path / 'out'
    train(out, '--max_iters=2', '--eval_interval=2') # the earlier run
    p = train(out, str(config), '--max_iters=4', '--eval_interval=4', '--guard_max_bad=3')
    assert ('iter 2: 3 bad steps in a row: no checkpoint of this run yet, kept the weights, learning rate now x0.5'
            in p.stdout)
    assert 'reloaded' not in p.stdout
    assert ckpt(out / 'ckpt.pt')['iter_num'] == 4 # its own first save, at its first eval
    p = train(out, str(config), '--max_iters=8', '--eval_interval=8', '--guard_max_bad=3', '--init_from=resume')
    assert f"iter 6: 3 bad steps in a row: reloaded {out / 'ckpt.pt'} (iter 4), learning rate now x0.25" in p.stdout


def test_prepare_out_dir_deletes_only_the_temp_files_whose_writer_is_gone(tmp_path):
    """A temp file of a live process (another run saving into the same out_dir) or of another host is kept."""
    target = str(tmp_path / 'ckpt.pt')
    host = socket.gethostname()
    finished = subprocess.Popen([sys.executable, '-c', 'pass'])
    finished.wait() # its pid is now free: no process of that pid is running
    sleeping = subprocess.Popen(['sleep', '60'])
    try:
        names = {
            'ours': temp_path(target), # this process
            'alive': f'{target}{TMP_MARK}{host}.{sleeping.pid}',
            'gone': f'{target}{TMP_MARK}{host}.{finished.pid}',
            'gone_best': f'{tmp_path / "best.pt"}{TMP_MARK}{host}.{finished.pid}',
            'other_host': f'{target}{TMP_MARK}another-host.example.org.{finished.pid}',
            'not_a_checkpoint': f'{tmp_path / "notes.txt"}{TMP_MARK}{host}.{finished.pid}',
        }
        for path in names.values():
            open(path, 'w').close()
        removed = prepare_out_dir(str(tmp_path))
        assert sorted(removed) == sorted(os.path.basename(names[k]) for k in ('gone', 'gone_best'))
        assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(names[k]) for k in
                                                      ('ours', 'alive', 'other_host', 'not_a_checkpoint'))
    finally:
        sleeping.kill()
        sleeping.wait()


def test_the_guard_flags_nan_inf_and_loss_spikes_but_not_ordinary_noise():
    guard = LossGuard(window=20, zscore=6.0)
    noise = random.Random(0)
    for _ in range(200):
        assert guard.check(2.0 + noise.gauss(0, 0.05), grad_norm=1.0) is None
    assert 'spike' in guard.check(3.0, grad_norm=1.0) # 20 standard deviations up
    assert 'loss is nan' in guard.check(float('nan'))
    assert 'gradient norm is inf' in guard.check(2.0, grad_norm=float('inf'))
    assert (guard.skipped, guard.bad_streak) == (3, 3)
    assert guard.check(1.5, grad_norm=1.0) is None and guard.bad_streak == 0 # a drop is never a spike
    restored = LossGuard(window=20, zscore=6.0)
    restored.load_state_dict(guard.state_dict())
    assert restored.state_dict() == guard.state_dict()


def test_a_checkpoint_that_needs_the_unsafe_loader_loads_only_with_the_flag_and_a_warning(tmp_path):
    """e.g. an old nanoGPT run whose config held a Python object: refused by default (see test_bad_input)."""
    train(tmp_path, '--max_iters=2', '--eval_interval=2')
    state = ckpt(tmp_path / 'ckpt.pt')
    state['config']['args'] = argparse.Namespace(lr=1e-3)
    torch.save(state, tmp_path / 'ckpt.pt')
    p = run('sample.py', f'--out_dir={tmp_path}', '--num_samples=1', '--max_new_tokens=5', '--unsafe_load=True')
    assert p.stderr.startswith('warning: loading') and 'unsafe' in p.stderr and p.stdout.endswith('---------------\n') # and it sampled


def test_prepare_writes_meta_json_and_it_is_read_before_the_pickle(char_data, tmp_path):
    from tokens import load_meta, meta_file
    import json
    import shutil
    with open(os.path.join(char_data, 'meta.json')) as f:
        raw = json.load(f)
    assert raw['vocab_size'] == 65 and ''.join(raw['itos'])[:5] == "\n !$&"
    assert load_meta(char_data) == load_meta_from_pickle_only(char_data, tmp_path)
    # meta_file names the file that was read, for messages: the JSON, nanoGPT's pickle alone, or none
    assert meta_file(char_data) == os.path.join(char_data, 'meta.json')
    assert meta_file(tmp_path / 'only_pickle') == str(tmp_path / 'only_pickle' / 'meta.pkl')
    assert meta_file(tmp_path) is None and load_meta(tmp_path) is None
    shutil.copy(os.path.join(char_data, 'meta.pkl'), tmp_path / 'meta.pkl')
    (tmp_path / 'meta.json').write_text(json.dumps({'vocab_size': 2, 'itos': ['a', 'b']}))
    assert load_meta(tmp_path) == {'vocab_size': 2, 'itos': {0: 'a', 1: 'b'}, 'stoi': {'a': 0, 'b': 1}}


def load_meta_from_pickle_only(char_data, tmp_path):
    import shutil
    from tokens import load_meta
    only_pickle = tmp_path / 'only_pickle'
    only_pickle.mkdir()
    shutil.copy(os.path.join(char_data, 'meta.pkl'), only_pickle / 'meta.pkl')
    return load_meta(only_pickle)


@pytest.mark.skipif(not os.path.isdir('/proc/self/task'), reason="finds the worker processes through Linux's /proc")
def test_under_ddp_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    """A preemption notice may reach one worker only: the ranks agree on the stop flag, so none is left waiting."""
    log = tmp_path / 'log'
    with open(log, 'w') as f:
        p = subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                              'train.py', '--dataset=shakespeare_char', f'--out_dir={tmp_path}', '--eval_iters=2', *TINY,
                              '--gradient_accumulation_steps=2', '--max_iters=100000', '--eval_interval=100000'],
                             cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                             env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1'))
    try:
        wait_for(lambda: 'iter 3: loss' in log.read_text(), what='training to start')
        workers = [int(c) for t in os.listdir(f'/proc/{p.pid}/task')
                   for c in open(f'/proc/{p.pid}/task/{t}/children').read().split()]
        rank1 = [w for w in workers if b'\0RANK=1\0' in open(f'/proc/{w}/environ', 'rb').read()]
        assert len(rank1) == 1
        os.kill(rank1[0], signal.SIGTERM)
        assert p.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        p.kill()
    text = log.read_text()
    stopped_at = ckpt(tmp_path / 'ckpt.pt')['iter_num']
    assert f'stopped on a signal to another rank at iter {stopped_at}; resume with: torchrun --standalone --nproc_per_node=2 ' in text
