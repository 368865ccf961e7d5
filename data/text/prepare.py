"""
Your own text, in any language, as a dataset for train.py and sample.py.

$ python data/text/prepare.py --input=book.txt --name=mybook                      # characters, as shakespeare_char
$ python data/text/prepare.py --input=corpus/ --name=mycorpus --tokenizer=bpe --vocab_size=4096
$ python train.py config/text_cpu.py --dataset=mybook && python sample.py --out_dir=out-text-cpu

input is a UTF-8 file, or a folder whose .txt files (at any depth, in sorted order) are joined into one text, each
ending in a newline. The last val_fraction of the text's characters is val, the rest train: the text is split
before it is tokenized, so every tokenizer's val.bin holds the same characters (bits per character compare).
Writes data/<name>/train.bin and val.bin (uint16 token ids, as nanoGPT's) and what decodes them:
- tokenizer='char': one token per Unicode character, ids in code point order (nanoGPT's sorted(set(text))), as
  meta.pkl (nanoGPT's) and meta.json;
- tokenizer='gpt2': tiktoken's GPT-2 BPE, as data/shakespeare, and no meta file (GPT-2 tokens are the default);
- tokenizer='bpe': a byte-level BPE of vocab_size tokens trained on the train split with Hugging Face tokenizers,
  as tokenizer.json, and a meta.json that names it.
Nothing is written until the whole input has been read and tokenized; a folder that already holds a dataset is
replaced only with force=True.
"""
import os
import re
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) # a constant, not a setting
sys.path.insert(0, ROOT) # the repo root: common.py, tokens.py, configurator.py
from common import UserError, exit_on_user_error
from configurator import configure
from tokens import (DATASET_FILES, UINT16_IDS, gpt2_encode, read_text_file, text_file_paths,
                    write_bpe_meta, write_meta, write_tokens)

# -----------------------------------------------------------------------------
input = '' # a UTF-8 text file, or a folder of .txt files
name = '' # the dataset: written to data/<name>/, trained with train.py --dataset=<name>
tokenizer = 'char' # 'char' (one token per character), 'gpt2' (GPT-2's BPE) or 'bpe' (a BPE trained on the text)
vocab_size = 4096 # tokenizer='bpe' only: the size of its vocabulary, 256 bytes and the merges learned above them
val_fraction = 0.1 # the last fraction of the characters held out as val (0.1: nanoGPT's 90/10 split)
force = False # replace the dataset already in data/<name>/
# -----------------------------------------------------------------------------
exit_on_user_error() # bad settings and files end in one 'error: ...' line, not a traceback
changed = configure(globals())
# -----------------------------------------------------------------------------
TOKENIZERS = ('char', 'gpt2', 'bpe')
BYTE_TOKENS = 256 # a byte-level BPE starts from one token per byte; merges come on top
# each split must hold more than one window of config/text_cpu.py (block_size=128, and the target token after it):
# train.py refuses a split shorter than block_size + 1 tokens
MIN_SPLIT_TOKENS = 129
NAME_PATTERN = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]*') # one folder under data/, nothing that climbs out of it
OTHER_WRITERS_FILES = ('train_mask.bin', 'val_mask.bin') # other prepare scripts' files that train.py also reads

if not input:
    raise UserError("no input: give --input=PATH, a UTF-8 text file or a folder of .txt files")
if not NAME_PATTERN.fullmatch(name):
    raise UserError(f"name={name!r}: give --name=NAME, a folder name under data/ (letters, digits, '.', '_', '-')")
if tokenizer not in TOKENIZERS:
    raise UserError(f"tokenizer={tokenizer!r} must be one of {', '.join(TOKENIZERS)}")
if 'vocab_size' in changed and tokenizer != 'bpe':
    raise UserError(f"vocab_size is set by the text with tokenizer={tokenizer!r}: --vocab_size is for --tokenizer=bpe")
if tokenizer == 'bpe' and not BYTE_TOKENS < vocab_size <= UINT16_IDS:
    raise UserError(f"vocab_size={vocab_size} must be in {BYTE_TOKENS + 1}..{UINT16_IDS}: above the {BYTE_TOKENS} "
                    f"byte tokens, and within the uint16 ids of train.bin/val.bin")
if not 0 < val_fraction < 1:
    raise UserError(f"val_fraction={val_fraction} must be between 0 and 1 (e.g. 0.1: the last 10% of the text)")

data_dir = os.path.join(ROOT, 'data', name)
shown_dir = os.path.join('data', name)
if os.path.exists(os.path.join(data_dir, 'prepare.py')):
    raise UserError(f"{shown_dir} is the repository's dataset {name!r}, made by its own prepare.py: "
                    f"choose another name")
if os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise UserError(f"{shown_dir} is a file, not a folder: choose another name")
existing = [f for f in DATASET_FILES if os.path.exists(os.path.join(data_dir, f))]
if existing and not force:
    raise UserError(f"{shown_dir} already holds a dataset ({', '.join(existing)}): choose another name, "
                    f"or --force=True to replace it")

# read
if os.path.isdir(input):
    paths = text_file_paths(input, ('.txt',))
    if not paths:
        raise UserError(f"the folder {input} holds no .txt file: put the text in .txt files, or give one file")
elif os.path.isfile(input):
    paths = [input]
else:
    raise UserError(f"input={input}: no such file or folder")
texts = [read_text_file(p) for p in paths]
# each file ends in a newline, so that the last line of one does not run into the first of the next
text = ''.join(t if t.endswith('\n') or len(paths) == 1 else t + '\n' for t in texts)
if not text:
    raise UserError(f"{input} holds no text: the file{'s are' if len(paths) > 1 else ' is'} empty")
print(f"read {len(paths):,} file(s): {len(text):,} characters")
cut = int(len(text) * (1 - val_fraction))
parts = {'train': text[:cut], 'val': text[cut:]}

# tokenize
t0 = time.time()
if tokenizer == 'char':
    # code points as numbers: the vocabulary is their sorted distinct values, a character's id its rank among them
    points = np.frombuffer(text.encode('utf-32-le'), dtype='<u4')
    alphabet = np.unique(points)
    if len(alphabet) > UINT16_IDS:
        raise UserError(f"the text has {len(alphabet):,} distinct characters, more than the {UINT16_IDS:,} token ids "
                        f"of uint16: use --tokenizer=bpe")
    chars = [chr(c) for c in alphabet]
    ids = np.searchsorted(alphabet, points)
    splits = {'train': ids[:cut], 'val': ids[cut:]}
    print(f"vocab size: {len(chars):,} characters")
elif tokenizer == 'gpt2':
    # each split encoded on its own, as data/shakespeare: the token that spans the cut is split in two
    splits = dict(zip(parts, gpt2_encode(parts.values())))
else:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False) # no space added: decoding gives the text back
    bpe.decoder = decoders.ByteLevel()
    # the bar only on a terminal: piped output keeps stderr for the one error line
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=sys.stderr.isatty())
    print(f"training a byte-level BPE of up to {vocab_size:,} tokens on the train split...")
    # trained on train only, so that val stays text the tokenizer has never seen
    bpe.train_from_iterator(parts['train'].splitlines(keepends=True), trainer)
    print(f"trained {bpe.get_vocab_size():,} tokens in {time.time() - t0:.1f}s")
    splits = {split: bpe.encode(part).ids for split, part in parts.items()}
for split, ids in splits.items():
    n, chars_in = len(ids), len(parts[split])
    if n < MIN_SPLIT_TOKENS:
        raise UserError(f"the {split} split would hold {n:,} tokens ({chars_in:,} characters), too few to train on "
                        f"(at least {MIN_SPLIT_TOKENS}, one block of config/text_cpu.py): give more text"
                        + (" or a larger --val_fraction" if split == 'val' else ""))
    print(f"{split} has {n:,} tokens for {chars_in:,} characters: {n / chars_in:.3f} tokens per character")
print(f"tokenized in {time.time() - t0:.1f}s")

# write: the old dataset's files go first, so that none of them is left to be read with the new tokens
os.makedirs(data_dir, exist_ok=True)
for f in DATASET_FILES + OTHER_WRITERS_FILES:
    if os.path.exists(os.path.join(data_dir, f)):
        os.remove(os.path.join(data_dir, f))
for split, ids in splits.items():
    write_tokens(os.path.join(data_dir, f'{split}.bin'), ids)
if tokenizer == 'char':
    write_meta(data_dir, chars)
elif tokenizer == 'bpe':
    write_bpe_meta(data_dir, bpe)
written = sorted(f for f in DATASET_FILES if os.path.exists(os.path.join(data_dir, f)))
print(f"wrote {', '.join(os.path.join(shown_dir, f) for f in written)}")
print(f"train on it with: python train.py --dataset={name} (e.g. python train.py config/text_cpu.py --dataset={name})")
