"""
FineWeb-Edu (or your own parquet/jsonl files) as GPT-2 token shards for pretraining (config/gpt2_fineweb_edu.py).

$ python data/fineweb_edu/prepare.py                                  # HuggingFaceFW/fineweb-edu, sample-10BT
$ python data/fineweb_edu/prepare.py --name=sample-100BT --shard_tokens=200000000
$ python data/fineweb_edu/prepare.py --files='corpus/*.parquet' --out_dir=data/mycorpus   # offline, local files

The documents stream through Hugging Face datasets (streaming=True: the raw corpus is never on disk or in memory
as a whole); each is <|endoftext|> followed by its GPT-2 BPE ids, and the ids fill shards of shard_tokens each,
in order: <folder>_val_000000.bin is the first shard (val), then <folder>_train_000001.bin, ... (the format is
in tokens.py, 'Token shards'). Each shard is written atomically and its header says where the source continues,
so an interrupted run, started again with the same settings, skips the shards already written and resumes there.
Offline, the tokenizer needs GPT2_BPE_DIR (see tokens.gpt2_encoding).
"""
import glob
import json
import os
import sys
import time

import numpy as np
from tqdm import tqdm

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(here))) # the repo root: common.py, tokens.py, configurator.py
from common import UserError, exit_on_user_error, first_line, write_bytes_atomic
from configurator import configure
from tokens import (GPT2_EOT, GPT2_VOCAB_SIZE, find_shards, gpt2_encoding, read_shard_header, shard_name,
                    write_shard)

# -----------------------------------------------------------------------------
hf_dataset = 'HuggingFaceFW/fineweb-edu' # the Hugging Face dataset to stream (unless files is set)
name = 'sample-10BT' # its configuration: sample-10BT (~10B GPT-2 tokens), sample-100BT, sample-350BT, ...
files = '' # comma-separated local .parquet/.jsonl/.json files or globs, read in this order instead of hf_dataset
text_field = 'text' # the column (or json field) that holds a document's text
out_dir = '' # where the shards go; '' = beside this script
shard_tokens = 100_000_000 # tokens per shard (200 MB of uint16); the first shard is val
num_proc = max(1, min(8, os.cpu_count() or 1)) # tokenizer threads (tiktoken encodes a batch in parallel)
batch_docs = 512 # documents encoded per batch
# -----------------------------------------------------------------------------
exit_on_user_error() # bad settings and files end in one 'error: ...' line, not a traceback
configure(globals())
# -----------------------------------------------------------------------------
LOADERS = {'.parquet': 'parquet', '.jsonl': 'json', '.json': 'json'}
SETTINGS_FILE = 'prepare.json' # what the shards were made from: a re-run must use the same source and shard size

if shard_tokens < 1 or num_proc < 1 or batch_docs < 1:
    raise UserError("shard_tokens, num_proc and batch_docs must be positive")
out_dir = out_dir or here
prefix = os.path.basename(os.path.normpath(out_dir))


def local_files(spec):
    """[(loader, path)] of the files a --files setting names, in the order given (globs sorted)."""
    found = []
    for part in (p.strip() for p in spec.split(',')):
        paths = sorted(glob.glob(part)) if part else []
        if part and not paths:
            raise UserError(f"files: {part} matches no file: give existing .parquet/.jsonl/.json files or globs")
        for p in paths:
            ext = os.path.splitext(p)[1]
            if ext not in LOADERS:
                raise UserError(f"files: {p} is not .parquet, .jsonl or .json: convert it, or leave it out")
            found.append((LOADERS[ext], p))
    return found


def documents(sources):
    """The text of every document, in a fixed order: the same stream on every run."""
    from datasets import load_dataset
    if not sources:
        try:
            ds = load_dataset(hf_dataset, name=name, split='train', streaming=True)
        except Exception as e:
            raise UserError(f"could not open {hf_dataset} ({name}) from the Hugging Face Hub ({type(e).__name__}: "
                            f"{first_line(e)}); offline, give local parquet/jsonl files with --files")
        parts = [(f"{hf_dataset}/{name}", ds)]
    else: # one file at a time, so that the order is exactly the order of --files
        parts = [(path, load_dataset(loader, data_files=[path], split='train', streaming=True))
                 for loader, path in sources]
    for where, ds in parts:
        try:
            for row in ds.select_columns([text_field]):
                yield row[text_field] or ''
        except (KeyError, ValueError) as e:
            raise UserError(f"{where} has no text field {text_field!r} ({first_line(e)}): set --text_field")


def existing_shards():
    """(shards already written, whether the stream is complete, where it continues: (document, offset))."""
    found = find_shards(out_dir)
    paths = found['val'] + found['train']
    names = [os.path.basename(p) for p in paths]
    expected = [shard_name(prefix, 'val' if i == 0 else 'train', i) for i in range(len(paths))]
    for want, name in zip(expected, names):
        if want != name: # a gap, or shards of another prefix: not this script's output for this folder
            raise UserError(f"{out_dir} has {name} where {want} should be (shards are numbered from 0 without gaps, "
                            f"val first): move the shards away and run again")
    resume = (0, 0)
    for i, path in enumerate(paths):
        h = read_shard_header(path)
        if h['tokens'] != shard_tokens and not h['last']:
            raise UserError(f"{path} holds {h['tokens']:,} tokens but shard_tokens={shard_tokens:,}: "
                            f"use the shard_tokens it was written with, or another out_dir")
        if h['last']:
            return len(paths), True, resume
        resume = (h['next_doc'], h['next_offset'])
    return len(paths), False, resume


def main():
    sources = local_files(files) if files else []
    os.makedirs(out_dir, exist_ok=True)
    settings = dict(source=[p for _, p in sources] or f"{hf_dataset}/{name}", text_field=text_field,
                    shard_tokens=shard_tokens, tokenizer='gpt2')
    settings_path = os.path.join(out_dir, SETTINGS_FILE)
    if os.path.exists(settings_path):
        with open(settings_path, encoding='utf-8') as f:
            old = json.load(f)
        if old != settings:
            changed = ', '.join(f"{k}={old.get(k)!r}" for k in settings if old.get(k) != settings[k])
            raise UserError(f"{out_dir} holds shards made with {changed}: prepare with those settings to "
                            f"resume, or give another out_dir")
    n_done, complete, (skip_docs, skip_tokens) = existing_shards()
    if complete:
        print(f"{out_dir}: all {n_done} shards are already written")
        return
    write_bytes_atomic(settings_path, json.dumps(settings, indent=1).encode('utf-8'))
    if n_done:
        print(f"{n_done} shard(s) already written: resuming at document {skip_docs:,}, token {skip_tokens:,} of it")
    enc = gpt2_encoding()

    buf = np.empty(shard_tokens, np.uint16) # GPT-2's ids fit in uint16
    fill, index, written = 0, n_done, n_done * shard_tokens

    def flush(next_doc, next_offset, last):
        nonlocal fill, index
        split = 'val' if index == 0 else 'train'
        write_shard(os.path.join(out_dir, shard_name(prefix, split, index)), buf[:fill], GPT2_VOCAB_SIZE,
                    next_doc, next_offset, last)
        fill, index = 0, index + 1

    bar = tqdm(unit='tok', unit_scale=True, initial=written, desc=f'writing {out_dir}')
    t0, new_tokens = time.time(), 0
    doc = skip_docs
    stream = documents(sources)
    for _ in range(skip_docs): # the documents the written shards already hold (read, not tokenized)
        next(stream, None)
    batch = []
    while True:
        text = next(stream, None)
        if text is not None:
            batch.append(text)
        if batch and (text is None or len(batch) == batch_docs):
            for ids in enc.encode_ordinary_batch(batch, num_threads=num_proc):
                toks = np.array([GPT2_EOT] + ids, np.uint16)
                offset = skip_tokens if doc == skip_docs else 0 # the part of the first one written before
                while offset < len(toks):
                    if fill == shard_tokens: # full, and more tokens follow: it is not the last shard
                        flush(doc, offset, last=False)
                    take = min(shard_tokens - fill, len(toks) - offset)
                    buf[fill:fill + take] = toks[offset:offset + take]
                    fill, offset = fill + take, offset + take
                    bar.update(take)
                    new_tokens += take
                doc += 1
            batch = []
        if text is None:
            break
    if fill == 0:
        raise UserError(f"no tokens to write to {out_dir}: the source holds no documents")
    flush(doc, 0, last=True)
    bar.close()
    dt = time.time() - t0
    print(f"wrote {new_tokens:,} tokens in {dt:.1f}s ({new_tokens / max(dt, 1e-9):,.0f} tokens/s); "
          f"{index} shards in {out_dir}, {index - 1} of them train")
    if index < 2:
        print("note: the whole corpus fit in the val shard: lower shard_tokens to get train shards too")


if __name__ == '__main__':
    main()
