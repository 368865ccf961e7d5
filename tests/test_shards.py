"""
Token shards (data/fineweb_edu/prepare.py, tokens.py's 'Token shards', train.py on a shard folder): how a corpus is
written, how training walks it in order, how a run resumes at the exact next batch, and the bad inputs refused.
"""
import json
import os
import re
import shutil

import numpy as np
import pytest
import torch

from conftest import CHAR_DIR, TINY, one_line_error, run
from test_ddp import torchrun
from test_train import losses
from tokens import (GPT2_EOT, GPT2_VOCAB_SIZE, SHARD_HEADER, ShardLoader, TokenStream, find_shards,
                    read_shard_header, write_shard)

SHARD_TOKENS = 1000 # small shards, so that a few training steps cross from one to the next
N_DOCS = 300 # paragraphs of Tiny Shakespeare: ~25 shards
# 4 rows of 32 tokens, 2 micro-batches: 256 tokens a step, so step 3 spans the first two train shards
STEPS = ['--gradient_accumulation_steps=2', '--eval_iters=2', '--log_interval=1']


def paragraphs():
    with open(os.path.join(CHAR_DIR, 'input.txt'), encoding='utf-8') as f:
        return [p for p in f.read().split('\n\n') if p.strip()][:N_DOCS]


@pytest.fixture(scope='module')
def corpus(tmp_path_factory, gpt2_bpe_dir):
    """The same documents as a .jsonl file and as a .parquet file, and the env that makes the tokenizer work offline."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    root = tmp_path_factory.mktemp('corpus')
    docs = paragraphs()
    with open(root / 'docs.jsonl', 'w', encoding='utf-8') as f:
        f.writelines(json.dumps({'text': d, 'id': i}) + '\n' for i, d in enumerate(docs))
    pq.write_table(pa.table({'text': docs}), root / 'docs.parquet', row_group_size=64)
    return root, docs, {'GPT2_BPE_DIR': gpt2_bpe_dir}


def prepare(corpus, out_dir, *args, check=True):
    root, _, env = corpus
    return run('data/fineweb_edu/prepare.py', f'--files={root / "docs.jsonl"}', f'--out_dir={out_dir}',
               f'--shard_tokens={SHARD_TOKENS}', '--num_proc=1', '--batch_docs=16', *args, env_extra=env, check=check)


def file_bytes(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder)) if name.endswith('.bin')}


@pytest.fixture(scope='module')
def shards(corpus, tmp_path_factory):
    """A shard folder written by prepare.py from the jsonl corpus."""
    out = tmp_path_factory.mktemp('data') / 'tiny_shards'
    prepare(corpus, out)
    return out


def test_prepare_writes_the_documents_in_order_val_first_with_checked_headers(corpus, shards, monkeypatch):
    from tokens import gpt2_encoding
    _, docs, env = corpus
    monkeypatch.setenv('GPT2_BPE_DIR', env['GPT2_BPE_DIR'])
    enc = gpt2_encoding()
    expected = np.concatenate([[GPT2_EOT] + enc.encode_ordinary(d) for d in docs])
    found = find_shards(shards)
    names = [os.path.basename(p) for p in found['val'] + found['train']]
    assert names[:3] == ['tiny_shards_val_000000.bin', 'tiny_shards_train_000001.bin', 'tiny_shards_train_000002.bin']
    headers = [read_shard_header(p) for p in found['val'] + found['train']]
    # every shard full but the last, which says that the stream ended there
    assert [h['tokens'] for h in headers[:-1]] == [SHARD_TOKENS] * (len(headers) - 1)
    assert [h['last'] for h in headers] == [False] * (len(headers) - 1) + [True]
    assert all(h['itemsize'] == 2 and h['vocab_size'] == GPT2_VOCAB_SIZE for h in headers)
    assert os.path.getsize(found['val'][0]) == SHARD_HEADER.itemsize + 2 * SHARD_TOKENS
    # val then train, back to back, is the corpus: each document is <|endoftext|> and its tokens
    stream = np.concatenate([TokenStream(found['val']).read(0, SHARD_TOKENS),
                             TokenStream(found['train']).read(0, len(TokenStream(found['train'])))])
    assert np.array_equal(stream, expected)


def test_parquet_gives_the_same_shards_as_jsonl(corpus, shards, tmp_path):
    root, _, env = corpus
    run('data/fineweb_edu/prepare.py', f'--files={root / "docs.parquet"}', f'--out_dir={tmp_path / "tiny_shards"}',
        f'--shard_tokens={SHARD_TOKENS}', '--num_proc=2', env_extra=env)
    assert file_bytes(tmp_path / 'tiny_shards') == file_bytes(shards)


def test_an_interrupted_prepare_resumes_after_its_last_complete_shard(corpus, shards, tmp_path):
    """What a killed run leaves (a prefix of the shards: each is written atomically) is completed to the same bytes."""
    out = tmp_path / 'tiny_shards'
    shutil.copytree(shards, out)
    names = [os.path.basename(p) for p in find_shards(out)['val'] + find_shards(out)['train']] # stream order
    for name in names[7:]: # val and 6 train shards survived
        os.remove(out / name)
    p = prepare(corpus, out)
    doc, offset = (read_shard_header(out / names[6])[k] for k in ('next_doc', 'next_offset'))
    assert f"7 shard(s) already written: resuming at document {doc:,}, token {offset:,}" in p.stdout and doc > 0
    assert file_bytes(out) == file_bytes(shards)
    stamp = os.path.getmtime(out / names[0])
    assert 'shards are already written' in prepare(corpus, out).stdout and os.path.getmtime(out / names[0]) == stamp
    # other settings on the same folder would mix two streams: refused, nothing touched
    line = one_line_error(prepare(corpus, out, '--shard_tokens=999', check=False))
    assert 'shard_tokens=1000' in line and file_bytes(out) == file_bytes(shards)


# -----------------------------------------------------------------------------
# the loader, on a stream of ids 0, 1, 2...: where each batch comes from is plain to see

def counting_stream(folder, sizes):
    start = 0
    for i, n in enumerate(sizes):
        write_shard(folder / f'c_train_{i + 1:06d}.bin', np.arange(start, start + n), GPT2_VOCAB_SIZE)
        start += n
    return TokenStream(find_shards(folder)['train'])


def test_the_loader_walks_the_stream_in_order_without_replacement_then_starts_a_new_epoch(tmp_path):
    stream = counting_stream(tmp_path, [50, 70, 40]) # 160 ids
    loader = ShardLoader(stream, batch_size=2, block_size=4, n_micro=3) # 24 ids a step: 6 steps an epoch
    seen = []
    for step in range(6):
        for k in range(3): # micro-batch k: rank r, micro-step m of a rank with 3 // W micro-steps is k = r * 3 // W + m
            batch = loader.micro_batch(step, k)
            assert batch.shape == (2, 5) and np.array_equal(batch[:, 1:], batch[:, :-1] + 1) # targets: the next ids
            seen.extend(batch[:, :-1].ravel())
    assert seen == list(range(144)) # every id once, in order: ranks and micro-steps never share a window
    assert loader.position(6) == (0, 1) and loader.micro_batch(6, 0)[0, 0] == 0 # the 16-id tail is dropped
    assert loader.state(3) == dict(shard=1, offset=22, epoch=0, train_tokens=160, step_tokens=24)


def test_a_restored_loader_continues_at_the_saved_position_whatever_the_batch(tmp_path):
    stream = counting_stream(tmp_path, [50, 70, 40])
    loader = ShardLoader(stream, 2, 4, 3)
    again = ShardLoader(stream, 2, 4, 3)
    again.restore(loader.state(4), 4, tmp_path)
    assert all(np.array_equal(loader.micro_batch(s, k), again.micro_batch(s, k))
               for s in range(4, 20) for k in range(3))
    # a resume with another batch shape goes on from the same token: 96 here, 12 ids a step now
    smaller = ShardLoader(stream, 1, 4, 3)
    smaller.restore(loader.state(4), 4, tmp_path)
    assert smaller.micro_batch(4, 0)[0, 0] == 96 and smaller.micro_batch(5, 0)[0, 0] == 108
    assert smaller.position(8) == (144, 0) and smaller.position(9) == (0, 1)


# -----------------------------------------------------------------------------
# train.py on a shard folder

def train(shard_dir, out_dir, *args, check=True):
    return run('train.py', f'--dataset={shard_dir}', f'--out_dir={out_dir}', *TINY, *STEPS, *args, check=check)


@pytest.fixture(scope='module')
def runs(shards, tmp_path_factory):
    """6 steps straight (and the full val loss at the end), and 3 steps that stop: (root, stdout of the 6 steps)."""
    root = tmp_path_factory.mktemp('runs')
    straight = train(shards, root / 'straight', '--max_iters=6', '--eval_interval=3', '--full_eval=True')
    train(shards, root / 'stopped', '--max_iters=3', '--eval_interval=3')
    return root, straight.stdout


def test_a_resumed_run_continues_at_the_exact_next_batch_across_a_shard_boundary(shards, runs, tmp_path):
    root, straight = runs
    shutil.copytree(root / 'stopped', tmp_path / 'b')
    ckpt = torch.load(tmp_path / 'b' / 'ckpt.pt', weights_only=True)
    # step 3 begins at token 768 of the train stream: shard 0 (train_000001), offset 768; it ends in shard 1
    assert ckpt['loader'] == dict(shard=0, offset=768, epoch=0, train_tokens=ckpt['loader']['train_tokens'],
                                  step_tokens=256)
    resumed = train(shards, tmp_path / 'b', '--max_iters=6', '--eval_interval=3', '--init_from=resume')
    assert losses(resumed.stdout) == {i: losses(straight)[i] for i in (3, 4, 5)}
    a, b = (torch.load(d / 'ckpt.pt', weights_only=True) for d in (root / 'straight', tmp_path / 'b'))
    assert all(torch.equal(a['model'][k], b['model'][k]) for k in a['model']) # bit-exact
    assert a['loader'] == b['loader'] and b['loader']['shard'] == 1


def test_two_gloo_ranks_resume_bit_exactly(shards, tmp_path):
    """Each rank reads its own micro-batch of the step; stopped and resumed, they end where an unstopped run ends."""
    straight = torchrun(tmp_path / 'a', f'--dataset={shards}', *STEPS, '--max_iters=6', '--eval_interval=3')
    torchrun(tmp_path / 'b', f'--dataset={shards}', *STEPS, '--max_iters=3', '--eval_interval=3')
    resumed = torchrun(tmp_path / 'b', f'--dataset={shards}', *STEPS, '--max_iters=6', '--eval_interval=3',
                       '--init_from=resume')
    assert losses(resumed.stdout) == {i: losses(straight.stdout)[i] for i in (3, 4, 5)}
    a, b = (torch.load(tmp_path / d / 'ckpt.pt', weights_only=True) for d in 'ab')
    assert all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])


def test_full_val_loss_is_the_loss_over_every_block_of_the_val_shard(shards, runs):
    from model import GPT
    root, straight = runs
    model, _ = GPT.from_checkpoint(str(root / 'straight' / 'ckpt.pt'), 'cpu')
    val = TokenStream(find_shards(shards)['val'])
    block = model.config.block_size
    n = (len(val) - 1) // block
    ids = torch.from_numpy(val.read(0, n * block + 1).astype(np.int64))
    x, y = ids[:-1].view(n, block), ids[1:].view(n, block)
    with torch.no_grad():
        expected = model(x, y)[1].item() # every block the same length: the mean over blocks is the mean over all
    assert float(re.search(r'full val loss ([\d.]+)', straight)[1]) == pytest.approx(expected, abs=1e-4)


# -----------------------------------------------------------------------------
# bad input: one 'error: ...' line, and nothing lost

def broken_copy(shards, tmp_path, damage):
    bad = tmp_path / 'bad_shards'
    shutil.copytree(shards, bad)
    damage(next(bad.glob('*_train_000002.bin')))
    return bad


def overwrite_magic(path):
    with open(path, 'r+b') as f:
        f.write(b'NOTASHRD')


def truncate(path):
    os.truncate(path, os.path.getsize(path) - 7)


def uint32_ids(path):
    h = read_shard_header(path)
    ids = np.fromfile(path, np.uint16, offset=SHARD_HEADER.itemsize)
    write_shard(path, ids, h['vocab_size'], dtype=np.uint32)


@pytest.mark.parametrize('damage, message', [
    (overwrite_magic, 'is not a token shard'),
    (truncate, 'it is truncated'),
    (uint32_ids, 'disagree on their token type'),
])
def test_a_damaged_or_mismatched_shard_is_a_one_line_error(shards, tmp_path, damage, message):
    bad = broken_copy(shards, tmp_path, damage)
    line = one_line_error(train(bad, tmp_path / 'out', '--max_iters=1', check=False))
    assert message in line and '_train_000002.bin' in line and not (tmp_path / 'out' / 'ckpt.pt').exists()


def test_a_folder_without_shards_is_a_one_line_error(shards, tmp_path):
    (tmp_path / 'empty').mkdir()
    assert 'train.bin' in one_line_error(train(tmp_path / 'empty', tmp_path / 'out', check=False))
    only_val = tmp_path / 'only_val'
    only_val.mkdir()
    shutil.copy(find_shards(shards)['val'][0], only_val)
    assert 'has no train shards' in one_line_error(train(only_val, tmp_path / 'out', check=False))


def test_a_model_vocabulary_the_shards_do_not_fit_is_a_one_line_error(shards, tmp_path):
    """uint16 ids cannot come from a tokenizer of more than 65,536 tokens; a model must cover the shards' vocabulary."""
    for vocab_size, message in ((70000, 'hold uint16 ids, but the model has vocab_size 70,000'),
                                (1000, 'use a model with at least that many')):
        folder = tmp_path / f'vocab{vocab_size}'
        shutil.copytree(shards, folder)
        (folder / 'meta.json').write_text(json.dumps({'vocab_size': vocab_size, 'itos': [f'<{i}>' for i in
                                                                                       range(vocab_size)]}))
        assert message in one_line_error(train(folder, tmp_path / 'out', check=False))


def test_resuming_with_another_dataset_is_a_one_line_error_and_keeps_the_checkpoint(shards, runs, tmp_path):
    other = tmp_path / 'other_shards'
    shutil.copytree(shards, other)
    shutil.copytree(runs[0] / 'stopped', tmp_path / 'out')
    before = (tmp_path / 'out' / 'ckpt.pt').read_bytes()
    line = one_line_error(train(other, tmp_path / 'out', '--max_iters=2', '--init_from=resume', check=False))
    assert f"trained on dataset '{shards}', not '{other}'" in line
    assert (tmp_path / 'out' / 'ckpt.pt').read_bytes() == before
