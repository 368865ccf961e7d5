"""Data and tokenizers: the uint16 train.bin/val.bin token files, meta.pkl/meta.json vocabularies, GPT-2's BPE.

Torch-free, so that the data/*/prepare.py scripts run without torch. A dataset is a folder data/<name>/ with
train.bin and val.bin (token ids as raw uint16, readable by np.memmap) and, for a char-level vocabulary, meta.pkl
(nanoGPT's pickle) and meta.json (the same as JSON). Without a meta file the tokens are GPT-2's BPE ids.
"""

import hashlib
import json
import os
import pickle

import numpy as np

from common import UserError, atomic_write, first_line, write_bytes_atomic

GPT2_EOT = 50256 # <|endoftext|>, the token between documents
GPT2_VOCAB_SIZE = GPT2_EOT + 1 # GPT-2's BPE: 50,257 token ids
GPT2_PADDED_VOCAB_SIZE = 50304 # a GPT-2-token model's vocab: 50,257 padded to a multiple of 64, for a faster lm_head
UINT16_IDS = 2**16 # a .bin file holds token ids 0..65535
MIN_SHARD_TOKENS = 2**20 # write_token_shards' smallest piece (2 MB of uint16)
TRAIN_FRACTION = 0.9 # Tiny Shakespeare's split: the first 90% of the characters train, the rest is val

# Tiny Shakespeare ships in the repo as data/shakespeare_char/input.txt (public domain); it is downloaded only when
# missing. Both Shakespeare datasets read that one file.
TINY_SHAKESPEARE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'shakespeare_char', 'input.txt')
TINY_SHAKESPEARE_URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
TINY_SHAKESPEARE_SHA256 = '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'
DOWNLOAD_TIMEOUT_SECONDS = 30

# where tiktoken fetches GPT-2's BPE files, and their sha256 (tiktoken checks it, and drops a cached file that fails)
GPT2_BPE_FILES = {
    'encoder.json': ('https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json',
                     '196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783'),
    'vocab.bpe': ('https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe',
                  '1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5'),
}
_GPT2_ENCODING = None


def read_utf8(path, what):
    """The text of a file; one that is not UTF-8 is a UserError that says how to convert it (what: e.g. 'the prompt')."""
    try:
        with open(path, encoding='utf-8') as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start:,}): convert it, "
                        f"e.g. iconv -f latin1 -t utf-8 {path} > utf8.txt, and use utf8.txt in its place") from None


def tiny_shakespeare(path=TINY_SHAKESPEARE):
    """
    The text of Tiny Shakespeare at path, downloaded (and checked against its sha256) only if the file is missing.
    A file there that is not the canonical one (your own text in its place) is used as it is, with a note.
    """
    if not os.path.exists(path):
        import urllib.request
        print(f"downloading {TINY_SHAKESPEARE_URL}")
        try:
            with urllib.request.urlopen(TINY_SHAKESPEARE_URL, timeout=DOWNLOAD_TIMEOUT_SECONDS) as r:
                raw = r.read()
        except OSError as e:
            raise UserError(f"could not download Tiny Shakespeare ({first_line(e)}); offline, put the file at {path}")
        if hashlib.sha256(raw).hexdigest() != TINY_SHAKESPEARE_SHA256:
            raise UserError(f"the download from {TINY_SHAKESPEARE_URL} is not Tiny Shakespeare (its sha256 differs); "
                            f"try again, or put the file at {path}")
        write_bytes_atomic(path, raw)
    with open(path, 'rb') as f:
        if hashlib.sha256(f.read()).hexdigest() != TINY_SHAKESPEARE_SHA256:
            print(f"note: {path} is not the canonical Tiny Shakespeare (its sha256 differs): using it as it is")
    text = read_utf8(path, 'the text')
    if not text:
        raise UserError(f"{path} is empty: delete it to download Tiny Shakespeare again, or put a text file there")
    return text


def check_uint16(ids, path):
    """ids (a numpy array), checked to fit the uint16 of a .bin file at path."""
    if ids.size and (ids.max() >= UINT16_IDS or ids.min() < 0):
        bad = int(ids.max()) if ids.max() >= UINT16_IDS else int(ids.min())
        raise UserError(f"token id {bad} does not fit in uint16 (0..{UINT16_IDS - 1}): {path} cannot store it; "
                        f"use a tokenizer with fewer than {UINT16_IDS:,} tokens")
    return ids


def write_tokens(path, ids):
    """Write token ids to path as raw uint16, atomically; an id that uint16 cannot hold is a UserError."""
    ids = check_uint16(np.asarray(ids), path)
    write_bytes_atomic(path, ids.astype(np.uint16).tobytes())


def write_meta(data_dir, chars):
    """
    A char-level vocabulary (chars: the symbol of each token id, in order) as meta.pkl, the dict nanoGPT pickles,
    and as meta.json, {"vocab_size": n, "itos": [...]}, which load_meta prefers (a pickle can run code, JSON cannot).
    """
    meta = {'vocab_size': len(chars), 'itos': dict(enumerate(chars)), 'stoi': {c: i for i, c in enumerate(chars)}}
    write_bytes_atomic(os.path.join(data_dir, 'meta.pkl'), pickle.dumps(meta))
    write_bytes_atomic(os.path.join(data_dir, 'meta.json'),
                       json.dumps({'vocab_size': len(chars), 'itos': list(chars)}).encode('utf-8'))


def step_windows(stream, n_windows, n_positions):
    """
    The start positions of one training step's n_windows windows, drawn from n_positions, reproducibly from
    stream (a list of ints, e.g. [seed, split, step]). Distinct while n_positions allows, so ranks and micro-steps
    that each take their own slice of them never see the same window twice in one step.
    """
    rng = np.random.default_rng(stream)
    return rng.choice(n_positions, size=n_windows, replace=n_windows > n_positions)


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles only builtin containers and values (dict, list, str, int...): those need no class lookup."""

    def find_class(self, module, name):
        raise UserError(f"it refers to {module}.{name}")


def meta_file(data_dir):
    """The file load_meta reads in data_dir: meta.json first, else nanoGPT's meta.pkl; None if neither is there."""
    for name in ('meta.json', 'meta.pkl'):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    return None


def load_meta(data_dir):
    """
    The tokenizer metadata {'vocab_size', 'itos', 'stoi'} of a dataset, or None if it has none (GPT-2 BPE).
    meta.json is read first; meta.pkl (nanoGPT's format) only when there is no JSON, and only if it
    is a plain dict of plain values: a pickle that names any class or function is refused unread.
    """
    path = meta_file(data_dir)
    fix = "run the dataset's prepare.py again"
    if path is None:
        return None
    if path.endswith('.json'):
        try:
            with open(path, encoding='utf-8') as f:
                raw = json.load(f)
            itos = dict(enumerate(raw['itos'])) # JSON keeps itos as a list: the token id is the index
            meta = {'vocab_size': raw['vocab_size'], 'itos': itos, 'stoi': {s: i for i, s in itos.items()}}
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path} is not valid tokenizer metadata ({type(e).__name__}: {first_line(e)}): {fix}")
    else:
        try:
            with open(path, 'rb') as f:
                meta = _PlainUnpickler(f).load()
        except UserError as e:
            raise UserError(f"{path} is not a plain dict ({e}), so it is not unpickled: it could run code; {fix}")
        except Exception as e:
            raise UserError(f"{path} is unreadable ({type(e).__name__}): {fix}")
    if not isinstance(meta, dict) or not {'vocab_size', 'itos', 'stoi'} <= set(meta):
        raise UserError(f"{path} is not a dict with vocab_size, itos and stoi: {fix}")
    if (not isinstance(meta['vocab_size'], int) or not isinstance(meta['itos'], dict)
            or not isinstance(meta['stoi'], dict)
            or not all(isinstance(i, int) and isinstance(s, str) for i, s in meta['itos'].items())
            or not all(isinstance(s, str) and isinstance(i, int) for s, i in meta['stoi'].items())):
        raise UserError(f"{path} does not map token ids to strings (vocab_size int, itos {{int: str}}, "
                        f"stoi {{str: int}}): {fix}")
    return meta


def check_vocab(dataset, meta_vocab_size, vocab_size, source, fix):
    """A dataset's tokens must fit a model's vocabulary: exactly its own (meta) vocabulary, or all of GPT-2's."""
    if meta_vocab_size is not None and meta_vocab_size != vocab_size:
        raise UserError(f"dataset {dataset!r} has vocab_size {meta_vocab_size} (its own vocabulary) but {source} has "
                        f"vocab_size {vocab_size}: {fix}")
    if meta_vocab_size is None and vocab_size < GPT2_VOCAB_SIZE:
        raise UserError(f"dataset {dataset!r} has no meta.pkl, so its tokens are GPT-2's ({GPT2_VOCAB_SIZE:,} ids), "
                        f"but {source} has vocab_size {vocab_size}: {fix}")


def dataset_tokenizer(data_dir, model_vocab_size, init_from=None):
    """
    (encode, decode) for the tokens of a model: the dataset's char-level vocabulary when data_dir has a meta file,
    else GPT-2's BPE. encode gives a list of ids; a character the vocabulary lacks is a UserError.
    """
    meta = load_meta(data_dir) if data_dir else None
    dataset = os.path.basename(data_dir) if data_dir else None
    if meta is not None:
        meta_path = os.path.join('data', dataset, os.path.basename(meta_file(data_dir)))
        print(f"Loading meta from {meta_path}...")
        stoi, itos = meta['stoi'], meta['itos']
        if meta['vocab_size'] != model_vocab_size:
            raise UserError(f"{meta_path} has vocab_size {meta['vocab_size']} but the model has {model_vocab_size}: "
                            f"the dataset was prepared again differently; prepare it as the model was")
        def encode(s):
            unknown = sorted(set(c for c in s if c not in stoi))
            if unknown:
                raise UserError(f"the prompt has characters not in the model's vocabulary: {''.join(unknown)!r}; "
                                f"remove them from start")
            return [stoi[c] for c in s]
        return encode, lambda ids: ''.join(itos[i] for i in ids)
    if model_vocab_size < GPT2_VOCAB_SIZE:
        where = f"data/{dataset}/ has no meta.pkl" if dataset else f"no meta.pkl comes with init_from={init_from!r}"
        raise UserError(f"the model has {model_vocab_size} tokens, too few for GPT-2's tokenizer ({GPT2_VOCAB_SIZE:,}), "
                        f"and {where} to decode them: prepare its dataset again (python data/<name>/prepare.py) "
                        f"and sample its checkpoint with init_from='resume'")
    print("No meta.pkl found, assuming GPT-2 encodings...")
    enc = gpt2_encoding()
    return lambda s: enc.encode(s, allowed_special={"<|endoftext|>"}), enc.decode


def open_tokens(data_dir, split, min_len):
    """A split's uint16 token ids as a read-only memmap, checked for the mistakes that make training fail later."""
    path = os.path.join(data_dir, f'{split}.bin')
    if not os.path.exists(path):
        prepare = os.path.join(data_dir, 'prepare.py')
        if os.path.exists(prepare):
            raise UserError(f"{path} not found: prepare the dataset first with python {prepare}")
        data_root = os.path.dirname(os.path.abspath(data_dir))
        known = sorted(d for d in (os.listdir(data_root) if os.path.isdir(data_root) else [])
                       if os.path.isfile(os.path.join(data_root, d, 'prepare.py')))
        raise UserError(f"no dataset {os.path.basename(data_dir)!r}: {path} does not exist and there is no {prepare} "
                        f"to make it; give dataset= one of {', '.join(known) or 'the folders under data/'}, "
                        f"or write {split}.bin there yourself")
    size = os.path.getsize(path)
    if size % 2:
        raise UserError(f"{path} has an odd number of bytes ({size:,}): it is truncated or not uint16 tokens; "
                        f"run prepare.py again")
    if size // 2 < min_len:
        raise UserError(f"{path} holds {size // 2:,} tokens but block_size + 1 = {min_len:,} are needed: "
                        f"use a smaller block_size or more data")
    return np.memmap(path, dtype=np.uint16, mode='r')


def gpt2_encoding():
    """
    tiktoken's 'gpt2' encoding: the one tokenizer of the prepare scripts, sample.py and evals.
    tiktoken downloads encoder.json and vocab.bpe once and caches them (in $TIKTOKEN_CACHE_DIR when set).
    Offline, set GPT2_BPE_DIR to a directory that holds those two files: they are checked and copied into a
    private cache under the names tiktoken looks for, so the directory itself may be read-only and is never
    written to.
    """
    global _GPT2_ENCODING
    if _GPT2_ENCODING is not None:
        return _GPT2_ENCODING
    import tiktoken
    bpe_dir = os.environ.get('GPT2_BPE_DIR')
    if not bpe_dir:
        try:
            _GPT2_ENCODING = tiktoken.get_encoding('gpt2')
        except Exception as e:
            raise UserError(f"the GPT-2 tokenizer could not be loaded ({type(e).__name__}: {first_line(e)}); offline, "
                            f"set GPT2_BPE_DIR to a directory holding GPT-2's encoder.json and vocab.bpe "
                            f"(or TIKTOKEN_CACHE_DIR to a tiktoken cache that has them)")
        return _GPT2_ENCODING
    import shutil, tempfile
    cache = tempfile.mkdtemp(prefix='gpt2-bpe-')
    old = os.environ.get('TIKTOKEN_CACHE_DIR')
    try:
        for name, (url, sha256) in GPT2_BPE_FILES.items():
            path = os.path.join(bpe_dir, name)
            if not os.path.isfile(path):
                raise UserError(f"GPT2_BPE_DIR={bpe_dir} has no {name}: "
                                f"the directory must hold GPT-2's encoder.json and vocab.bpe")
            with open(path, 'rb') as f:
                data = f.read()
            if hashlib.sha256(data).hexdigest() != sha256:
                raise UserError(f"{path} is not GPT-2's {name} (its sha256 differs): use an unmodified copy")
            with open(os.path.join(cache, hashlib.sha1(url.encode()).hexdigest()), 'wb') as f:
                f.write(data)
        os.environ['TIKTOKEN_CACHE_DIR'] = cache
        _GPT2_ENCODING = tiktoken.get_encoding('gpt2') # reads the files once; tiktoken keeps the encoding
    finally:
        # the encoding is in memory now: the private cache and the variable are no longer needed
        if old is None:
            os.environ.pop('TIKTOKEN_CACHE_DIR', None)
        else:
            os.environ['TIKTOKEN_CACHE_DIR'] = old
        shutil.rmtree(cache, ignore_errors=True)
    return _GPT2_ENCODING


def write_token_shards(dset, path, n_shards=1024, desc=None, min_shard_tokens=MIN_SHARD_TOKENS):
    """
    Write the 'ids' of every row of a Hugging Face Dataset (that also has each row's 'len') to path as one
    stream of uint16, through a memmap of the final size filled in n_shards contiguous pieces: memory holds
    one piece at a time, never the whole split. Written atomically. Returns the token count.
    """
    from tqdm import tqdm
    total = int(np.sum(np.asarray(dset['len']), dtype=np.uint64))
    if total == 0:
        raise UserError(f"no tokens to write to {path}: the documents are all empty")
    # no shard smaller than min_shard_tokens: for a small corpus, per-shard overhead would dominate the writing
    n_shards = max(1, min(n_shards, len(dset), -(-total // min_shard_tokens)))
    with atomic_write(path) as tmp:
        arr = np.memmap(tmp, dtype=np.uint16, mode='w+', shape=(total,))
        pos = 0
        for i in tqdm(range(n_shards), desc=desc or f'writing {path}'):
            shard = dset.shard(num_shards=n_shards, index=i, contiguous=True).with_format('numpy')
            ids = np.concatenate(list(shard['ids']))
            check_uint16(ids, path)
            arr[pos:pos + len(ids)] = ids
            pos += len(ids)
        arr.flush()
        del arr
    return total
