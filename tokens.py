"""Data and tokenizers: the uint16 train.bin/val.bin token files, meta.pkl/meta.json vocabularies, GPT-2's BPE.

Torch-free, so that the data/*/prepare.py scripts run without torch. A dataset is a folder data/<name>/ with
train.bin and val.bin (token ids as raw uint16, readable by np.memmap) and, for a char-level vocabulary, meta.pkl
(nanoGPT's pickle) and meta.json (the same as JSON). Without a meta file the tokens are GPT-2's BPE ids. A meta.json
that names a tokenizer.json: a byte-level BPE trained on the dataset's own text (data/text/prepare.py).
"""

import glob
import hashlib
import json
import os
import pickle
import re

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


def write_meta(data_dir, chars, extra=None):
    """
    A char-level vocabulary (chars: the symbol of each token id, in order) as meta.pkl, the dict nanoGPT pickles,
    and as meta.json, {"vocab_size": n, "itos": [...]}, which load_meta prefers (a pickle can run code, JSON cannot).
    extra: more plain str/int entries for both files (e.g. the arithmetic dataset's 'reverse' and 'row_len');
    nanoGPT's sample.py reads only stoi and itos, so its pickle stays loadable there.
    """
    extra = dict(extra or {})
    meta = {'vocab_size': len(chars), 'itos': dict(enumerate(chars)), 'stoi': {c: i for i, c in enumerate(chars)}}
    write_bytes_atomic(os.path.join(data_dir, 'meta.pkl'), pickle.dumps({**meta, **extra}))
    write_bytes_atomic(os.path.join(data_dir, 'meta.json'),
                       json.dumps({'vocab_size': len(chars), 'itos': list(chars), **extra}).encode('utf-8'))


def step_windows(stream, n_windows, n_positions):
    """
    The start positions of one training step's n_windows windows, drawn from n_positions, reproducibly from
    stream (a list of ints, e.g. [seed, split, step]). Distinct while n_positions allows, so ranks and micro-steps
    that each take their own slice of them never see the same window twice in one step.
    """
    rng = np.random.default_rng(stream)
    return rng.choice(n_positions, size=n_windows, replace=n_windows > n_positions)


def reverse_answers(text, ops):
    """
    text with the digits of each answer reversed: on every line whose part before '=' holds one of the characters
    in ops, each run of digits after the '=' is turned around ('57+68=521' <-> '57+68=125', '3-8=-5' stays,
    '17/5=3r2' keeps its order number by number). Its own inverse: it writes an arithmetic dataset's reversed
    answers and reads them back in reading order. A line cut inside an answer comes back with what it has.
    """
    lines = text.split('\n')
    for i, line in enumerate(lines):
        problem, eq, answer = line.partition('=')
        if eq and any(c in ops for c in problem):
            lines[i] = problem + eq + re.sub(r'[0-9]+', lambda m: m.group()[::-1], answer)
    return '\n'.join(lines)


def open_mask(data_dir, split, n_tokens, block_size):
    """
    (mask, row_len) of a split. mask: {split}_mask.bin as a read-only uint8 memmap, one byte per token of
    {split}.bin, 1 where the token is a target the loss counts (an answer) and 0 where it is not (a prompt,
    padding); None when the dataset has no mask file. row_len: the dataset's fixed row length (its meta's
    'row_len'), where training windows start, so that each begins at a problem; 1 (any token) without one.
    """
    meta = load_meta(data_dir) or {}
    row_len = meta.get('row_len', 1)
    name = os.path.basename(data_dir)
    if not isinstance(row_len, int) or row_len < 1:
        raise UserError(f"data/{name}'s meta has row_len={row_len!r}, not a positive int: run its prepare.py again")
    if block_size < row_len:
        raise UserError(f"block_size={block_size} is shorter than the {row_len}-token rows of dataset {name!r}: a "
                        f"window must hold a whole problem; use --block_size={row_len} (or a multiple of it)")
    path = os.path.join(data_dir, f'{split}_mask.bin')
    if not os.path.exists(path):
        return None, row_len
    if os.path.getsize(path) != n_tokens:
        raise UserError(f"{path} has {os.path.getsize(path):,} bytes but {split}.bin has {n_tokens:,} tokens: "
                        f"they come from different runs of prepare.py; run it again")
    return np.memmap(path, dtype=np.uint8, mode='r'), row_len


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
    The tokenizer metadata {'vocab_size', 'itos', 'stoi'} of a dataset, or None if it has none (GPT-2 BPE);
    for a byte-level BPE of its own (data/text/prepare.py), {'vocab_size', 'tokenizer', 'tokenizer_file'}.
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
            if isinstance(raw, dict) and raw.get('tokenizer') == BPE_TOKENIZER: # its vocabulary is tokenizer.json
                return bpe_meta(data_dir, path, raw)
            itos = dict(enumerate(raw['itos'])) # JSON keeps itos as a list: the token id is the index
            meta = {**raw, 'vocab_size': raw['vocab_size'], 'itos': itos, 'stoi': {s: i for i, s in itos.items()}}
        except UserError: # bpe_meta's, which says what is wrong already
            raise
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
    its own byte-level BPE when the meta names one (tokenizer.json), else GPT-2's BPE. encode gives a list of ids;
    a character the char vocabulary lacks is a UserError (a byte-level BPE encodes any text).
    """
    meta = load_meta(data_dir) if data_dir else None
    dataset = os.path.basename(data_dir) if data_dir else None
    if meta is not None:
        meta_path = os.path.join('data', dataset, os.path.basename(meta_file(data_dir)))
        print(f"Loading meta from {meta_path}...")
        if meta['vocab_size'] != model_vocab_size:
            raise UserError(f"{meta_path} has vocab_size {meta['vocab_size']} but the model has {model_vocab_size}: "
                            f"the dataset was prepared again differently; prepare it as the model was")
        if meta.get('tokenizer') == BPE_TOKENIZER:
            bpe = load_bpe(meta['tokenizer_file'])
            return lambda s: bpe.encode(s).ids, bpe.decode
        stoi, itos = meta['stoi'], meta['itos']
        def encode(s):
            unknown = sorted(set(c for c in s if c not in stoi))
            if unknown:
                raise UserError(f"the prompt has characters not in the model's vocabulary: {''.join(unknown)!r}; "
                                f"remove them from start")
            return [stoi[c] for c in s]
        reverse = meta.get('reverse', '') # data/arithmetic: the operators whose answers are stored digits reversed
        if reverse:
            return encode, lambda ids: reverse_answers(''.join(itos[i] for i in ids), reverse)
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


# -----------------------------------------------------------------------------
# Token shards: a corpus too big for one file (FineWeb-Edu: ~10B tokens) as numbered files of at most N tokens,
# each with a small header so that a truncated, foreign or mismatched file is caught before training reads it.
# A shard folder holds <prefix>_val_000000.bin (the first shard of the stream is val) and
# <prefix>_train_000001.bin, _000002... in stream order. data/fineweb_edu/prepare.py writes them; train.py reads
# them through TokenStream (every shard of a split as one stream of ids) and ShardLoader (the training order).

SHARD_MAGIC = b'GPTSHARD'
SHARD_VERSION = 1
SHARD_LAST = 1 # flags bit: the stream ended with this shard (a re-run of prepare has nothing left to write)
SHARD_DTYPES = {2: np.uint16, 4: np.uint32} # the header's token width in bytes, and the ids' numpy type
# 64 bytes, so that the ids after it are aligned for any dtype. next_doc/next_offset: where the source stream
# continues after this shard (document index, tokens of that document already written), for a resumed prepare.
SHARD_HEADER = np.dtype([('magic', 'S8'), ('version', '<u4'), ('itemsize', '<u4'), ('vocab_size', '<u4'),
                         ('flags', '<u4'), ('tokens', '<u8'), ('next_doc', '<u8'), ('next_offset', '<u8'),
                         ('reserved', 'V16')])
SHARD_NAME = re.compile(r'^(?P<prefix>.+)_(?P<split>train|val)_(?P<index>\d{6})\.bin$')


def shard_name(prefix, split, index):
    return f"{prefix}_{split}_{index:06d}.bin"


def write_shard(path, ids, vocab_size, next_doc=0, next_offset=0, last=False, dtype=np.uint16):
    """Write token ids with a shard header, atomically; an id outside 0..vocab_size-1 is a UserError."""
    ids = np.asarray(ids)
    itemsize = np.dtype(dtype).itemsize
    if vocab_size > np.iinfo(dtype).max + 1:
        raise UserError(f"a vocabulary of {vocab_size:,} tokens does not fit in {np.dtype(dtype).name} shards")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = int(ids.max()) if ids.max() >= vocab_size else int(ids.min())
        raise UserError(f"token id {bad} is outside the vocabulary (0..{vocab_size - 1}): {path} cannot store it")
    header = np.zeros((), SHARD_HEADER)
    header['magic'], header['version'], header['itemsize'], header['vocab_size'] = (SHARD_MAGIC, SHARD_VERSION,
                                                                                  itemsize, vocab_size)
    header['flags'], header['tokens'] = SHARD_LAST if last else 0, ids.size
    header['next_doc'], header['next_offset'] = next_doc, next_offset
    with atomic_write(path) as tmp, open(tmp, 'wb') as f:
        f.write(header.tobytes())
        f.write(ids.astype(dtype).tobytes())


def read_shard_header(path):
    """A shard's header as a dict, checked against the file: a foreign, truncated or padded file is a UserError."""
    fix = "delete it and run the dataset's prepare.py again"
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
        raw = f.read(SHARD_HEADER.itemsize)
    if len(raw) < SHARD_HEADER.itemsize:
        raise UserError(f"{path} is {size} bytes, too short for a token shard's header: it is truncated; {fix}")
    h = np.frombuffer(raw, SHARD_HEADER)[0]
    if h['magic'] != SHARD_MAGIC:
        raise UserError(f"{path} is not a token shard (its first bytes are not {SHARD_MAGIC.decode()}): {fix}")
    if h['version'] != SHARD_VERSION:
        raise UserError(f"{path} is shard format version {h['version']}, this code reads version {SHARD_VERSION}: "
                        f"{fix}")
    itemsize, vocab_size = int(h['itemsize']), int(h['vocab_size'])
    if itemsize not in SHARD_DTYPES or vocab_size > np.iinfo(SHARD_DTYPES[itemsize]).max + 1:
        raise UserError(f"{path} has a bad token type in its header ({itemsize} bytes per token for a vocabulary "
                        f"of {vocab_size:,}): {fix}")
    expected = SHARD_HEADER.itemsize + int(h['tokens']) * itemsize
    if size != expected:
        raise UserError(f"{path} is {size:,} bytes but its header promises {int(h['tokens']):,} tokens "
                        f"({expected:,} bytes): it is {'truncated' if size < expected else 'damaged'}; {fix}")
    return dict(itemsize=itemsize, dtype=SHARD_DTYPES[itemsize], vocab_size=vocab_size, tokens=int(h['tokens']),
                last=bool(h['flags'] & SHARD_LAST), next_doc=int(h['next_doc']), next_offset=int(h['next_offset']))


def find_shards(data_dir):
    """{'train': [paths], 'val': [paths]} of the shard files in data_dir, each list in stream order."""
    found = {'train': [], 'val': []}
    for name in sorted(os.listdir(data_dir)) if os.path.isdir(data_dir) else []:
        m = SHARD_NAME.match(name)
        if m:
            found[m['split']].append((int(m['index']), os.path.join(data_dir, name)))
    return {split: [path for _, path in sorted(paths)] for split, paths in found.items()}


class TokenStream:
    """The ids of a split's shards, back to back, as one read-only sequence (each shard a memmap)."""

    def __init__(self, paths):
        self.paths = list(paths)
        headers = [read_shard_header(p) for p in self.paths]
        kinds = [(h['itemsize'], h['vocab_size']) for h in headers]
        for path, kind in zip(self.paths, kinds):
            if kind != kinds[0]:
                raise UserError(f"the shards {self.paths[0]} and {path} disagree on their token type (bytes per "
                                f"token, vocab size: {kinds[0]} vs {kind}): they come from different prepare runs; "
                                f"prepare them again")
        self.itemsize, self.vocab_size = kinds[0]
        self.shards = [np.memmap(p, dtype=h['dtype'], mode='r', offset=SHARD_HEADER.itemsize, shape=(h['tokens'],))
                       if h['tokens'] else np.zeros(0, h['dtype']) for p, h in zip(self.paths, headers)]
        self.starts = np.cumsum([0] + [len(s) for s in self.shards]) # where each shard begins in the stream

    def __len__(self):
        return int(self.starts[-1])

    def locate(self, pos):
        """(shard index, offset in it) of stream position pos."""
        i = int(np.searchsorted(self.starts, pos, side='right')) - 1
        return i, pos - int(self.starts[i])

    def read(self, start, n):
        """Ids start..start+n-1 of the stream (a copy), across shard boundaries."""
        i, offset = self.locate(start)
        pieces = []
        while n > 0:
            piece = self.shards[i][offset:offset + n]
            pieces.append(piece)
            n -= len(piece)
            i, offset = i + 1, 0
        return np.concatenate(pieces) if len(pieces) > 1 else np.array(pieces[0])

    def windows(self, starts, length):
        """A (len(starts), length) array: the ids of each window starting at starts[i]."""
        return np.stack([self.read(int(s), length) for s in starts])


def token_windows(data, starts, length):
    """Windows of ids from a .bin memmap or a TokenStream: a (len(starts), length) array."""
    if isinstance(data, TokenStream):
        return data.windows(starts, length)
    return data[np.asarray(starts)[:, None] + np.arange(length)]


def open_shard_splits(data_dir, min_len):
    """{'train': TokenStream, 'val': TokenStream} of a shard folder, each checked to hold at least min_len ids."""
    found = find_shards(data_dir)
    splits = {}
    for split in ('train', 'val'):
        if not found[split]:
            raise UserError(f"{data_dir} has no {split} shards (*_{split}_NNNNNN.bin): finish preparing it, e.g. "
                            f"python data/fineweb_edu/prepare.py --out_dir={data_dir}")
        splits[split] = TokenStream(found[split])
        if len(splits[split]) < min_len:
            raise UserError(f"the {split} shards of {data_dir} hold {len(splits[split]):,} tokens but block_size + 1 "
                            f"= {min_len:,} are needed: use a smaller block_size or more data")
    return splits


def check_shard_vocab(stream, vocab_size, data_dir):
    """The model's vocabulary must hold every id the shards can have, and be one the shards' token type can hold."""
    if stream.itemsize == 2 and vocab_size > UINT16_IDS:
        raise UserError(f"the shards in {data_dir} hold uint16 ids, but the model has vocab_size {vocab_size:,} "
                        f"(more than {UINT16_IDS:,}): its tokenizer cannot be the one they were written with")
    if vocab_size < stream.vocab_size:
        raise UserError(f"the shards in {data_dir} are tokens of a {stream.vocab_size:,}-token vocabulary but the "
                        f"model has vocab_size {vocab_size:,}: use a model with at least that many")


class ShardLoader:
    """
    The training order on a TokenStream: in order and without replacement. A step takes the next
    n_micro * batch_size * block_size ids; micro-batch k of the step (k = rank * micro-steps per rank + micro-step)
    is its k-th slice of batch_size * block_size ids (+1 for the last target), as batch_size rows of block_size + 1
    that overlap by one id. So ranks and micro-steps never share a window, and the order does not depend on the
    world size. A step that would run past the end starts a new epoch at the beginning (the tail is dropped).
    The position of a step is a pure function of the anchor (a step, its position and epoch) and the step number, so
    a resumed run, anchored at the checkpoint's step, reads exactly what the unstopped run would have read.
    """

    def __init__(self, stream, batch_size, block_size, n_micro):
        self.stream, self.batch_size, self.block_size = stream, batch_size, block_size
        self.micro_tokens = batch_size * block_size
        self.step_tokens = n_micro * self.micro_tokens
        self.per_epoch = (len(stream) - 1) // self.step_tokens # steps of a whole epoch
        if self.per_epoch < 1:
            raise UserError(f"the train shards hold {len(stream):,} tokens, fewer than one step needs "
                            f"({self.step_tokens + 1:,}): lower batch_size, block_size or gradient_accumulation_steps")
        self.anchor = (0, 0, 0) # (step, stream position, epoch)

    def position(self, step):
        """(stream position, epoch) where step begins."""
        step0, pos0, epoch0 = self.anchor
        left = max(0, (len(self.stream) - 1 - pos0) // self.step_tokens) # steps that still fit in the anchor's epoch
        d = step - step0
        if d < left:
            return pos0 + d * self.step_tokens, epoch0
        d -= left
        return (d % self.per_epoch) * self.step_tokens, epoch0 + 1 + d // self.per_epoch

    def micro_batch(self, step, k):
        """Micro-batch k of step: a (batch_size, block_size + 1) array of ids (inputs are [:, :-1], targets [:, 1:])."""
        pos, _ = self.position(step)
        span = self.stream.read(pos + k * self.micro_tokens, self.micro_tokens + 1)
        return np.lib.stride_tricks.sliding_window_view(span, self.block_size + 1)[::self.block_size]

    def state(self, step):
        """Where step begins, for a checkpoint: plain ints only, so that it loads with weights_only=True."""
        pos, epoch = self.position(step)
        shard, offset = self.stream.locate(pos)
        return dict(shard=shard, offset=offset, epoch=epoch, train_tokens=len(self.stream),
                    step_tokens=self.step_tokens)

    def restore(self, state, step, data_dir):
        """Anchor the order at a checkpoint's state for its step; a shard set that changed since is a UserError."""
        if state['train_tokens'] != len(self.stream) or state['shard'] >= len(self.stream.shards):
            raise UserError(f"the train shards in {data_dir} hold {len(self.stream):,} tokens but the checkpoint was "
                            f"trained on {state['train_tokens']:,}: resume with the shards it was trained on")
        self.anchor = (step, int(self.stream.starts[state['shard']]) + state['offset'], state['epoch'])


# -----------------------------------------------------------------------------
# Your own text: what data/text/prepare.py and the --files mode of data/openwebtext/prepare.py share.
# Finding the text files a path names, reading them as UTF-8, encoding text with GPT-2's BPE, and a byte-level BPE
# trained on the text itself (Hugging Face tokenizers), kept as tokenizer.json beside train.bin and named by a
# meta.json of {"vocab_size", "tokenizer": "bpe", "tokenizer_file"} that load_meta and dataset_tokenizer read.

BPE_TOKENIZER = 'bpe' # meta.json's 'tokenizer' for a dataset with a byte-level BPE of its own
BPE_FILE = 'tokenizer.json'
# every file a prepared dataset can hold: what makes a folder a dataset, and what a replacement must not leave behind
DATASET_FILES = ('train.bin', 'val.bin', 'meta.json', 'meta.pkl', BPE_FILE)


def text_file_paths(part, extensions):
    """
    The files one path names, sorted: under a directory, every file (at any depth) whose extension is one of
    extensions; otherwise the matches of part as a glob (a plain file name matches itself). [] if none.
    """
    if os.path.isdir(part):
        return sorted(p for p in glob.glob(os.path.join(part, '**', '*'), recursive=True)
                      if os.path.splitext(p)[1] in extensions)
    return sorted(glob.glob(part))


def read_text_file(path):
    """The text of a UTF-8 file without its byte-order mark; a binary or non-UTF-8 file is a UserError."""
    with open(path, 'rb') as f:
        raw = f.read()
    if b'\x00' in raw: # text has no NUL bytes; images, archives and the like are full of them
        raise UserError(f"the input file {path} holds NUL bytes: it is a binary file, not text; leave it out")
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError:
        text = read_utf8(path, 'the input file') # raises the error that says where and how to convert it
    return text.removeprefix('\ufeff') # the mark some editors put first is not part of the text


def gpt2_encode(texts, eot=False):
    """
    The GPT-2 ids of each text (tiktoken's encode_ordinary: an '<|endoftext|>' inside a text is plain characters),
    each followed by the <|endoftext|> token when eot (the separator between documents).
    """
    ids = gpt2_encoding().encode_ordinary_batch(list(texts), num_threads=1)
    return [doc + [GPT2_EOT] for doc in ids] if eot else ids


def load_bpe(path):
    """A Hugging Face tokenizer from its tokenizer.json."""
    from tokenizers import Tokenizer
    try:
        return Tokenizer.from_file(path)
    except Exception as e: # tokenizers raises a bare Exception for a missing or malformed file
        raise UserError(f"{path} is not a readable tokenizer ({first_line(e)}): prepare the dataset again")


def bpe_meta(data_dir, path, raw):
    """load_meta's answer for a meta.json (at path, already parsed as raw) that names a byte-level BPE."""
    n, name = raw.get('vocab_size'), raw.get('tokenizer_file')
    if not isinstance(n, int) or not 0 < n <= UINT16_IDS or not isinstance(name, str) or os.path.basename(name) != name:
        raise UserError(f"{path} names a BPE tokenizer but not a vocab_size (1..{UINT16_IDS}) and a tokenizer_file "
                        f"beside it: run the dataset's prepare.py again")
    tokenizer_file = os.path.join(data_dir, name)
    if not os.path.isfile(tokenizer_file):
        raise UserError(f"{path} names the tokenizer {name}, but {tokenizer_file} is missing: "
                        f"prepare the dataset again")
    return {'vocab_size': n, 'tokenizer': BPE_TOKENIZER, 'tokenizer_file': tokenizer_file}


def write_bpe_meta(data_dir, tokenizer):
    """A Hugging Face tokenizer as data_dir/tokenizer.json, and the meta.json that names it and its vocab_size."""
    write_bytes_atomic(os.path.join(data_dir, BPE_FILE), tokenizer.to_str().encode('utf-8'))
    meta = {'vocab_size': tokenizer.get_vocab_size(), 'tokenizer': BPE_TOKENIZER, 'tokenizer_file': BPE_FILE}
    write_bytes_atomic(os.path.join(data_dir, 'meta.json'), json.dumps(meta).encode('utf-8'))
