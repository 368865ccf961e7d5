"""
OpenWebText, or your own text files, as GPT-2 BPE tokens for pretraining (config/gpt2.py).

$ python data/openwebtext/prepare.py                       # Hugging Face's openwebtext (8M documents, ~54GB of cache)
$ python data/openwebtext/prepare.py --files='corpus/*.txt,extra.jsonl' --out_dir=data/mycorpus

Both go through the same path: a Hugging Face dataset ('openwebtext', or the 'text'/'json' loaders on
local files), a shuffled split of 0.05% of the documents for val (seed 2357), each document encoded with
tiktoken's 'gpt2' and followed by <|endoftext|> (50256), and the ids written as uint16 to train.bin and
val.bin through a memmap, one shard at a time, so memory never holds a whole split. For openwebtext that
is ~9B train tokens (~17GB) and ~4M val tokens, as in nanoGPT. Offline, the tokenizer needs GPT2_BPE_DIR
(see tokens.gpt2_encoding).
Local files: .txt is one document per file (text_sample_by='document'; 'line' or 'paragraph' split it),
.json/.jsonl take the text_field of each record; a directory means the .txt/.json/.jsonl files under it.
"""
import os
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(here))) # the repo root: common.py, tokens.py, configurator.py
from common import UserError, exit_on_user_error, first_line
from configurator import configure
from tokens import gpt2_encode, gpt2_encoding, text_file_paths, write_token_shards

# -----------------------------------------------------------------------------
files = '' # comma-separated local .txt/.json/.jsonl files, globs or directories; '' = Hugging Face's openwebtext
out_dir = '' # where train.bin and val.bin go; '' = beside this script
text_field = 'text' # the field of each json record that holds the document
text_sample_by = 'document' # for .txt: 'document' (a file is a document), 'paragraph' or 'line'
num_proc = max(1, min(8, os.cpu_count() or 1)) # processes for loading and tokenizing; about half the CPU cores is good
test_size = 0.0005 # the fraction of documents held out for val
seed = 2357
n_shards = 1024 # a split is written in this many pieces: memory holds one at a time
compare_single_process = False # also time a plain one-process encode_ordinary loop over the same documents
# -----------------------------------------------------------------------------
exit_on_user_error() # bad settings and files end in one 'error: ...' line, not a traceback
configure(globals())
# -----------------------------------------------------------------------------
LOADERS = {'.txt': 'text', '.json': 'json', '.jsonl': 'json'}

def local_files(spec):
    """The files a --files setting names, grouped by the Hugging Face loader that reads them."""
    by_loader = {}
    for part in (p.strip() for p in spec.split(',')):
        if not part:
            continue
        paths = text_file_paths(part, LOADERS) # a directory stands for the files under it that a loader reads
        if not paths:
            raise UserError(f"files: {part} matches no file: give existing .txt/.json/.jsonl files, globs or directories")
        for p in paths:
            ext = os.path.splitext(p)[1]
            if ext not in LOADERS:
                raise UserError(f"files: {p} is not .txt, .json or .jsonl: convert it, or leave it out")
            by_loader.setdefault(LOADERS[ext], []).append(p)
    return by_loader

if text_sample_by not in ('document', 'paragraph', 'line'):
    raise UserError(f"text_sample_by={text_sample_by!r} must be 'document', 'paragraph' or 'line'")
if num_proc <= 0 or n_shards <= 0 or not 0 < test_size < 1:
    raise UserError("num_proc and n_shards must be > 0 and test_size in (0, 1)")
by_loader = local_files(files) if files else None
out_dir = out_dir or here
os.makedirs(out_dir, exist_ok=True)
enc = gpt2_encoding() # loaded (or failing) now, before hours of work; the worker processes inherit it

from datasets import concatenate_datasets, load_dataset
if by_loader is None:
    try:
        dataset = load_dataset('openwebtext', split='train', num_proc=num_proc)
    except Exception as e:
        raise UserError(f"could not load openwebtext from Hugging Face ({type(e).__name__}: {str(e)[:200]}); "
                        f"offline, pass your own text with --files=...")
else:
    parts = []
    for loader, paths in by_loader.items():
        print(f"loading {len(paths)} {loader} file(s)")
        extra = {'sample_by': text_sample_by} if loader == 'text' else {}
        try:
            part = load_dataset(loader, data_files=paths, split='train', **extra)
        except Exception as e: # the loaders wrap what went wrong (e.g. a UnicodeDecodeError) in errors of their own
            cause = e.__cause__ or e
            raise UserError(f"could not read {', '.join(paths)[:200]} ({type(cause).__name__}: {first_line(cause)}): "
                            f"give UTF-8 text (.txt), or JSON records with a {text_field!r} field (.json/.jsonl)")
        field = 'text' if loader == 'text' else text_field
        if field not in part.column_names:
            raise UserError(f"the json records have no field {field!r} (they have {part.column_names}): set --text_field")
        kind = getattr(part.features[field], 'dtype', type(part.features[field]).__name__)
        if kind not in ('string', 'large_string', 'null'): # 'null': every record's field is null, dropped below
            raise UserError(f"the json field {field!r} holds {kind}, not text: "
                            f"set --text_field to the field with the documents")
        part = part.select_columns([field])
        parts.append(part.rename_column(field, 'text') if field != 'text' else part)
    dataset = concatenate_datasets(parts)
    n_docs = len(dataset)
    dataset = dataset.filter(lambda batch: [t is not None for t in batch['text']], batched=True,
                             desc='dropping null documents')
    if len(dataset) < n_docs:
        print(f"dropped {n_docs - len(dataset):,} record(s) whose {text_field!r} is null")
if len(dataset) < 2:
    raise UserError(f"only {len(dataset)} document(s): a train/val split needs at least 2")

split_dataset = dataset.train_test_split(test_size=test_size, seed=seed, shuffle=True)
split_dataset['val'] = split_dataset.pop('test') # train.py reads the held-out split as 'val'

def process(batch):
    # a batch of documents per call: far less per-call overhead in datasets than one document at a time
    ids = gpt2_encode(batch['text'], eot=True) # the EOT token ends each document
    return {'ids': ids, 'len': [len(x) for x in ids]}

t0 = time.time()
tokenized = split_dataset.map(process, batched=True, remove_columns=split_dataset['train'].column_names,
                              desc='tokenizing the splits', num_proc=num_proc if num_proc > 1 else None)
total = 0
for split, dset in tokenized.items():
    path = os.path.join(out_dir, f'{split}.bin')
    n = write_token_shards(dset, path, n_shards, desc=f'writing {path}')
    print(f"{split} has {n:,} tokens ({len(dset):,} documents)")
    total += n
dt = time.time() - t0
print(f"tokenized and wrote {total:,} tokens in {dt:.1f}s: {total / dt:,.0f} tokens/s")
if compare_single_process:
    # the same documents through one process, without datasets: what num_proc and the sharded writes buy
    t0 = time.time()
    n = sum(len(enc.encode_ordinary(text)) + 1 for d in split_dataset.values() for text in d['text'])
    single = time.time() - t0
    print(f"one-process encode_ordinary loop: {n:,} tokens in {single:.1f}s: {n / single:,.0f} tokens/s "
          f"(num_proc={num_proc} pipeline, writing included: {dt / single:.2f}x its time)")
# to read the bin files later, e.g. with numpy: m = np.memmap('train.bin', dtype=np.uint16, mode='r')
