"""bench.py times training and sampling on any device against a plain baseline, and ends with one parsable summary line."""

from conftest import run

SMALL = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=2',
         '--burnin_iters=1', '--measure_iters=2', '--device=cpu']

def summary(stdout):
    line = stdout.strip().splitlines()[-1]
    assert line.startswith('bench: ')
    return dict(kv.split('=', 1) for kv in line[len('bench: '):].split())


def test_train_mode_reports_ms_per_iter_tokens_per_s_mfu_and_the_speedup_over_the_baseline():
    s = summary(run('bench.py', *SMALL, '--dtype=bfloat16').stdout)
    assert s['mode'] == 'train' and s['dtype'] == 'bfloat16'
    assert float(s['ms_per_iter']) > 0 and float(s['tokens_per_s']) > 0 and 0 < float(s['mfu']) < 100
    # the same invocation timed the plain fp32 run: the speed-up is the ratio of the two step times
    ratio = float(s['baseline_ms_per_iter']) / float(s['ms_per_iter'])
    assert float(s['speedup']) == round(ratio, 2)


def test_baseline_false_times_only_the_fast_settings():
    s = summary(run('bench.py', *SMALL, '--baseline=False', '--muon=True', '--cpu_threads=1').stdout)
    assert 'baseline_ms_per_iter' not in s and 'speedup' not in s and float(s['tokens_per_s']) > 0
    assert s['cpu_threads'] == '1'
    assert s['muon'] == 'True' # the fast run stepped with Muon


def test_sample_mode_times_generation_against_the_no_cache_fp32_baseline():
    s = summary(run('bench.py', *SMALL, '--n_layer=1', '--mode=sample', '--max_new_tokens=40', '--overflow=slide',
                    '--compile=True', '--dtype=bfloat16').stdout)
    assert s['kv_cache'] == 'True' and s['overflow'] == 'slide' and s['compile'] == 'True' # the compiled decoding step
    assert float(s['tokens_per_s']) > 0 and float(s['baseline_tokens_per_s']) > 0
    assert float(s['speedup']) == round(float(s['tokens_per_s']) / float(s['baseline_tokens_per_s']), 2)


def test_replay_times_every_op_of_one_step_again_on_its_own():
    out = run('bench.py', *SMALL, '--baseline=False', '--replay=True').stdout
    s = summary(out)
    assert float(s['replay_ms']) > 0
    # one line names how many ops one step ran and the largest of them: a training step has matmuls
    line, = [l for l in out.splitlines() if l.startswith('replay: ')]
    assert int(line.split("step's ")[1].split()[0]) > 50 and ' mm ' in line


def test_profile_writes_a_trace_and_prints_the_per_op_table(tmp_path):
    out = run('bench.py', *SMALL, '--baseline=False', '--profile=True', cwd=tmp_path).stdout
    assert 'aten::mm' in out and 'Self CPU' in out # the profiler's table, ops by their own time
    assert (tmp_path / 'bench_trace.json').stat().st_size > 0


def test_real_data_reads_the_prepared_dataset(char_data):
    s = summary(run('bench.py', *SMALL, '--real_data=True', '--baseline=False').stdout)
    assert float(s['tokens_per_s']) > 0


def test_a_training_config_file_can_be_benchmarked():
    s = summary(run('bench.py', 'config/shakespeare_char.py', *SMALL).stdout)
    assert s['batch_size'] == '2' and s['block_size'] == '32' and s['n_layer'] == '2' # the shape that was timed
