"""
Tiny Shakespeare as GPT-2 BPE tokens, for fine-tuning GPT-2 (config/finetune_shakespeare*.py).

Uses input.txt beside this script if it is there, else downloads it. Writes, next to it,
train.bin and val.bin: GPT-2 token ids (tiktoken's 'gpt2', no <|endoftext|>) as raw uint16 of the first
90% of the characters and the last 10%, each encoded on its own. The same files as nanoGPT's:
301,966 train and 36,059 val tokens. Offline, the tokenizer needs GPT2_BPE_DIR (see model.gpt2_encoding).
"""
import os
import sys
import urllib.request

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(here))) # the repo root, for model.py
from model import exit_on_user_error, gpt2_encoding, read_utf8

DATA_URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
TRAIN_FRACTION = 0.9
input_file_path = os.path.join(here, 'input.txt')

def fail(msg):
    sys.exit(f"error: {msg}")

def write_atomic(path, data):
    """Write bytes to path via a temp file and a rename, so an interrupted run never leaves half a file."""
    tmp = f'{path}.tmp.{os.getpid()}' # per process: two prepare runs at once must not share a temp file
    with open(tmp, 'wb') as f:
        f.write(data)
    os.replace(tmp, path)

exit_on_user_error()
if not os.path.exists(input_file_path):
    print(f"downloading {DATA_URL}")
    try:
        with urllib.request.urlopen(DATA_URL, timeout=30) as r:
            write_atomic(input_file_path, r.read())
    except OSError as e:
        fail(f"could not download Tiny Shakespeare ({e}). Offline? Put the file at {input_file_path} and run again.")

data = read_utf8(input_file_path, 'the text')
if not data:
    fail(f"{input_file_path} is empty: delete it to download Tiny Shakespeare again, or put a text file there")
print(f"length of dataset in characters: {len(data):,}")

enc = gpt2_encoding()
n = len(data)
# split by characters, then encode each part: the token at the cut is split too, as in nanoGPT
splits = {'train': data[:int(n * TRAIN_FRACTION)], 'val': data[int(n * TRAIN_FRACTION):]}
for split, text in splits.items():
    ids = np.array(enc.encode_ordinary(text), dtype=np.uint16) # GPT-2 ids are < 50257: uint16 holds them
    print(f"{split} has {len(ids):,} tokens")
    write_atomic(os.path.join(here, f'{split}.bin'), ids.tobytes())
