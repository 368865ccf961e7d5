"""The run log train.py writes (out_dir/log.jsonl), how a resume trims it, and plot.py's pictures of it."""
import json
import shutil
import struct

import pytest

from conftest import TINY, one_line_error, run
from common import UserError
from plot import RunLog, read_log

pytestmark = pytest.mark.usefixtures('char_data')
TOKENS_PER_ITER = 4 * 32 # TINY: batch_size 4, block_size 32, one micro-step
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def train(out_dir, *args):
    return run('train.py', '--dataset=shakespeare_char', f'--out_dir={out_dir}', '--eval_iters=2', '--log_interval=1',
               *TINY, '--eval_interval=5', '--warmup_iters=0', *args, env_extra={'OMP_NUM_THREADS': '1'})


def records(out_dir):
    return [json.loads(line) for line in (out_dir / 'log.jsonl').read_text().splitlines()]


def iters(out_dir):
    return [(r['kind'], r['iter']) for r in records(out_dir)]


def png_size(path):
    """(width, height) from a PNG's header, after checking that it is one."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b'IHDR'
    return struct.unpack('>II', data[16:24])


@pytest.fixture(scope='module')
def two_runs(tmp_path_factory):
    """Two short runs at different learning rates; the first saved at iters 5 and 10 (keep_last)."""
    root = tmp_path_factory.mktemp('runs')
    train(root / 'lr-1e-2', '--max_iters=10', '--learning_rate=1e-2', '--keep_last=2')
    train(root / 'lr-1e-3', '--max_iters=10', '--learning_rate=1e-3')
    return root


def test_rank_0_logs_every_step_and_eval_with_tokens_seen(two_runs):
    log = records(two_runs / 'lr-1e-2')
    assert [(r['kind'], r['iter']) for r in log] == ([('eval', 0)] + [('step', i) for i in range(5)] + [('eval', 5)]
                                                     + [('step', i) for i in range(5, 10)] + [('eval', 10)])
    step, last = log[3], log[-1]
    assert set(step) == {'kind', 'iter', 'loss', 'lr', 'tokens', 'tok_per_s', 'mfu', 'dt_ms', 'time'}
    assert set(last) == {'kind', 'iter', 'train_loss', 'val_loss', 'lr', 'tokens', 'time'} # no hellaswag: not asked
    assert step['tokens'] == 2 * TOKENS_PER_ITER and last['tokens'] == 10 * TOKENS_PER_ITER
    assert step['lr'] == pytest.approx(1e-2, rel=0.01) and step['mfu'] is None # MFU only from the sixth step
    assert log[-2]['mfu'] > 0 and 0 < step['time'] <= last['time']


def test_a_resumed_run_drops_the_lines_past_its_checkpoint(two_runs, tmp_path):
    """Back to the checkpoint of iter 5 (as `cp ckpt_00000005.pt ckpt.pt` does): steps 5-9 are run and logged again."""
    out = tmp_path / 'run'
    shutil.copytree(two_runs / 'lr-1e-2', out)
    before = records(out)
    shutil.copy(out / 'ckpt_00000005.pt', out / 'ckpt.pt')
    train(out, '--max_iters=12', '--learning_rate=1e-2', '--init_from=resume')
    after = records(out)
    expected = ([('eval', 0)] + [('step', i) for i in range(5)] + [('eval', 5)] + [('step', i) for i in range(5, 10)]
                + [('eval', 10)] + [('step', 10), ('step', 11), ('eval', 12)])
    assert iters(out) == expected # each iter once
    assert after[:6] == before[:6] # what the checkpoint had seen is kept as it was


def test_the_log_is_trimmed_at_the_first_write_and_keeps_an_eval_the_resumed_run_does_not_redo(tmp_path):
    lines = [{'kind': 'eval', 'iter': 0}, {'kind': 'step', 'iter': 0}, {'kind': 'step', 'iter': 1},
             {'kind': 'eval', 'iter': 2}, {'kind': 'step', 'iter': 2}, {'kind': 'eval', 'iter': 3}]
    text = ''.join(json.dumps(r) + '\n' for r in lines) + '{"kind": "step", "it' # cut short by a crash
    (tmp_path / 'log.jsonl').write_text(text)
    log = RunLog(str(tmp_path), resume_iter=2)
    assert (tmp_path / 'log.jsonl').read_text() == text # nothing changes until the resumed run writes
    log.write('step', iter=2) # the run resumed at iter 2 does not evaluate there: the eval at 2 stays
    log.write('step', iter=3)
    assert iters(tmp_path) == [('eval', 0), ('step', 0), ('step', 1), ('eval', 2), ('step', 2), ('step', 3)]
    (tmp_path / 'log.jsonl').write_text(text)
    RunLog(str(tmp_path), resume_iter=2).write('eval', iter=2) # it does: the new eval replaces the old one
    assert iters(tmp_path) == [('eval', 0), ('step', 0), ('step', 1), ('eval', 2)]
    RunLog(str(tmp_path)).write('eval', iter=0) # a new run in the same out_dir starts a new log
    assert iters(tmp_path) == [('eval', 0)]


def test_plot_overlays_runs_in_a_png(two_runs, tmp_path):
    out = tmp_path / 'curves.png'
    p = run('plot.py', str(two_runs / 'lr-1e-2'), str(two_runs / 'lr-1e-3'), f'--out={out}')
    assert f'wrote {out}' in p.stdout
    width, height = png_size(out)
    assert 600 <= width <= 2000 and 250 <= height <= 1000 and out.stat().st_size < 200_000


def test_plot_adds_a_hellaswag_panel_when_a_run_has_it(two_runs, tmp_path):
    run_dir = tmp_path / 'with-hellaswag'
    shutil.copytree(two_runs / 'lr-1e-2', run_dir)
    with open(run_dir / 'log.jsonl', 'a') as f:
        f.write(json.dumps({'kind': 'eval', 'iter': 20, 'train_loss': 3.0, 'val_loss': 3.1, 'tokens': 2560,
                            'hellaswag': 0.27}) + '\n')
    assert read_log(str(run_dir))['eval'][-1]['hellaswag'] == 0.27
    one_panel = tmp_path / 'one.png'
    two_panels = tmp_path / 'two.png'
    run('plot.py', str(two_runs / 'lr-1e-2'), f'--out={one_panel}')
    run('plot.py', str(run_dir), str(two_runs / 'lr-1e-3'), f'--out={two_panels}')
    assert png_size(two_panels)[0] > png_size(one_panel)[0] * 1.4 and png_size(two_panels)[1] == png_size(one_panel)[1]


def test_read_log_keeps_the_last_record_of_an_iter_and_skips_an_unfinished_last_line(tmp_path):
    (tmp_path / 'log.jsonl').write_text('{"kind": "step", "iter": 1, "loss": 5.0}\n'
                                        '{"kind": "step", "iter": 0, "loss": 4.0}\n'
                                        '{"kind": "step", "iter": 1, "loss": 3.0}\n'
                                        '{"kind": "eval", "it') # a live run is writing it
    log = read_log(str(tmp_path))
    assert [(r['iter'], r['loss']) for r in log['step']] == [(0, 4.0), (1, 3.0)] and log['eval'] == []


@pytest.mark.parametrize('content, complaint', [
    (None, 'has no log.jsonl'),
    ('', 'holds no records yet'),
    ('{"kind": "step", "iter": 0}\nnot json\n', 'log.jsonl line 2 is not a run-log record'),
    ('{"kind": "step", "iter": 0}\n{"kind": "epoch", "iter": 1}\n', 'log.jsonl line 2 is not a run-log record'),
    ('{"kind": "step"}\n', 'log.jsonl line 1 is not a run-log record'),
])
def test_a_folder_without_a_usable_log_is_one_line(tmp_path, content, complaint):
    if content is not None:
        (tmp_path / 'log.jsonl').write_text(content)
    with pytest.raises(UserError, match=complaint):
        read_log(str(tmp_path))


def test_plots_bad_input_is_one_line(tmp_path):
    assert 'no such folder' in one_line_error(run('plot.py', str(tmp_path / 'nope'), check=False))
    assert 'has no log.jsonl' in one_line_error(run('plot.py', str(tmp_path), check=False))
    assert 'usage: python plot.py OUT_DIR' in one_line_error(run('plot.py', check=False))
