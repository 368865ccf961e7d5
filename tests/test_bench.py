"""bench.py times training and sampling on any device against a plain baseline, and ends with one parsable summary line."""
import json

from conftest import one_line_error, run

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
    s = summary(run('bench.py', *SMALL, '--baseline=False', '--cpu_threads=1').stdout)
    assert 'baseline_ms_per_iter' not in s and 'speedup' not in s and float(s['tokens_per_s']) > 0
    assert s['cpu_threads'] == '1'


def optimizer_steps(trace_path):
    """The optimizer steps a profiler trace recorded: torch names each 'Optimizer.step#<class>.step'."""
    with open(trace_path) as f:
        names = {e.get('name', '') for e in json.load(f)['traceEvents']}
    return {n.split('#')[1] for n in names if n.startswith('Optimizer.step#')}


def test_muon_true_steps_the_fast_run_with_muon(tmp_path):
    out = run('bench.py', *SMALL, '--baseline=False', '--muon=True', '--profile=True', cwd=tmp_path).stdout
    assert 'muon=True' in out.splitlines()[-1]
    # the timed steps ran the optimizer that holds Muon and AdamW side by side, and each of the two inside it
    steps = optimizer_steps(tmp_path / 'bench_trace.json')
    assert 'MuonWithAdamW.step' in steps and 'AdamW.step' in steps
    assert 'BatchedMuon.step' in steps


def test_sample_mode_times_generation_against_the_no_cache_fp32_baseline():
    p = run('bench.py', *SMALL, '--n_layer=1', '--mode=sample', '--max_new_tokens=40', '--overflow=slide',
            '--compile=True', '--dtype=bfloat16', env_extra={'TORCH_LOGS': 'dynamo'}) # dynamo logs what it compiles
    s = summary(p.stdout)
    assert s['kv_cache'] == 'True' and s['overflow'] == 'slide' and s['compile'] == 'True'
    # the decoding step was compiled, by inductor, once: the warm-up compiled it and the timed run reused it
    assert p.stderr.count('torchdynamo start tracing') == 1 and 'start tracing decode_and_sample' in p.stderr
    assert 'done compiler function inductor' in p.stderr and 'warm-up generation, compiling included' in p.stdout
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
    assert optimizer_steps(tmp_path / 'bench_trace.json') == {'AdamW.step'} # without muon=True: AdamW alone


def test_real_data_reads_the_prepared_dataset(char_data):
    # the model gets the dataset's vocabulary (65 characters, from its meta), not the vocab_size given for random tokens
    s = summary(run('bench.py', *SMALL, '--real_data=True', '--baseline=False', '--vocab_size=100').stdout)
    assert s['vocab_size'] == '65' and float(s['tokens_per_s']) > 0
    # and its tokens come from the dataset's train.bin, which must exist
    p = run('bench.py', *SMALL, '--real_data=True', '--dataset=no_such_dataset', check=False)
    assert "no dataset 'no_such_dataset': " in one_line_error(p) and 'train.bin does not exist' in one_line_error(p)


def test_a_training_config_file_can_be_benchmarked():
    s = summary(run('bench.py', 'config/shakespeare_char.py', *SMALL).stdout)
    assert s['batch_size'] == '2' and s['block_size'] == '32' and s['n_layer'] == '2' # the shape that was timed


def test_sample_mode_reports_the_kv_cache_bytes_of_multi_head_and_multi_query_attention():
    import torch
    from model import GPT, GPTConfig, prepare_for_sampling
    n_layer, n_head, head_size, batch, block = 2, 4, 8, 2, 32 # SMALL's shape with 4 heads of 8 dims
    params = {}
    for n_kv_head, kv_heads in ((0, n_head), (1, 1)): # multi-head (0 = n_head), multi-query
        s = summary(run('bench.py', *SMALL, f'--n_head={n_head}', f'--n_kv_head={n_kv_head}', '--mode=sample',
                        '--baseline=False', '--max_new_tokens=4', '--dtype=bfloat16').stdout)
        # keys and values, of every layer and key/value head: on the CPU the cache is fp32 (4 bytes) for bf16 weights
        assert s['kv_cache_dtype'] == 'float32'
        assert int(s['kv_bytes_per_token']) == 2 * n_layer * kv_heads * head_size * 4
        assert int(s['kv_bytes_per_block']) == int(s['kv_bytes_per_token']) * block * batch
        # and that is what generate() allocates for such a model
        model = prepare_for_sampling(GPT(GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_head * head_size,
                                                   block_size=block, vocab_size=65, n_kv_head=n_kv_head)),
                                     'cpu', 'bfloat16')
        caches = model._new_kv_caches(batch, torch.device('cpu'))
        assert sum(c.k.nbytes + c.v.nbytes for c in caches) == int(s['kv_bytes_per_block'])
        params[kv_heads] = int(s['params'])
    # multi-query drops 3 of the 4 key and 3 of the 4 value projections (8 rows of 32 each, no bias) in each layer
    assert params[n_head] - params[1] == n_layer * 2 * (n_head - 1) * head_size * n_head * head_size
