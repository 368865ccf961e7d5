"""
Tiny Shakespeare as characters, for training a character-level GPT.

Uses input.txt beside this script if it is there, else downloads it. Writes, next to it:
- train.bin, val.bin: the token ids as raw uint16 (first 90% of the text / last 10%)
- meta.pkl: {'vocab_size', 'itos', 'stoi'} for encoding and decoding
- meta.json: the same as JSON, {"vocab_size": 65, "itos": [the symbol of each token id]}: what
  model.load_meta reads (a pickle can run code when loaded; JSON cannot)
train.bin, val.bin and meta.pkl are byte-identical to nanoGPT's: 65 symbols, 1,003,854 train and 111,540 val tokens.
"""
import json
import os
import pickle
import sys
import urllib.request

import numpy as np

DATA_URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
TRAIN_FRACTION = 0.9
here = os.path.dirname(os.path.abspath(__file__))
input_file_path = os.path.join(here, 'input.txt')

def fail(msg):
    sys.exit(f"error: {msg}")

def write_atomic(path, data):
    """Write bytes to path via a temp file and a rename, so an interrupted run never leaves half a file."""
    tmp = f'{path}.tmp.{os.getpid()}' # per process: two prepare runs at once must not share a temp file
    with open(tmp, 'wb') as f:
        f.write(data)
    os.replace(tmp, path)

if not os.path.exists(input_file_path):
    print(f"downloading {DATA_URL}")
    try:
        with urllib.request.urlopen(DATA_URL, timeout=30) as r:
            write_atomic(input_file_path, r.read())
    except OSError as e:
        fail(f"could not download Tiny Shakespeare ({e}). Offline? Put the file at {input_file_path} and run again.")

try:
    with open(input_file_path, 'r', encoding='utf-8') as f:
        data = f.read()
except UnicodeDecodeError as e:
    fail(f"{input_file_path} is not UTF-8 text ({e.reason} at byte {e.start:,}): convert it, "
         f"e.g. iconv -f latin1 -t utf-8 input.txt > utf8.txt, then rename utf8.txt to input.txt")
if not data:
    fail(f"{input_file_path} is empty: delete it to download Tiny Shakespeare again, or put a text file there")
print(f"length of dataset in characters: {len(data):,}")

# the vocabulary: every character that occurs, in sorted order
chars = sorted(set(data))
vocab_size = len(chars)
if vocab_size > 2**16:
    fail(f"{input_file_path} has {vocab_size:,} distinct characters, more than uint16 token ids can hold (65,536)")
print("all the unique characters:", ''.join(chars))
print(f"vocab size: {vocab_size:,}")
stoi = {ch: i for i, ch in enumerate(chars)}
itos = {i: ch for i, ch in enumerate(chars)}

n = len(data)
splits = {'train': data[:int(n * TRAIN_FRACTION)], 'val': data[int(n * TRAIN_FRACTION):]}
for split, text in splits.items():
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    print(f"{split} has {len(ids):,} tokens")
    write_atomic(os.path.join(here, f'{split}.bin'), ids.tobytes())

# the same dict, in the same key order, as nanoGPT pickles
meta = {'vocab_size': vocab_size, 'itos': itos, 'stoi': stoi}
write_atomic(os.path.join(here, 'meta.pkl'), pickle.dumps(meta))
write_atomic(os.path.join(here, 'meta.json'), json.dumps({'vocab_size': vocab_size, 'itos': chars}).encode('utf-8'))
