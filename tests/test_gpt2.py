"""GPT-2 tokens and weights: the tokenizer offline, the BPE datasets, Hugging Face weights in and out, fine-tuning."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, one_line_error, run
from checkpoint import save_checkpoint
from common import UserError
from model import GPT, GPTConfig
from tokens import GPT2_BPE_FILES, gpt2_encoding, write_token_shards

BPE_DIR = os.path.join(ROOT, 'data', 'shakespeare')
# a proxy nobody listens on: any download attempt fails at once instead of reaching the internet
NO_NETWORK = {'HTTPS_PROXY': 'http://127.0.0.1:9', 'HTTP_PROXY': 'http://127.0.0.1:9', 'NO_PROXY': '',
              'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1'}


@pytest.fixture(scope='session')
def bpe_cache(tmp_path_factory, gpt2_bpe_dir):
    """A tiktoken cache holding GPT-2's files from ../shared under the names tiktoken looks for, set for the session."""
    cache = tmp_path_factory.mktemp('tiktoken-cache')
    for name, (url, _) in GPT2_BPE_FILES.items():
        shutil.copy(os.path.join(gpt2_bpe_dir, name), cache / hashlib.sha1(url.encode()).hexdigest())
    old = os.environ.get('TIKTOKEN_CACHE_DIR')
    os.environ['TIKTOKEN_CACHE_DIR'] = str(cache) # the scripts run as subprocesses inherit it
    yield str(cache)
    if old is None:
        os.environ.pop('TIKTOKEN_CACHE_DIR')
    else:
        os.environ['TIKTOKEN_CACHE_DIR'] = old


@pytest.fixture(scope='session')
def bpe_data(bpe_cache):
    """data/shakespeare prepared by its prepare.py from the input.txt that ships in data/shakespeare_char."""
    p = run('data/shakespeare/prepare.py', check=False)
    if p.returncode != 0:
        pytest.fail(f"Tiny Shakespeare could not be prepared as GPT-2 tokens: python data/shakespeare/prepare.py "
                    f"exited with {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}", pytrace=False)
    return BPE_DIR


def tiny_hf(path, vocab_size=50257, seed=0, scale=1.0, **kwargs):
    """A random GPT-2 of 2 layers, 32 wide, saved with save_pretrained; scale > 1 makes its activations realistic."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=vocab_size, **kwargs))
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if '.ln_' not in name:
                p.mul_(scale)
    hf.save_pretrained(path)
    return str(path)


@pytest.fixture(scope='session')
def hf_dir(tmp_path_factory):
    return tiny_hf(tmp_path_factory.mktemp('tiny-gpt2'))


def all_logits(model, idx):
    with torch.no_grad():
        logits, _ = model(idx, idx) # with targets the model returns every position's logits
    return logits


def hf_logits(path, idx):
    from transformers import GPT2LMHeadModel
    hf = GPT2LMHeadModel.from_pretrained(path).eval()
    with torch.no_grad():
        return hf(idx).logits


def py(code, env):
    """Run python -c code in the repo root with env added to the environment."""
    return subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **env))


ENCODE = "import common, tokens; common.exit_on_user_error(); e = tokens.gpt2_encoding(); print(e.encode('Hello world'), e.eot_token)"

# -----------------------------------------------------------------------------
# the tokenizer

def test_gpt2_encoding_from_a_tiktoken_cache(bpe_cache):
    enc = gpt2_encoding()
    assert enc.encode_ordinary("Hello world") == [15496, 995]
    assert enc.encode("<|endoftext|>", allowed_special={"<|endoftext|>"}) == [50256] and enc.eot_token == 50256
    assert enc.encode_ordinary("<|endoftext|>") != [50256] # in ordinary text it is just characters


def test_gpt2_bpe_dir_works_offline_and_is_never_written_to(tmp_path, gpt2_bpe_dir):
    empty_cache = tmp_path / 'cache'
    empty_cache.mkdir()
    before = sorted(os.listdir(gpt2_bpe_dir))
    p = py(ENCODE, dict(NO_NETWORK, GPT2_BPE_DIR=gpt2_bpe_dir, TIKTOKEN_CACHE_DIR=str(empty_cache)))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == '[15496, 995] 50256'
    assert sorted(os.listdir(gpt2_bpe_dir)) == before and not os.listdir(empty_cache)


def test_a_missing_or_wrong_tokenizer_copy_is_a_one_line_error_that_says_how_to_fix_it(tmp_path, gpt2_bpe_dir):
    empty = tmp_path / 'empty'
    empty.mkdir()
    # no copy anywhere and no network
    msg = one_line_error(py(ENCODE, dict(NO_NETWORK, TIKTOKEN_CACHE_DIR=str(empty))))
    assert 'GPT2_BPE_DIR' in msg and 'encoder.json' in msg
    # GPT2_BPE_DIR without the files
    msg = one_line_error(py(ENCODE, dict(NO_NETWORK, GPT2_BPE_DIR=str(empty), TIKTOKEN_CACHE_DIR=str(empty))))
    assert 'has no encoder.json' in msg
    # a damaged copy
    bad = tmp_path / 'bad'
    bad.mkdir()
    shutil.copy(os.path.join(gpt2_bpe_dir, 'encoder.json'), bad / 'encoder.json')
    (bad / 'vocab.bpe').write_text('#version: 0.2\nnot the merges\n')
    msg = one_line_error(py(ENCODE, dict(NO_NETWORK, GPT2_BPE_DIR=str(bad), TIKTOKEN_CACHE_DIR=str(empty))))
    assert 'vocab.bpe' in msg and 'sha256' in msg

# -----------------------------------------------------------------------------
# datasets

def test_prepare_openwebtext_from_local_files_writes_exactly_tiktokens_stream(tmp_path, bpe_cache):
    corpus = tmp_path / 'corpus'
    corpus.mkdir()
    docs = ["First document.\nIt has two lines.\n", "Ünïcödé and emoji 🙂 survive.\n",
            "A literal <|endoftext|> inside a text is ordinary characters.\n"]
    for i, d in enumerate(docs):
        (corpus / f'{i}.txt').write_text(d, encoding='utf-8')
    records = [f"json record number {i}, saying something {'long ' * i}" for i in range(9)]
    lines = [json.dumps({'text': r}) for r in records] + [json.dumps({'text': None})] * 2 # null records are dropped
    (tmp_path / 'more.jsonl').write_text(''.join(line + '\n' for line in lines), encoding='utf-8')
    docs += records
    out = tmp_path / 'out'
    p = run('data/openwebtext/prepare.py', f'--files={corpus}/*.txt,{tmp_path / "more.jsonl"}', f'--out_dir={out}',
            '--num_proc=2', '--n_shards=3', env_extra=dict(NO_NETWORK, HF_DATASETS_CACHE=str(tmp_path / 'hf')))
    assert re.search(r'tokenized and wrote [\d,]+ tokens in [\d.]+s: [\d,]+ tokens/s', p.stdout)
    assert "dropped 2 record(s) whose 'text' is null" in p.stdout
    enc = gpt2_encoding()
    expected = sorted(enc.encode_ordinary(d) + [50256] for d in docs)
    got = {}
    for split in ('train', 'val'):
        ids = np.fromfile(out / f'{split}.bin', dtype=np.uint16).tolist()
        assert ids[-1] == 50256 # every document, the last one included, ends with <|endoftext|>
        cuts = [i for i, t in enumerate(ids) if t == 50256]
        got[split] = [ids[a + 1:b + 1] for a, b in zip([-1] + cuts[:-1], cuts)]
    assert len(got['val']) == 1 and len(got['train']) == len(docs) - 1 # 0.05% of 12 documents rounds up to one
    assert sorted(got['train'] + got['val']) == expected # the documents, shuffled, each exactly as tiktoken encodes it


def test_prepare_openwebtext_bad_files_give_one_line_errors(tmp_path, bpe_cache):
    p = run('data/openwebtext/prepare.py', f'--files={tmp_path / "missing"}/*.txt', f'--out_dir={tmp_path}', check=False)
    assert 'matches no file' in one_line_error(p)
    (tmp_path / 'a.csv').write_text('x\n')
    p = run('data/openwebtext/prepare.py', f'--files={tmp_path / "a.csv"}', f'--out_dir={tmp_path}', check=False)
    assert 'not .txt, .json or .jsonl' in one_line_error(p)
    (tmp_path / 'latin1.txt').write_bytes('café'.encode('latin-1'))
    p = run('data/openwebtext/prepare.py', f'--files={tmp_path / "latin1.txt"}', f'--out_dir={tmp_path}', check=False,
            env_extra={'HF_DATASETS_DISABLE_PROGRESS_BARS': '1'}) # the loader's progress bar would be more stderr lines
    assert 'UnicodeDecodeError' in one_line_error(p) and 'give UTF-8 text' in one_line_error(p)
    (tmp_path / 'numbers.jsonl').write_text('{"text": 1}\n{"text": 2}\n')
    p = run('data/openwebtext/prepare.py', f'--files={tmp_path / "numbers.jsonl"}', f'--out_dir={tmp_path}', check=False,
            env_extra={'HF_DATASETS_DISABLE_PROGRESS_BARS': '1', 'HF_DATASETS_CACHE': str(tmp_path / 'hf')})
    assert "the json field 'text' holds int64, not text" in one_line_error(p)


def test_token_files_are_written_in_shards_and_refuse_ids_beyond_uint16(tmp_path):
    from datasets import Dataset
    rows = [[1, 2, 3], [4], [5, 6], [65535, 7]]
    dset = Dataset.from_dict({'ids': rows, 'len': [len(r) for r in rows]})
    path = str(tmp_path / 'train.bin')
    assert write_token_shards(dset, path, n_shards=3, min_shard_tokens=1) == 8
    assert np.fromfile(path, dtype=np.uint16).tolist() == [1, 2, 3, 4, 5, 6, 65535, 7]
    big = Dataset.from_dict({'ids': [[1], [65536]], 'len': [1, 1]})
    with pytest.raises(UserError, match='65536 does not fit in uint16'):
        write_token_shards(big, str(tmp_path / 'val.bin'), n_shards=2, min_shard_tokens=1)
    assert sorted(os.listdir(tmp_path)) == ['train.bin'] # nothing half-written left behind

# -----------------------------------------------------------------------------
# Hugging Face weights in

def test_from_pretrained_gives_transformers_logits(hf_dir):
    model = GPT.from_pretrained(hf_dir).eval()
    cfg = model.config
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.vocab_size, cfg.bias) == (2, 2, 32, 64, 50257, True)
    idx = torch.randint(0, 50257, (2, 40), generator=torch.Generator().manual_seed(0))
    assert (all_logits(model, idx) - hf_logits(hf_dir, idx)).abs().max() < 1e-5


@pytest.mark.parametrize('activation, approximate', [('gelu_new', 'tanh'), ('gelu', 'none')])
def test_from_pretrained_maps_every_weight_and_the_gelu_exactly(tmp_path, activation, approximate):
    """
    Weights big enough to make every layer nonlinear, so a wrong GELU would show: GPT-2's own
    tanh approximation ('gelu_new', what OpenAI's weights were trained with) and the exact one.
    """
    path = tiny_hf(tmp_path, vocab_size=96, scale=5.0, activation_function=activation)
    model = GPT.from_pretrained(path, dict(dropout=0.1)).eval()
    assert model.config.dropout == 0.1 and model.config.gelu_approximate == approximate
    idx = torch.randint(0, 96, (2, 64), generator=torch.Generator().manual_seed(1))
    ours, theirs = all_logits(model, idx), hf_logits(path, idx)
    assert theirs.abs().max() > 1 and (ours - theirs).abs().max() < 1e-5


def test_from_pretrained_rejects_what_it_cannot_load(tmp_path):
    with pytest.raises(UserError, match='neither a GPT-2 model'):
        GPT.from_pretrained('gpt3')
    with pytest.raises(UserError, match='has no config.json'):
        GPT.from_pretrained(str(tmp_path))
    (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'bert', 'hidden_size': 32}))
    with pytest.raises(UserError, match="'bert' model, not GPT-2 or Llama"):
        GPT.from_pretrained(str(tmp_path))
    (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'gpt2', 'activation_function': 'relu'}))
    with pytest.raises(UserError, match="cannot reproduce: activation_function='relu'"):
        GPT.from_pretrained(str(tmp_path))
    with pytest.raises(UserError, match='only dropout'):
        GPT.from_pretrained('gpt2', dict(n_layer=3))


def test_train_and_sample_reject_unknown_weights_with_one_line(tmp_path, bpe_data):
    (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'bert'}))
    common = ['--dataset=shakespeare', '--device=cpu', '--compile=False', f'--out_dir={tmp_path / "out"}']
    assert 'gpt2-medium' in one_line_error(run('train.py', '--init_from=gpt-7', *common, check=False))
    assert 'not GPT-2' in one_line_error(run('train.py', f'--init_from={tmp_path}', *common, check=False))
    assert 'not GPT-2' in one_line_error(run('sample.py', f'--init_from={tmp_path}', '--device=cpu', check=False))
    assert 'not supported' in one_line_error(run('sample.py', '--init_from=gpt-7', check=False))


def hf_cache_holding(home, name, model_dir):
    """A Hugging Face cache under home in which the model 'name' is model_dir's files (as a download leaves them)."""
    commit = '0' * 40
    repo = home / 'hub' / f'models--{name}'
    shutil.copytree(model_dir, repo / 'snapshots' / commit)
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text(commit)
    return home


def test_gpt2_weights_come_from_the_cache_without_the_network(tmp_path, hf_dir, bpe_cache):
    # no HF_HUB_OFFLINE: a user who downloaded GPT-2 once and is now offline. The tiny model stands in for 'gpt2'.
    offline = dict(NO_NETWORK, HF_HOME=str(hf_cache_holding(tmp_path / 'hf', 'gpt2', hf_dir)))
    offline.pop('HF_HUB_OFFLINE')
    p = run('sample.py', '--init_from=gpt2', '--device=cpu', '--num_samples=1', '--max_new_tokens=3', '--start=Hi',
            env_extra=offline)
    assert 'loading weights from pretrained gpt: gpt2 (2 layers' in p.stdout
    # and huggingface_hub's warnings about failed requests stay out of the output
    assert 'thrown while requesting' not in p.stderr


def test_gpt2_weights_with_no_network_and_no_cache_is_one_line_that_says_what_to_do(monkeypatch, caplog):
    import logging
    from transformers import GPT2LMHeadModel
    def unreachable(name, **kwargs): # what transformers does offline: huggingface_hub warns on each try, then it raises
        logging.getLogger('huggingface_hub.utils._http').warning("'[Errno -2]' thrown while requesting HEAD %s", name)
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")
    monkeypatch.setattr(GPT2LMHeadModel, 'from_pretrained', unreachable)
    hub_level = logging.getLogger('huggingface_hub').level
    with caplog.at_level(logging.WARNING), pytest.raises(UserError, match="could not load GPT-2 weights 'gpt2'.*online once"):
        GPT.from_pretrained('gpt2')
    # the warnings are dropped during the load (the error says what to do), and only then
    assert not [r for r in caplog.records if r.name.startswith('huggingface_hub')]
    assert logging.getLogger('huggingface_hub').level == hub_level

# -----------------------------------------------------------------------------
# fine-tuning, and weights out

def test_finetune_a_hf_gpt2_dir_with_train_py_then_sample(tmp_path, hf_dir, bpe_data):
    out = tmp_path / 'out'
    p = run('train.py', f'--init_from={hf_dir}', '--dataset=shakespeare', f'--out_dir={out}', '--block_size=16',
            '--batch_size=4', '--gradient_accumulation_steps=1', '--max_iters=15', '--eval_interval=15', '--eval_iters=2',
            '--learning_rate=1e-2', '--decay_lr=False', '--compile=False', '--device=cpu', '--dtype=float32',
            env_extra={'OMP_NUM_THREADS': '1'}) # a model this small runs fastest on one thread
    assert 'Initializing from GPT-2 weights' in p.stdout
    loss = [float(x) for x in re.findall(r'^iter \d+: loss ([\d.]+)', p.stdout, re.M)]
    assert len(loss) == 15 and np.mean(loss[-3:]) < loss[0] - 1.0, loss # from ~ln(50257) = 10.8 it drops fast
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    # model_args as nanoGPT has them; GPT-2's tanh GELU is stored beside them and comes back on loading
    assert ckpt['model_args'] == dict(n_layer=2, n_head=2, n_embd=32, block_size=16, bias=True, vocab_size=50257, dropout=0.0)
    assert ckpt['model_options'] == {'gelu_approximate': 'tanh'}
    assert GPT.from_checkpoint(str(out / 'ckpt.pt'))[0].config.gelu_approximate == 'tanh'
    # earlier versions kept it beside model_args: such checkpoints still load with the GELU they were trained with
    legacy = {k: v for k, v in ckpt.items() if k != 'model_options'}
    torch.save(dict(legacy, gelu_approximate='tanh'), str(out / 'legacy.pt'))
    assert GPT.from_checkpoint(str(out / 'legacy.pt'))[0].config.gelu_approximate == 'tanh'
    run('model.py', 'export_hf', str(out), str(tmp_path / 'hf'))
    assert json.loads((tmp_path / 'hf' / 'config.json').read_text())['activation_function'] == 'gelu_new'
    p = run('sample.py', f'--out_dir={out}', '--start=ROMEO:', '--num_samples=1', '--max_new_tokens=8', '--device=cpu')
    assert 'No meta.pkl found' in p.stdout and 'ROMEO:' in p.stdout # shakespeare has no meta.pkl: GPT-2 tokens
    p = run('sample.py', f'--init_from={hf_dir}', '--start=Hello', '--num_samples=1', '--max_new_tokens=8', '--device=cpu')
    assert p.stdout.count('Hello') >= 1


def test_finetuning_local_weights_needs_a_dataset_of_their_vocabulary(tmp_path, bpe_data, char_data):
    """A local directory may hold a char-level model (export_hf of one): it fine-tunes on its own char data only."""
    char_hf = tiny_hf(tmp_path / 'char-hf', vocab_size=65, bos_token_id=0, eos_token_id=0) # GPT-2's 50256 is out of range
    args = [f'--init_from={char_hf}', f'--out_dir={tmp_path / "out"}', '--block_size=16', '--batch_size=2',
            '--max_iters=2', '--eval_interval=2', '--eval_iters=1', '--compile=False', '--device=cpu']
    p = run('train.py', *args, '--dataset=shakespeare', check=False) # GPT-2 token ids: 65 embeddings are too few
    assert "its tokens are GPT-2's (50,257 ids), but the weights" in one_line_error(p)
    p = run('train.py', *args, '--dataset=shakespeare_char')
    assert 'Initializing from GPT-2 weights' in p.stdout and 'iter 1:' in p.stdout


def test_export_hf_gives_transformers_the_same_logits(tmp_path):
    """A bias=False model with the padded 50304 vocab, through python model.py export_hf, and back again."""
    torch.manual_seed(0)
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, bias=False, vocab_size=50304, dropout=0.0)
    model = GPT(GPTConfig(**args)).eval()
    with torch.no_grad(): # LayerNorm gains that are not all ones, so their export is checked too
        for name, p in model.named_parameters():
            if 'ln_' in name:
                p.uniform_(0.5, 1.5)
    save_checkpoint({'model': model.state_dict(), 'model_args': args}, str(tmp_path / 'ckpt.pt'))
    out = tmp_path / 'hf'
    p = run('model.py', 'export_hf', str(tmp_path), str(out))
    assert 'GPT2LMHeadModel.from_pretrained' in p.stdout
    config = json.loads((out / 'config.json').read_text())
    assert config['vocab_size'] == 50257 and config['n_positions'] == 32 and config['activation_function'] == 'gelu'
    idx = torch.randint(0, 50257, (2, 32), generator=torch.Generator().manual_seed(0))
    ours = all_logits(model, idx)[..., :50257]
    assert (hf_logits(str(out), idx) - ours).abs().max() < 1e-5
    assert (all_logits(GPT.from_pretrained(str(out)).eval(), idx) - ours).abs().max() < 1e-5
    assert 'usage' in run('model.py', check=False).stderr
