"""
The datasets: Tiny Shakespeare ships in the repo, and the prepare scripts turn it into nanoGPT's exact files,
without torch (preparing data should not need the training stack) and, given the BPE files, offline.
"""
import hashlib
import json
import os
import pickle
import subprocess
import sys

import numpy as np

from conftest import CHAR_DIR, ROOT
from test_gpt2 import BPE_DIR, NO_NETWORK
from tokens import GPT2_EOT, TINY_SHAKESPEARE_SHA256, TRAIN_FRACTION, gpt2_encoding

INPUT = os.path.join(CHAR_DIR, 'input.txt')
CHAR_VOCAB = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# python -c PROGRAM SCRIPT: a finder ahead of all others refuses torch and its submodules, then SCRIPT runs as
# `python SCRIPT` runs it. Anything the script imports that needs torch fails with ImportError.
WITHOUT_TORCH = """
import runpy, sys
class RefuseTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'torch':
            raise ImportError(f"import of {name} refused: this script must run without torch")
sys.meta_path.insert(0, RefuseTorch())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def run_without_torch(script, cwd, env_extra=None):
    """Run a script (a path, or relative to the repo root) in a python that cannot import torch."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', **(env_extra or {}))
    return subprocess.run([sys.executable, '-c', WITHOUT_TORCH, os.path.join(ROOT, script)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)


def prepare_without_torch(data_dir, cwd, env_extra=None):
    """
    Run data_dir's prepare.py without torch (from cwd, not the repo root); check that it succeeded, replaced
    train.bin and val.bin, and left nothing in data_dir but its usual outputs. Returns (train ids, val ids).
    """
    outputs = {'train.bin', 'val.bin', 'meta.pkl', 'meta.json'}
    def stat(name):
        path = os.path.join(data_dir, name)
        return os.stat(path) if os.path.exists(path) else None
    before = {name: stat(name) for name in ('train.bin', 'val.bin')}
    listed = set(os.listdir(data_dir))
    p = run_without_torch(os.path.join(data_dir, 'prepare.py'), cwd, env_extra)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    for name, old in before.items(): # written now: a new file (an atomic write replaces the inode), not a leftover
        new = stat(name)
        assert new is not None and (old is None or (new.st_ino, new.st_mtime_ns) != (old.st_ino, old.st_mtime_ns)), name
    assert set(os.listdir(data_dir)) - listed <= outputs # no temp files, nothing else
    read = lambda split: np.fromfile(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16)
    return read('train'), read('val')


def test_tiny_shakespeare_ships_in_the_repo():
    assert sha256(INPUT) == '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed' == TINY_SHAKESPEARE_SHA256
    with open(INPUT, encoding='utf-8') as f:
        assert len(f.read()) == 1_115_394


def test_the_torch_blocker_really_refuses_torch(tmp_path):
    script = tmp_path / 'needs_torch.py'
    script.write_text('import numpy\nimport torch.nn\n')
    p = run_without_torch(str(script), tmp_path)
    assert p.returncode != 0 and 'import of torch refused' in p.stderr


def test_prepare_char_needs_no_torch_and_gives_nanogpts_token_counts(tmp_path):
    train_ids, val_ids = prepare_without_torch(CHAR_DIR, tmp_path)
    assert (len(train_ids), len(val_ids)) == (1_003_854, 111_540)
    assert ''.join(CHAR_VOCAB[i] for i in train_ids[:14]) == 'First Citizen:'


def test_prepare_shakespeare_bpe_needs_no_torch_nor_the_network_and_gives_nanogpts_token_counts(
        tmp_path, gpt2_bpe_dir, monkeypatch):
    empty_cache = tmp_path / 'tiktoken-cache'
    empty_cache.mkdir()
    offline = dict(NO_NETWORK, GPT2_BPE_DIR=gpt2_bpe_dir, TIKTOKEN_CACHE_DIR=str(empty_cache))
    train_ids, val_ids = prepare_without_torch(BPE_DIR, tmp_path, offline)
    assert (len(train_ids), len(val_ids)) == (301_966, 36_059)
    # each split is exactly its share of the text, encoded on its own, with no <|endoftext|> in between
    monkeypatch.setenv('GPT2_BPE_DIR', gpt2_bpe_dir)
    enc = gpt2_encoding()
    with open(INPUT, encoding='utf-8') as f:
        text = f.read()
    cut = int(len(text) * TRAIN_FRACTION)
    assert GPT2_EOT not in train_ids and GPT2_EOT not in val_ids
    assert enc.decode(train_ids.tolist()) == text[:cut] and enc.decode(val_ids.tolist()) == text[cut:]


def test_prepare_char_writes_nanogpts_exact_files_and_a_meta_json(char_data):
    with open(INPUT, encoding='utf-8') as f:
        text = f.read()
    # nanoGPT's data/shakespeare_char/prepare.py, as it builds and pickles its meta
    chars = sorted(list(set(text)))
    nanogpt_meta = {'vocab_size': len(chars), 'itos': {i: ch for i, ch in enumerate(chars)},
                    'stoi': {ch: i for i, ch in enumerate(chars)}}
    with open(os.path.join(char_data, 'meta.pkl'), 'rb') as f:
        raw = f.read()
    meta = pickle.loads(raw)
    assert meta == nanogpt_meta and list(meta) == ['vocab_size', 'itos', 'stoi']
    assert meta['vocab_size'] == 65 and ''.join(meta['itos'][i] for i in range(65)) == CHAR_VOCAB
    assert raw == pickle.dumps(nanogpt_meta) # the same bytes, not only the same dict
    # the bytes of nanoGPT's own output for the canonical input.txt
    assert sha256(os.path.join(char_data, 'train.bin')) == '6ec305602a99ac2802745a134e1f5e33e2231b4855525b00b9aebb730ac2626f'
    assert sha256(os.path.join(char_data, 'val.bin')) == 'd37d30cc0c8327c270d493299c3dca54135f6d5f1c9ef60cda78076e311204b1'
    assert sha256(os.path.join(char_data, 'meta.pkl')) == '6ee5a37533af83b67fcbe6b93705fde9e15e78bafe895f54b2cb2cb32534526c'
    # and the same vocabulary as JSON, which load_meta reads first (a pickle can run code when loaded)
    with open(os.path.join(char_data, 'meta.json'), encoding='utf-8') as f:
        assert json.load(f) == {'vocab_size': 65, 'itos': list(CHAR_VOCAB)}
