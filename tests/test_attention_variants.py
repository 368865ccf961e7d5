"""bench.py --mode=kv_heads: multi-head, grouped-query and multi-query attention timed and trained side by side."""
from conftest import one_line_error, run
from test_bench import SMALL

# a training config for the loss column that trains in a second and evaluates all of val.bin in a few more
TINY_CHAR_CONFIG = """
dataset = 'shakespeare_char'
n_layer, n_head, n_embd, block_size, batch_size = 1, 4, 32, 32, 64
eval_interval, eval_iters, log_interval = 1000, 2, 1000
device, compile = 'cpu', False
"""

def markdown_table(out):
    """The rows of the markdown table in out, each a dict from the header's names to the cells."""
    header, _rule, *rows = [[c.strip() for c in line.strip('|').split('|')]
                            for line in out.splitlines() if line.startswith('|')]
    return {row[0]: dict(zip(header, row)) for row in rows}

def number(cell):
    return float(cell.split()[0].replace(',', ''))


def test_kv_heads_mode_prints_one_table_of_multi_head_against_multi_query(char_data, tmp_path):
    config = tmp_path / 'tiny_char.py'
    config.write_text(TINY_CHAR_CONFIG)
    out = run('bench.py', *SMALL, '--n_head=4', '--peak_flops=1e12', '--mode=kv_heads', '--kv_heads=0 1',
              '--kv_decode_batch=3', '--max_new_tokens=8', f'--kv_train_config={config}', '--kv_train_seconds=1').stdout
    table = markdown_table(out)
    assert list(table) == ['0', '1'] and 'decoding tokens/s, batch 3' in table['0']
    mha, mqa = table['0'], table['1']
    assert (mha['attention'], mqa['attention']) == ('multi-head', 'multi-query')
    # one key/value head instead of 4: a quarter of the cache, and smaller key/value projections
    assert number(mha['KV cache per token']) == 4 * number(mqa['KV cache per token'])
    assert number(mha['parameters']) > number(mqa['parameters'])
    for row in (mha, mqa): # each variant timed, and trained by train.py to a full val loss after some steps
        assert number(row['training tokens/s']) > 0 and number(row['decoding tokens/s, batch 1']) > 0
        loss, steps = row['full val loss (steps)'].split()
        assert 0 < float(loss) < 10 and int(steps.strip('()').replace(',', '')) > 0
    assert 'decoding at batch 3, against n_kv_head=0: n_kv_head=1 ' in out


def test_kv_heads_that_do_not_divide_n_head_are_refused_before_anything_runs():
    # 3 divides the timed model's 6 heads, but not the 4 of the loss column's config: an error, not minutes later
    p = run('bench.py', *SMALL, '--n_head=6', '--n_embd=48', '--mode=kv_heads', "--kv_heads=0 3", check=False)
    assert 'n_kv_head=3 does not divide the n_head=4 of config/shakespeare_char_cpu.py' in one_line_error(p)
    p = run('bench.py', *SMALL, '--mode=kv_heads', "--kv_heads=0 two", check=False)
    assert "kv_heads='0 two' must be n_kv_head values separated by spaces" in one_line_error(p)
