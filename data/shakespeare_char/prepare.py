"""
Tiny Shakespeare as characters, for training a character-level GPT.

Reads input.txt beside this script (it ships with the repo; downloaded only if it is missing). Writes, next to it:
- train.bin, val.bin: the token ids as raw uint16, the first 90% of the text and the last 10%;
- meta.pkl: {'vocab_size', 'itos', 'stoi'} for encoding and decoding, and meta.json, the same as JSON
  (what tokens.load_meta reads first: a pickle can run code when loaded, JSON cannot).
train.bin, val.bin and meta.pkl are byte-identical to nanoGPT's: 65 symbols, 1,003,854 train and 111,540 val tokens.
"""
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(here))) # the repo root: common.py and tokens.py
from common import exit_on_user_error
from tokens import TRAIN_FRACTION, tiny_shakespeare, write_meta, write_tokens

exit_on_user_error()
text = tiny_shakespeare(os.path.join(here, 'input.txt'))
print(f"length of dataset in characters: {len(text):,}")

chars = sorted(set(text)) # the vocabulary: each distinct character, in code point order
print("all the unique characters:", ''.join(chars))
print(f"vocab size: {len(chars):,}")
stoi = {c: i for i, c in enumerate(chars)}
cut = int(len(text) * TRAIN_FRACTION)
for split, part in (('train', text[:cut]), ('val', text[cut:])):
    ids = [stoi[c] for c in part]
    print(f"{split} has {len(ids):,} tokens")
    write_tokens(os.path.join(here, f'{split}.bin'), ids) # refuses a vocabulary past uint16's 65,536 ids
write_meta(here, chars)
