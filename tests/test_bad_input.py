"""
Bad input, one table: each row runs a script as a user would, with one mistake. Every row must end with a
non-zero exit, exactly one stderr line 'error: ...' that names the problem (the row's expected words) and
the fix, no traceback, and not a single file of the user's created, changed or removed.
"""
import hashlib
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from conftest import CHAR_DIR, ROOT, TINY, one_line_error, run

pytestmark = pytest.mark.usefixtures('char_data')


def snapshot(*roots):
    """Every directory and file under roots, with each file's sha256."""
    state = {}
    for root in roots:
        for dirpath, _, filenames in os.walk(root):
            state[dirpath] = 'dir'
            for name in filenames:
                with open(os.path.join(dirpath, name), 'rb') as f:
                    state[os.path.join(dirpath, name)] = hashlib.sha256(f.read()).hexdigest()
    return state


def write_tokens(directory, n_train, n_val=1000, odd=False):
    os.makedirs(directory)
    rng = np.random.default_rng(0)
    rng.integers(0, 65, n_train, dtype=np.uint16).tofile(os.path.join(directory, 'train.bin'))
    rng.integers(0, 65, n_val, dtype=np.uint16).tofile(os.path.join(directory, 'val.bin'))
    if odd: # a copy cut short by one byte
        with open(os.path.join(directory, 'train.bin'), 'r+b') as f:
            f.truncate(2 * n_train - 1)


class RunsCode:
    """A pickle that, if unpickled, would create the directory PWNED: a stand-in for any code a pickle may run."""
    def __init__(self, where):
        self.where = where

    def __reduce__(self):
        return (os.mkdir, (os.path.join(self.where, 'PWNED'),))


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """A user's directory: a trained run, broken checkpoints and datasets, prompts, a copy of a prepare script."""
    w = tmp_path_factory.mktemp('user')
    train_args = ['--dataset=shakespeare_char', '--eval_iters=1', *TINY, '--max_iters=2', '--eval_interval=2']
    run('train.py', f'--out_dir={w / "out"}', *train_args)
    good = torch.load(w / 'out' / 'ckpt.pt', weights_only=True)

    other_vocab = dict(good, model_args=dict(good['model_args'], vocab_size=100),
                       model=dict(good['model'], **{k: torch.zeros(100, 32) for k in ('transformer.wte.weight', 'lm_head.weight')}))
    os.makedirs(w / 'vocab100')
    torch.save(other_vocab, w / 'vocab100' / 'ckpt.pt')
    os.makedirs(w / 'garbage')
    (w / 'garbage' / 'ckpt.pt').write_bytes(b'this is not a checkpoint' * 100)
    os.makedirs(w / 'json_ckpt')
    (w / 'json_ckpt' / 'ckpt.pt').write_text('{"model": 1}\n') # torch's weights-only loader calls this an 'Unsupported operand'
    os.makedirs(w / 'truncated')
    data = (w / 'out' / 'ckpt.pt').read_bytes()
    (w / 'truncated' / 'ckpt.pt').write_bytes(data[:len(data) // 2])
    os.makedirs(w / 'unsafe') # e.g. an old nanoGPT run whose config held a Python object
    import argparse
    torch.save(dict(good, config=dict(good['config'], args=argparse.Namespace(lr=1.0))), w / 'unsafe' / 'ckpt.pt')

    write_tokens(w / 'short', n_train=20) # fewer than block_size + 1 = 33 tokens
    write_tokens(w / 'odd', n_train=1000, odd=True)
    write_tokens(w / 'evil_pickle', n_train=1000)
    with open(w / 'evil_pickle' / 'meta.pkl', 'wb') as f:
        pickle.dump({'vocab_size': 65, 'itos': RunsCode(str(w)), 'stoi': {}}, f)
    write_tokens(w / 'bad_json', n_train=1000)
    write_tokens(w / 'no_meta', n_train=1000) # no meta.pkl: GPT-2 token ids, as far as anyone can tell
    os.makedirs(w / 'meta_gone') # a char-level run whose dataset lost its meta.pkl
    torch.save(dict(good, config=dict(good['config'], dataset=str(w / 'no_meta'))), w / 'meta_gone' / 'ckpt.pt')
    (w / 'latin1.txt').write_bytes('café'.encode('latin-1'))
    (w / 'bad_json' / 'meta.json').write_text('{"vocab_size": 65, "itos": ')

    # the runs from scratch use out_dir={w}/scratch_out, which does not exist: a run that fails must not leave it behind
    (w / 'a_file').write_text('not a directory')
    os.makedirs(w / 'readonly')
    os.chmod(w / 'readonly', 0o555)
    (w / 'failing_config.py').write_text('batch_size = 1 // 0\n')
    # copies of the char-level prepare.py in folders of their own, each beside a bad input.txt (or none);
    # the copies import common.py and tokens.py from the repo, and the offline one downloads from a closed port
    with open(os.path.join(ROOT, 'data', 'shakespeare_char', 'prepare.py')) as f:
        prepare = f.read().replace("os.path.dirname(os.path.dirname(here))", repr(ROOT))
    offline = "import tokens; tokens.TINY_SHAKESPEARE_URL = 'http://127.0.0.1:9/input.txt'\n"
    for name, text in (('prep_empty', b''), ('prep_latin1', 'To be, or not to be: café'.encode('latin-1')),
                       ('prep_offline', None)):
        os.makedirs(w / name)
        script = prepare.replace('exit_on_user_error()\n', 'exit_on_user_error()\n' + offline, 1)
        (w / name / 'prepare.py').write_text(script if name == 'prep_offline' else prepare)
        if text is not None:
            (w / name / 'input.txt').write_bytes(text)
    return w


# as root, chmod does not stop writing: a directory of the read-only sysfs does
READONLY = '/sys/kernel' if os.geteuid() == 0 else '{w}/readonly'
TRAIN = ['--dataset=shakespeare_char', '--eval_iters=1', *TINY, '--max_iters=1', '--out_dir={w}/scratch_out']
RESUME = [*TRAIN[:-1], '--init_from=resume', '--max_iters=3']
SAMPLE = ['--out_dir={w}/out', '--device=cpu', '--num_samples=1', '--max_new_tokens=3']
BENCH = ['--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=2', '--device=cpu',
         '--burnin_iters=1', '--measure_iters=1']

CASES = [
    # configurator.py, through each script
    ('unknown key', 'train.py', [*TRAIN, '--n_layers=2'], "unknown config key 'n_layers'"),
    ('wrong type', 'train.py', [*TRAIN, '--batch_size=big'], 'batch_size expects int'),
    ('key without value', 'train.py', [*TRAIN, '--max_iters'], '--key=value'),
    ('missing config file', 'train.py', ['config/no_such_config.py', *TRAIN], 'config file config/no_such_config.py not found'),
    ('config file that fails', 'train.py', ['{w}/failing_config.py', *TRAIN], 'ZeroDivisionError'),
    ('sample: unknown key', 'sample.py', [*SAMPLE, '--min_p=0.1'], "unknown config key 'min_p'"),
    ('bench: wrong type', 'bench.py', [*BENCH, '--compile=yes'], 'compile expects bool'),
    # train.py: sizes and settings
    ('batch_size=0', 'train.py', [*TRAIN, '--batch_size=0'], 'batch_size=0 must be > 0'),
    ('block_size=0', 'train.py', [*TRAIN, '--block_size=0'], 'block_size=0 must be > 0'),
    ('negative n_layer', 'train.py', [*TRAIN, '--n_layer=-2'], 'n_layer=-2 must be a positive integer'),
    ('n_embd % n_head', 'train.py', [*TRAIN, '--n_embd=33'], 'not divisible by n_head'),
    ('dropout=1', 'train.py', [*TRAIN, '--dropout=1.0'], 'dropout=1.0 must be in [0, 1)'),
    ('keep_last<0', 'train.py', [*TRAIN, '--keep_last=-1'], 'keep_last=-1 must be >= 0'),
    ('guard_lr_factor>1', 'train.py', [*TRAIN, '--guard_lr_factor=2.0'], 'guard_lr_factor=2.0 must be in (0, 1]'),
    ('unknown lr_schedule', 'train.py', [*TRAIN, '--lr_schedule=linear'], "lr_schedule='linear' is not one of"),
    ('decay_frac 0', 'train.py', [*TRAIN, '--decay_frac=0'], 'decay_frac=0.0 must be in (0, 1]'),
    ('negative grad_clip', 'train.py', [*TRAIN, '--grad_clip=-1.0'], 'grad_clip=-1.0 must be >= 0'),
    ('negative max_iters', 'train.py', [*TRAIN, '--max_iters=-5'], 'max_iters=-5 must be >= 0'),
    ('negative cpu_threads', 'train.py', [*TRAIN, '--cpu_threads=-1'], 'cpu_threads=-1 must be >= 0'),
    ('beta2=1', 'train.py', [*TRAIN, '--beta2=1.0'], 'beta2=1.0 must be in [0, 1)'),
    ('unknown init_from', 'train.py', [*TRAIN, '--init_from=gpt3'], "init_from='gpt3' is not supported"),
    ('unknown device', 'train.py', [*TRAIN, '--device=tpu'], "device='tpu'"),
    # train.py: data
    ('missing dataset', 'train.py', [*TRAIN, '--dataset=no_such_data'], 'prepare'),
    ('train.bin too short', 'train.py', [*TRAIN, '--dataset={w}/short'], 'block_size + 1 = 33 are needed'),
    ('odd-sized .bin', 'train.py', [*TRAIN, '--dataset={w}/odd'], 'odd number of bytes'),
    ('meta.pkl that runs code', 'train.py', [*TRAIN, '--dataset={w}/evil_pickle'], 'is not a plain dict (it refers to'),
    ('broken meta.json', 'train.py', [*TRAIN, '--dataset={w}/bad_json'], 'meta.json is not valid tokenizer metadata'),
    # train.py: out_dir and checkpoints
    ('out_dir not writable', 'train.py', [*TRAIN, f'--out_dir={READONLY}'], 'is not writable'),
    ('out_dir under a file', 'train.py', [*TRAIN, '--out_dir={w}/a_file/out'], 'cannot be created'),
    ('resume: no checkpoint', 'train.py', [*RESUME, '--out_dir={w}/nothing'], 'no checkpoint at'),
    ('resume: other vocab', 'train.py', [*RESUME, '--out_dir={w}/vocab100'], 'has vocab_size 65 (its own vocabulary) but the checkpoint'),
    ('resume: GPT-2 tokens, char model', 'train.py', [*RESUME, '--out_dir={w}/out', '--dataset={w}/no_meta'],
     'its tokens are GPT-2'),
    ('resume: garbage ckpt.pt', 'train.py', [*RESUME, '--out_dir={w}/garbage'], 'truncated or corrupt'),
    ('resume: truncated ckpt.pt', 'train.py', [*RESUME, '--out_dir={w}/truncated'], 'truncated or corrupt'),
    ('resume: larger block_size', 'train.py', [*RESUME, '--out_dir={w}/out', '--block_size=64'], 'block_size=64 is larger'),
    ('resume: other n_layer', 'train.py', [*RESUME, '--out_dir={w}/out', '--n_layer=3'], 'n_layer=3 but the checkpoint'),
    ('resume: other optimizer', 'train.py', [*RESUME, '--out_dir={w}/out', '--muon=True'], 'resume with --muon=False'),
    ('fsdp with muon', 'train.py', [*TRAIN, '--fsdp=True', '--muon=True'], 'muon=True needs each weight matrix whole'),
    ('resume: needs unsafe pickle', 'train.py', [*RESUME, '--out_dir={w}/unsafe'], 'rerun with --unsafe_load=True'),
    # sample.py
    ('sample: start=FILE: nothing', 'sample.py', [*SAMPLE, '--start=FILE:{w}/no_prompt.txt'], 'no such file'),
    ('sample: prompt not UTF-8', 'sample.py', [*SAMPLE, '--start=FILE:{w}/latin1.txt'], 'is not UTF-8 text'),
    ('sample: char model, no meta.pkl', 'sample.py', [*SAMPLE, '--out_dir={w}/meta_gone'], "too few for GPT-2's tokenizer"),
    ('sample: seed<0', 'sample.py', [*SAMPLE, '--seed=-1'], 'seed=-1 must be >= 0'),
    ('sample: top_k=0', 'sample.py', [*SAMPLE, '--top_k=0'], 'top_k=0 must be > 0'),
    ('sample: temperature=0', 'sample.py', [*SAMPLE, '--temperature=0.0'], 'temperature=0.0 must be >= 1e-06'),
    # logits / 1e-45 overflows fp32: softmax would give NaNs and multinomial a traceback
    ('sample: temperature too small', 'sample.py', [*SAMPLE, '--temperature=1e-45'], 'top_k=1 is greedy'),
    ('sample: max_new_tokens<0', 'sample.py', [*SAMPLE, '--max_new_tokens=-1'], 'max_new_tokens=-1 must be >= 0'),
    ('sample: prompt outside vocab', 'sample.py', [*SAMPLE, '--start=café'], "not in the model's vocabulary: 'é'"),
    ('sample: no checkpoint', 'sample.py', [*SAMPLE, '--out_dir={w}/nothing'], 'no checkpoint at'),
    ('sample: truncated ckpt.pt', 'sample.py', [*SAMPLE, '--out_dir={w}/truncated'], 'truncated or corrupt'),
    ('sample: JSON as ckpt.pt', 'sample.py', [*SAMPLE, '--out_dir={w}/json_ckpt'], 'truncated, corrupt, or another format'),
    ('sample: JSON, unsafe_load', 'sample.py', [*SAMPLE, '--out_dir={w}/json_ckpt', '--unsafe_load=True'],
     'not a readable checkpoint'),
    ('sample: other vocab', 'sample.py', [*SAMPLE, '--out_dir={w}/vocab100'], 'has vocab_size 65 but the model has 100'),
    # bench.py
    ('export_hf to a file', 'model.py', ['export_hf', '{w}/out', '{w}/a_file'], 'it is a file'),
    ('bench: vocab_size=0', 'bench.py', [*BENCH, '--vocab_size=0'], 'vocab_size=0 must be > 0'),
    ('bench: unknown device', 'bench.py', [*BENCH, '--device=tpu'], "device='tpu'"),
    ('bench: unknown mode', 'bench.py', [*BENCH, '--mode=fly'], "mode='fly'"),
    ('bench: fp16 on the CPU', 'bench.py', [*BENCH, '--dtype=float16'], 'float16'),
    ('bench: missing dataset', 'bench.py', [*BENCH, '--real_data=True', '--dataset=nothing_here'], "no dataset 'nothing_here'"),
    ('bench: batch_size=0', 'bench.py', [*BENCH, '--batch_size=0'], 'batch_size=0 must be > 0'),
    ('bench: measure_iters=0', 'bench.py', [*BENCH, '--measure_iters=0'], 'measure_iters=0 must be > 0'),
    ('bench: unknown dtype', 'bench.py', [*BENCH, '--dtype=float8'], "'bfloat16'"),
    ('bench: unknown overflow', 'bench.py', [*BENCH, '--overflow=wrap'], "'recompute', 'slide'"),
    ('bench: replay of a compiled step', 'bench.py', [*BENCH, '--replay=True', '--compile=True'], 'compile=False'),
    *([('bench: cuda without a GPU', 'bench.py', [*BENCH, '--device=cuda'], "use device='auto' or 'cpu'")]
      if not torch.cuda.is_available() else []),
    # prepare scripts
    ('prepare: empty input.txt', '{w}/prep_empty/prepare.py', [], 'input.txt is empty'),
    ('prepare: input.txt not UTF-8', '{w}/prep_latin1/prepare.py', [], 'is not UTF-8 text'),
    ('prepare: offline, no input.txt', '{w}/prep_offline/prepare.py', [], 'offline, put the file at {w}/prep_offline/input.txt'),
]


@pytest.mark.parametrize('script, args, expected', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_no_file(world, script, args, expected):
    fill = lambda s: s.replace('{w}', str(world))
    before = snapshot(world, CHAR_DIR)
    p = run(fill(script), *map(fill, args), check=False, timeout=120)
    line = one_line_error(p)
    assert fill(expected) in line, line
    assert snapshot(world, CHAR_DIR) == before


def test_a_library_message_inside_an_error_is_its_first_line_cut_after_a_sentence():
    from common import ERROR_DETAIL_CHARS, first_line
    long = 'failed finding central directory. ' + 'This is an internal error of the reader. ' * 10
    assert first_line(RuntimeError(long + '\nsecond line')) == 'failed finding central directory. ' \
        + 'This is an internal error of the reader. ' * 3 + 'This is an internal error of the reader.'
    assert first_line(RuntimeError('x' * 500)) == 'x' * ERROR_DETAIL_CHARS + '...' # no sentence to cut after
    assert first_line(RuntimeError('short\nmore')) == 'short' and first_line(RuntimeError('')) == 'no message'
