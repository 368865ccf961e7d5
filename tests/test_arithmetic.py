"""
The arithmetic dataset (data/arithmetic): problems one per fixed-length row, answers stored with their digits
reversed for + - *, a mask that keeps the loss on the answers, and decoding that puts the digits back in order.
"""
import importlib.util
import json
import os
import pickle
import re
import shutil

import numpy as np
import pytest

from conftest import ROOT, TINY, one_line_error, run
from tokens import dataset_tokenizer, reverse_answers

spec = importlib.util.spec_from_file_location('arithmetic_prepare', os.path.join(ROOT, 'data/arithmetic/prepare.py'))
prepare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prepare) # its settings and the writing run only as a script: this loads the functions

# a model that learns 1-digit addition in a few seconds: one problem per window ('9+9=81\n' is 7 tokens)
ONE_DIGIT_ROW = 7
TRAIN_STEPS = 150
TRAIN_TINY = [*TINY, f'--block_size={ONE_DIGIT_ROW}', '--batch_size=64', '--n_embd=64', '--muon=True',
              '--learning_rate=1e-2', f'--max_iters={TRAIN_STEPS}', '--warmup_iters=10',
              f'--lr_decay_iters={TRAIN_STEPS}', '--min_lr=1e-3', f'--eval_interval={TRAIN_STEPS}', '--eval_iters=2',
              '--log_interval=10', '--cpu_threads=1']


def read_rows(data_dir, split):
    """The rows of a split as text, and its mask, one row of each per problem."""
    meta = pickle.load(open(os.path.join(data_dir, 'meta.pkl'), 'rb'))
    ids = np.fromfile(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16)
    mask = np.fromfile(os.path.join(data_dir, f'{split}_mask.bin'), dtype=np.uint8)
    n = meta['row_len']
    text = ''.join(meta['itos'][i] for i in ids.tolist())
    return [text[i:i + n] for i in range(0, len(text), n)], mask.reshape(-1, n), meta


def final_loss(stdout):
    return float(re.findall(r"^iter \d+: loss ([0-9.]+)", stdout, re.M)[-1])


@pytest.fixture(scope='module')
def one_digit():
    """1-digit addition prepared as data/<a name of its own> (train.py reads datasets under data/), removed after."""
    name = f'arithmetic_test_{os.getpid()}'
    data_dir = os.path.join(ROOT, 'data', name)
    run('data/arithmetic/prepare.py', '--digits=1', '--num_val=10', f'--out_dir={data_dir}')
    yield name, data_dir
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope='module')
def trained(one_digit, tmp_path_factory):
    """A tiny model trained on it with the loss mask (the default), and the output of that run."""
    name, _ = one_digit
    out = str(tmp_path_factory.mktemp('arith'))
    p = run('train.py', f'--dataset={name}', f'--out_dir={out}', *TRAIN_TINY)
    return out, p.stdout


def test_each_operator_writes_its_answer_after_the_equals_sign():
    assert prepare.problem_line(57, '+', 68, '') == '57+68=125\n'
    assert prepare.problem_line(12, '-', 57, '') == '12-57=-45\n' # negative results keep their sign
    assert prepare.problem_line(57, '*', 68, '') == '57*68=3876\n'
    assert prepare.problem_line(17, '/', 5, '') == '17/5=3r2\n' # quotient r remainder
    assert prepare.problem_line(3, '/', 7, '') == '3/7=0r3\n'


def test_reversed_answers_put_the_least_significant_digit_first_and_decode_back():
    assert prepare.problem_line(57, '+', 68, '+-*') == '57+68=521\n'
    assert prepare.problem_line(12, '-', 57, '+-*') == '12-57=-54\n' # the sign stays in front
    assert prepare.problem_line(57, '*', 68, '+-*') == '57*68=6783\n'
    assert prepare.problem_line(17, '/', 50, '+-*') == '17/50=0r17\n' # '/' not in reverse: reading order
    assert prepare.problem_line(17, '/', 50, '/') == '17/50=0r71\n' # each number turned on its own
    # reversing is its own inverse, line by line, and leaves lines of other operators (or none) alone
    stored = '57+68=521\n12-57=-54\n17/50=0r17\nno answer here 123'
    assert reverse_answers(stored, '+-*') == '57+68=125\n12-57=-45\n17/50=0r17\nno answer here 123'
    assert reverse_answers(reverse_answers(stored, '+-*'), '+-*') == stored


def test_train_and_held_out_problems_are_disjoint_and_the_mask_marks_exactly_each_answer(tmp_path):
    prepare.prepare(str(tmp_path), '+-*/', 2, '+-*', num_val=300, num_train=2000, seed=1)
    rows = {split: read_rows(str(tmp_path), split) for split in ('train', 'val')}
    meta = rows['val'][2]
    assert meta['reverse'] == '+-*' and meta['row_len'] == len('99*99=1089\n') and meta['ops'] == '+-*/'
    problems = {}
    for split, (lines, mask, _) in rows.items():
        assert len(lines) == (300 if split == 'val' else 2000) * 4 # per operator
        problems[split] = set()
        for line, m in zip(lines, mask):
            prompt, answer = line.split('=', 1)
            answer = answer[:answer.index('\n') + 1]
            a, op, b = re.fullmatch(r'(\d+)([-+*/])(\d+)', prompt).groups()
            assert reverse_answers(prompt + '=' + answer, '+-*') == prepare.problem_line(int(a), op, int(b), '')
            # 1 on the answer and its '\n', 0 on the prompt (with its '=') and on the padding after
            padding = len(line) - len(prompt) - 1 - len(answer)
            assert m.tolist() == [0] * (len(prompt) + 1) + [1] * len(answer) + [0] * padding
            problems[split].add(prompt)
        assert len(problems[split]) == len(lines) # no problem twice in a split
    assert not problems['train'] & problems['val']
    # the pickle is nanoGPT's (stoi, itos) with the settings beside them; the JSON carries the same settings
    with open(tmp_path / 'meta.json') as f:
        assert {k: v for k, v in json.load(f).items() if k not in ('itos', 'vocab_size')} == \
            {k: v for k, v in meta.items() if k not in ('itos', 'stoi', 'vocab_size')}


def test_decoding_a_reversed_dataset_puts_the_digits_back_and_a_plain_one_is_untouched(tmp_path):
    for reverse, expected in (('+-*', '57+68=125'), ('', '57+68=521')):
        prepare.prepare(str(tmp_path), '+', 2, reverse, num_val=10, num_train=10, seed=1)
        with open(tmp_path / 'meta.pkl', 'rb') as f:
            vocab_size = pickle.load(f)['vocab_size']
        encode, decode = dataset_tokenizer(str(tmp_path), vocab_size)
        assert decode(encode('57+68=521')) == expected


def test_the_mask_keeps_the_loss_on_the_answers(one_digit, trained, tmp_path):
    # an answer follows from its prompt, so a model can learn it to a loss near 0; the prompts' digits are random,
    # so a loss over them (loss_mask=False) stays near their entropy. Windows start at a problem: a window that cut
    # a prompt would leave its answer unpredictable too.
    name, _ = one_digit
    _, masked = trained
    unmasked = run('train.py', f'--dataset={name}', f'--out_dir={tmp_path}', '--loss_mask=False', *TRAIN_TINY).stdout
    assert final_loss(masked) < 0.05, masked[-1500:]
    assert final_loss(unmasked) > 0.3, unmasked[-1500:]


def test_sample_prints_the_answer_in_reading_order(one_digit, trained):
    _, data_dir = one_digit
    out, _ = trained
    # a training problem with a two-digit answer: stored reversed ('7+8=51'), printed as '7+8=15'
    lines, _, _ = read_rows(data_dir, 'train')
    stored = next(line.split('\n')[0] for line in lines if len(line.split('=')[1].split('\n')[0]) == 2)
    prompt = stored.split('=')[0] + '='
    p = run('sample.py', f'--out_dir={out}', f'--start={prompt}', '--num_samples=1', '--top_k=1',
            '--max_new_tokens=4', '--device=cpu')
    first = p.stdout.split('Loading meta from')[1].splitlines()[1]
    a, b = map(int, re.split(r'[+]', prompt[:-1]))
    assert first == f'{prompt}{a + b}', p.stdout
    # and the evaluation scores the training problems it has learned
    p = run('data/arithmetic/evaluate.py', f'--out_dir={out}', '--split=train')
    assert re.search(r'exact match on train of \S+: 90/90 = 100.00%', p.stdout), p.stdout


def test_bad_input_is_one_line(one_digit, trained):
    name, _ = one_digit
    out, _ = trained
    assert "'*'" in one_line_error(run('sample.py', f'--out_dir={out}', '--start=3*4=', '--device=cpu', check=False))
    for args, words in ((['--ops=+x'], "must be some of"), (['--digits=0'], 'digits=0'),
                        (['--reverse=r'], 'reverse='), (['--digits=1', '--num_val=100'], 'leaves no training')):
        line = one_line_error(run('data/arithmetic/prepare.py', *args, f'--out_dir={ROOT}/data/{name}_bad',
                                  check=False))
        assert words in line, line
        assert not os.path.exists(f'{ROOT}/data/{name}_bad') # nothing written
    line = one_line_error(run('train.py', f'--dataset={name}', *TINY, '--block_size=5', check=False))
    assert 'block_size=5 is shorter than the 7-token rows' in line, line
