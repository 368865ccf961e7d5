"""
Your own text: data/text/prepare.py turns a UTF-8 file or a folder of .txt files, in any language, into a dataset
that train.py trains on and sample.py samples from, with no more flags than --dataset. Three tokenizers: characters
(nanoGPT's vocabulary order and meta.pkl), GPT-2's BPE, and a byte-level BPE trained on the text.
"""
import os
import pickle
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, TINY, one_line_error, run
from test_data import WITHOUT_TORCH
from tokens import UINT16_IDS, dataset_tokenizer, load_meta

PREPARE = os.path.join(ROOT, 'data', 'text', 'prepare.py')
TOKENIZERS = ('char', 'gpt2', 'bpe')
# Japanese in three scripts, emoji (one with a skin tone, a family joined by zero-width joiners, one with a
# variation selector), and a little English: every kind of character a user's text may hold
SENTENCES = ["吾輩は猫である。", "名前はまだ無い。", "どこで生れたかとんと見当がつかぬ。", "今日は良い天気ですね🙂",
             "寿司🍣とお茶🍵を頂きます。", "家族👨‍👩‍👧で旅行へ✈️", "いいね👍🏽", "カタカナ、ひらがな、漢字。",
             "Mixed with English and 123.", "\n"]
PROMPT = "吾輩は"
# more than the merges this small text has: every sentence ends up in few tokens, and the model learns them in a few
# steps, where with mostly single bytes it would string bytes into characters the text never had
BPE_VOCAB = 1000


def japanese_text(n_sentences=700, seed=0):
    rng = random.Random(seed)
    return ''.join(rng.choice(SENTENCES) for _ in range(n_sentences))


def prepare(*args, check=True, env_extra=None, cwd=None):
    """data/text/prepare.py in a python that cannot import torch (preparing text needs no training stack)."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', **(env_extra or {}))
    p = subprocess.run([sys.executable, '-c', WITHOUT_TORCH, PREPARE, *args], cwd=cwd or ROOT, capture_output=True,
                       text=True, timeout=120, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"prepare.py {' '.join(args)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p


@pytest.fixture(scope='module')
def names():
    """A maker of dataset names unique to this run; their data/<name> folders are removed afterwards."""
    made = []
    def make(label):
        made.append(f"test-text-{os.getpid()}-{label}")
        return made[-1]
    yield make
    for name in made:
        shutil.rmtree(os.path.join(ROOT, 'data', name), ignore_errors=True)


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp('corpus') / 'ja.txt'
    path.write_text(japanese_text(), encoding='utf-8')
    return path


@pytest.fixture(scope='module')
def datasets(corpus, names, gpt2_bpe_dir, tmp_path_factory):
    """The corpus prepared with each tokenizer (run from another folder than the repo's): {tokenizer: data_dir}."""
    elsewhere = tmp_path_factory.mktemp('cwd')
    dirs = {}
    for kind in TOKENIZERS:
        name = names(kind)
        extra = [f'--vocab_size={BPE_VOCAB}'] if kind == 'bpe' else []
        p = prepare(f'--input={corpus}', f'--name={name}', f'--tokenizer={kind}', *extra, cwd=elsewhere,
                    env_extra={'GPT2_BPE_DIR': gpt2_bpe_dir})
        assert 'tokens per character' in p.stdout and p.stderr == ''
        dirs[kind] = os.path.join(ROOT, 'data', name)
    return dirs


def tokenizer_of(data_dir):
    """dataset_tokenizer as sample.py calls it, for a model of the dataset's vocabulary."""
    meta = load_meta(data_dir)
    return dataset_tokenizer(data_dir, meta['vocab_size'] if meta else 50304)


def read_split(data_dir, split):
    return np.fromfile(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16).tolist()


def test_each_tokenizer_writes_only_what_decodes_its_tokens(datasets):
    assert sorted(os.listdir(datasets['char'])) == ['meta.json', 'meta.pkl', 'train.bin', 'val.bin']
    assert sorted(os.listdir(datasets['gpt2'])) == ['train.bin', 'val.bin'] # no meta: GPT-2 tokens, as data/shakespeare
    assert sorted(os.listdir(datasets['bpe'])) == ['meta.json', 'tokenizer.json', 'train.bin', 'val.bin']
    meta = load_meta(datasets['bpe'])
    assert meta['tokenizer'] == 'bpe' and 256 < meta['vocab_size'] <= BPE_VOCAB


def test_the_text_is_split_by_characters_before_it_is_tokenized(datasets, corpus, gpt2_bpe_dir, monkeypatch):
    """Every tokenizer's val.bin decodes to the same last 10% of the characters: bits per character compare."""
    monkeypatch.setenv('GPT2_BPE_DIR', gpt2_bpe_dir)
    text = corpus.read_text(encoding='utf-8')
    cut = int(len(text) * 0.9)
    for kind, data_dir in datasets.items():
        encode, decode = tokenizer_of(data_dir)
        assert decode(read_split(data_dir, 'train')) == text[:cut], kind
        assert decode(read_split(data_dir, 'val')) == text[cut:], kind
        assert decode(encode(text)) == text, kind # and any text of the alphabet goes there and back


def test_char_vocabulary_is_nanogpts(datasets, corpus):
    """Token ids in code point order, sorted(set(text)), and meta.pkl exactly the dict nanoGPT's sample.py reads."""
    text = corpus.read_text(encoding='utf-8')
    chars = sorted(set(text))
    with open(os.path.join(datasets['char'], 'meta.pkl'), 'rb') as f:
        meta = pickle.load(f)
    stoi = {c: i for i, c in enumerate(chars)}
    assert meta == {'vocab_size': len(chars), 'itos': dict(enumerate(chars)), 'stoi': stoi}
    assert '\u200d' in chars and '\ufe0f' in chars # an emoji sequence is its code points, each a token
    assert read_split(datasets['char'], 'train') == [stoi[c] for c in text[:int(len(text) * 0.9)]]


@pytest.mark.parametrize('kind', TOKENIZERS)
def test_train_then_sample_with_no_other_flag_than_the_dataset(kind, datasets, gpt2_bpe_dir, corpus, tmp_path):
    name = os.path.basename(datasets[kind])
    out = tmp_path / 'out'
    # enough steps, at a high learning rate, that the most likely next tokens are the text's own, even among GPT-2's
    # 50,304: an untrained byte-level model would string random bytes into characters the text never had. One
    # thread: a model this small gains nothing from two, which stall each other on a busy machine
    p = run('train.py', f'--dataset={name}', f'--out_dir={out}', *TINY, '--batch_size=8', '--max_iters=30',
            '--eval_interval=30', '--eval_iters=1', '--learning_rate=1e-2', '--warmup_iters=0', '--cpu_threads=1')
    assert 'saving checkpoint' in p.stdout
    p = run('sample.py', f'--out_dir={out}', f'--start={PROMPT}', '--num_samples=1', '--max_new_tokens=40',
            '--top_k=1', env_extra={'GPT2_BPE_DIR': gpt2_bpe_dir})
    sample = p.stdout[p.stdout.index(PROMPT):p.stdout.rindex('\n---------------')]
    alphabet = set(corpus.read_text(encoding='utf-8'))
    # a byte-level model may stop inside a character's bytes (or pair bytes no character has): U+FFFD stands for them
    allowed = alphabet if kind == 'char' else alphabet | {'\ufffd'}
    assert len(sample) > len(PROMPT) and set(sample) <= allowed, (kind, sample)


def test_a_folder_is_its_txt_files_in_order_each_ending_in_a_newline(tmp_path, names):
    folder = tmp_path / 'books'
    (folder / 'vol2').mkdir(parents=True)
    (folder / 'a.txt').write_text(japanese_text(300, seed=1), encoding='utf-8') # ends without a newline
    (folder / 'vol2' / 'b.txt').write_text('\ufeff' + japanese_text(300, seed=2) + '\n', encoding='utf-8') # a BOM
    (folder / 'notes.md').write_text('not a .txt file: left out', encoding='utf-8')
    name = names('folder')
    prepare(f'--input={folder}', f'--name={name}')
    data_dir = os.path.join(ROOT, 'data', name)
    encode, decode = tokenizer_of(data_dir)
    text = japanese_text(300, seed=1) + '\n' + japanese_text(300, seed=2) + '\n'
    assert decode(read_split(data_dir, 'train') + read_split(data_dir, 'val')) == text


def test_an_existing_dataset_is_replaced_only_with_force(tmp_path, names, corpus, gpt2_bpe_dir):
    name = names('force')
    data_dir = os.path.join(ROOT, 'data', name)
    prepare(f'--input={corpus}', f'--name={name}') # char: meta.pkl and meta.json
    before = {f: os.stat(os.path.join(data_dir, f)).st_mtime_ns for f in os.listdir(data_dir)}
    p = prepare(f'--input={corpus}', f'--name={name}', '--tokenizer=gpt2', check=False)
    assert 'already holds a dataset' in one_line_error(p) and '--force=True' in one_line_error(p)
    assert {f: os.stat(os.path.join(data_dir, f)).st_mtime_ns for f in os.listdir(data_dir)} == before
    prepare(f'--input={corpus}', f'--name={name}', '--tokenizer=gpt2', '--force=True',
            env_extra={'GPT2_BPE_DIR': gpt2_bpe_dir})
    # the char vocabulary is gone with the char tokens: train.py and sample.py see GPT-2 tokens
    assert sorted(os.listdir(data_dir)) == ['train.bin', 'val.bin']


def test_bad_input_is_one_error_line_and_nothing_is_written(tmp_path, names, corpus):
    def refused(*args, says, name=None):
        name = name or names('bad')
        p = prepare(*args, f'--name={name}', check=False)
        assert says in one_line_error(p), p.stderr
        assert not os.path.exists(os.path.join(ROOT, 'data', name))

    (tmp_path / 'image.png').write_bytes(b'\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR' + bytes(64))
    refused(f'--input={tmp_path / "image.png"}', says='binary')
    (tmp_path / 'latin1.txt').write_bytes('café'.encode('latin-1') * 100)
    refused(f'--input={tmp_path / "latin1.txt"}', says='is not UTF-8 text')
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'readme.md').write_text('no .txt here')
    refused(f'--input={tmp_path / "empty"}', says='holds no .txt file')
    refused(f'--input={tmp_path / "missing.txt"}', says='no such file or folder')
    for fraction in ('0', '1', '1.5', '-0.1'):
        refused(f'--input={corpus}', f'--val_fraction={fraction}', says='must be between 0 and 1')
    refused(f'--input={corpus}', '--tokenizer=bpe', f'--vocab_size={UINT16_IDS + 1}', says='must be in 257..65536')
    refused(f'--input={corpus}', '--vocab_size=1000', says='--vocab_size is for --tokenizer=bpe')
    refused(f'--input={corpus}', '--tokenizer=words', says="must be one of char, gpt2, bpe")
    # more distinct characters than uint16 has ids (surrogates are not characters UTF-8 can hold)
    surrogates = range(0xD800, 0xE000)
    many = ''.join(chr(c) for c in range(0x4E00, 0x4E00 + UINT16_IDS + 1 + len(surrogates)) if c not in surrogates)
    assert len(many) > UINT16_IDS
    (tmp_path / 'many.txt').write_text(many, encoding='utf-8')
    refused(f'--input={tmp_path / "many.txt"}', says='distinct characters, more than the 65,536')
    (tmp_path / 'short.txt').write_text(japanese_text(100), encoding='utf-8') # ~100 val characters
    refused(f'--input={tmp_path / "short.txt"}', says='the val split would hold')
    refused(f'--input={corpus}', says="a folder name under data/", name='../escape')
    # the repository's own datasets are never overwritten, not even with force
    p = prepare(f'--input={corpus}', '--name=shakespeare_char', '--force=True', check=False)
    assert "the repository's dataset" in one_line_error(p)


def test_a_bpe_dataset_missing_its_tokenizer_json_says_so(tmp_path):
    from common import UserError
    (tmp_path / 'meta.json').write_text('{"vocab_size": 500, "tokenizer": "bpe", "tokenizer_file": "tokenizer.json"}')
    with pytest.raises(UserError, match=r"tokenizer.json is missing: prepare the dataset again"):
        load_meta(tmp_path)
