"""
Tiny Shakespeare as GPT-2 BPE tokens, for fine-tuning GPT-2 (config/finetune_shakespeare*.py).

Reads the input.txt that ships in data/shakespeare_char/ (downloaded only if it is missing). Writes, beside this
script, train.bin and val.bin: GPT-2 token ids (tiktoken's 'gpt2', no <|endoftext|>) as raw uint16 of the first
90% of the characters and the last 10%, each encoded on its own. The same files as nanoGPT's: 301,966 train and
36,059 val tokens. Offline, the tokenizer needs GPT2_BPE_DIR (see tokens.gpt2_encoding).
"""
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(here))) # the repo root: common.py and tokens.py
from common import exit_on_user_error
from tokens import TRAIN_FRACTION, gpt2_encoding, tiny_shakespeare, write_tokens

exit_on_user_error()
text = tiny_shakespeare()
print(f"length of dataset in characters: {len(text):,}")
enc = gpt2_encoding()
cut = int(len(text) * TRAIN_FRACTION)
# the cut falls inside a word: each side is encoded on its own, so that word is split into two tokens, as in nanoGPT
for split, part in (('train', text[:cut]), ('val', text[cut:])):
    ids = enc.encode_ordinary(part)
    print(f"{split} has {len(ids):,} tokens")
    write_tokens(os.path.join(here, f'{split}.bin'), ids)
