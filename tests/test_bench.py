"""bench.py times training and sampling on any device and ends with one parsable summary line."""
import re

from conftest import run

SMALL = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=2',
         '--burnin_iters=1', '--measure_iters=2', '--device=cpu']

def summary(stdout):
    line = stdout.strip().splitlines()[-1]
    assert line.startswith('bench: ')
    return dict(kv.split('=', 1) for kv in line[len('bench: '):].split())


def test_train_mode_reports_ms_per_iter_tokens_per_s_and_mfu():
    s = summary(run('bench.py', *SMALL, '--dtype=float32').stdout)
    assert s['mode'] == 'train' and s['dtype'] == 'float32'
    assert float(s['ms_per_iter']) > 0 and float(s['tokens_per_s']) > 0 and 0 < float(s['mfu']) < 100


def test_sample_mode_times_generation_with_and_without_the_kv_cache():
    s = summary(run('bench.py', *SMALL, '--mode=sample', '--max_new_tokens=40').stdout)
    assert float(s['tokens_per_s_kv_cache']) > 0 and float(s['tokens_per_s_no_cache']) > 0


def test_a_training_config_file_can_be_benchmarked():
    s = summary(run('bench.py', 'config/shakespeare_char.py', *SMALL).stdout)
    assert s['batch_size'] == '2' and s['block_size'] == '32'
