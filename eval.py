"""
Evaluate a GPT on HellaSwag: the script, and the scoring functions that train.py calls at each eval.

$ python eval.py hellaswag --out_dir=out                                  # the checkpoint out/ckpt.pt
$ python eval.py hellaswag --init_from=gpt2                               # OpenAI's GPT-2 124M (or a local HF dir)
$ python eval.py hellaswag --init_from=gpt2 --hellaswag_file=hellaswag_val.jsonl --limit=1000

HellaSwag (Zellers et al., 2019) gives a context and 4 endings, one of them right. Each ending is scored as the
GPT-2 reproductions score it: the context's GPT-2 tokens followed by the ending's (encoded with a leading space),
all 4 rows in one right-padded batch; an ending's loss is the cross-entropy of its own tokens given everything
before them (the context's tokens are not scored). The prediction is the ending of lowest loss:
- acc_norm: the mean loss per token of the ending (normalized by its length in tokens); the number usually quoted.
- acc: the summed loss, which favours short endings.
References with this scoring: GPT-2 124M about 0.294 acc_norm on the 10,042 val examples, GPT-3 Small 0.337
(in the GPT-3 paper). Random guessing gives 0.25. More in docs/hellaswag.md.

Settings are --key=value as in sample.py (configurator.py); --help lists them.
"""
import json
import math
import os
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from common import UserError, atomic_write, first_line

ROOT = os.path.dirname(os.path.abspath(__file__))
HELLASWAG_URL = 'https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_{split}.jsonl'
LABELLED_SPLITS = ('train', 'val') # the official test split has no labels
N_ENDINGS = 4
DOWNLOAD_TIMEOUT_SECONDS = 60
PROGRESS_EVERY = 1000 # examples between progress lines of the script
CHANCE = 1 / N_ENDINGS
GPT2_124M_ACC_NORM = 0.294 # GPT-2 124M with this scoring (the reproductions' number), for docs and plot.py
GPT3_SMALL_ACC_NORM = 0.337 # GPT-3 Small (125M) in the GPT-3 paper


def default_cache_dir():
    """Where a downloaded HellaSwag file is kept: $XDG_CACHE_HOME/hellaswag, else ~/.cache/hellaswag."""
    return os.path.join(os.environ.get('XDG_CACHE_HOME') or os.path.expanduser(os.path.join('~', '.cache')),
                        'hellaswag')

# -----------------------------------------------------------------------------
# the data: official jsonl, checked line by line

def hellaswag_file_path(hellaswag_file='', split='val', cache_dir=''):
    """
    The jsonl to read: hellaswag_file if given, else the official split from cache_dir, downloaded there once
    (written atomically: a cut download leaves nothing behind). Offline and without a cached copy, a UserError.
    """
    if hellaswag_file:
        if not os.path.isfile(hellaswag_file):
            raise UserError(f"hellaswag_file={hellaswag_file}: no such file; give a HellaSwag jsonl "
                            f"(e.g. hellaswag_val.jsonl from github.com/rowanz/hellaswag)")
        return hellaswag_file
    if split not in LABELLED_SPLITS:
        raise UserError(f"split={split!r} is not one of {', '.join(LABELLED_SPLITS)} "
                        f"(HellaSwag's test split has no labels to score against)")
    cache_dir = cache_dir or default_cache_dir()
    path = os.path.join(cache_dir, f'hellaswag_{split}.jsonl')
    if os.path.isfile(path):
        return path
    import urllib.request
    url = HELLASWAG_URL.format(split=split)
    print(f"downloading {url} to {path}")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as r:
            raw = r.read()
    except OSError as e:
        raise UserError(f"could not download HellaSwag's {split} split from {url} ({first_line(e)}); offline, "
                        f"fetch that file elsewhere and pass it with --hellaswag_file=PATH") from None
    os.makedirs(cache_dir, exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, 'wb') as f:
        f.write(raw)
    return path


def parse_example(line, where):
    """One jsonl line as {'ctx', 'endings', 'label'}; where (file:line) names it in the error of a bad line."""
    try:
        record = json.loads(line)
    except ValueError as e:
        raise UserError(f"{where} is not valid JSON ({first_line(e)}): HellaSwag files hold one JSON object a line")
    if not isinstance(record, dict):
        raise UserError(f"{where} is not a JSON object with ctx, endings and label")
    missing = [k for k in ('ctx', 'endings', 'label') if k not in record]
    if missing:
        raise UserError(f"{where} has no {', '.join(missing)}: each HellaSwag line needs ctx, endings and label "
                        f"(the test split has no labels)")
    ctx, endings, label = record['ctx'], record['endings'], record['label']
    if not isinstance(ctx, str) or not ctx.strip():
        raise UserError(f"{where}: ctx must be a non-empty string")
    if (not isinstance(endings, list) or len(endings) != N_ENDINGS
            or not all(isinstance(e, str) and e.strip() for e in endings)):
        raise UserError(f"{where}: endings must be a list of {N_ENDINGS} non-empty strings")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < N_ENDINGS:
        raise UserError(f"{where}: label must be an integer from 0 to {N_ENDINGS - 1}, not {label!r}")
    return {'ctx': ctx, 'endings': endings, 'label': label}


def load_hellaswag(path, limit=0):
    """The examples of a HellaSwag jsonl (the first limit of them if limit > 0); blank lines are skipped."""
    examples = []
    try:
        with open(path, encoding='utf-8') as f:
            for n, line in enumerate(f, start=1):
                if limit and len(examples) >= limit:
                    break
                if line.strip():
                    examples.append(parse_example(line, f"{path} line {n}"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text ({e.reason}): give the HellaSwag jsonl as it is published")
    if not examples:
        raise UserError(f"{path} holds no examples: give a HellaSwag jsonl, one JSON object a line")
    return examples

# -----------------------------------------------------------------------------
# tokens

def hellaswag_encoder(data_dir=None, vocab_size=None):
    """
    GPT-2's BPE encode function, which HellaSwag is scored in. A model with its own vocabulary (a dataset with a
    meta file: char-level) is refused: HellaSwag's text has characters such vocabularies lack, and a score over
    the examples that happen to fit would not compare with any other.
    """
    from tokens import GPT2_VOCAB_SIZE, gpt2_encoding, meta_file
    own = meta_file(data_dir) if data_dir else None
    if own or (vocab_size is not None and vocab_size < GPT2_VOCAB_SIZE):
        if own:
            dataset = os.path.basename(data_dir)
            meta = os.path.join('data', dataset, os.path.basename(own))
            what = f"dataset {dataset!r} has its own vocabulary ({meta})"
        else:
            what = f"the model has {vocab_size} tokens, fewer than GPT-2's {GPT2_VOCAB_SIZE:,}"
        raise UserError(f"HellaSwag is scored in GPT-2 tokens but {what}: evaluate a model trained on GPT-2 tokens "
                        f"(e.g. dataset='shakespeare' or 'openwebtext'), or leave eval_hellaswag off")
    return gpt2_encoding().encode_ordinary


def encode_example(example, encode):
    """(context ids, [ids of each ending], label); an ending is encoded after a space, as it follows the context."""
    return encode(example['ctx']), [encode(' ' + e) for e in example['endings']], example['label']


def example_batch(encoded, block_size):
    """
    The 4 rows of one example for the model: (idx, targets), each (4, T), right-padded. targets holds each row's
    next token where that token belongs to the ending, else -1 (the context and the padding are not scored).
    A row longer than block_size + 1 tokens loses context tokens from its start; an ending that alone is longer
    keeps only its first block_size tokens after the context's last token.
    """
    ctx_ids, endings, _ = encoded
    rows, starts = [], []
    for end in endings:
        end = end[:block_size]
        ctx = ctx_ids[-(block_size + 1 - len(end)):]
        rows.append(ctx + end)
        starts.append(len(ctx))
    width = max(map(len, rows))
    tokens = torch.zeros(N_ENDINGS, width, dtype=torch.long)
    scored = torch.zeros(N_ENDINGS, width, dtype=torch.bool)
    for i, (row, start) in enumerate(zip(rows, starts)):
        tokens[i, :len(row)] = torch.tensor(row)
        scored[i, start:len(row)] = True
    # position t predicts token t+1
    targets = torch.where(scored[:, 1:], tokens[:, 1:], -1)
    return tokens[:, :-1].contiguous(), targets


@torch.no_grad()
def token_losses(model, idx, targets, ctx=nullcontext()):
    """The cross-entropy of each target token, (rows, T) in fp32, 0 where the target is -1."""
    with ctx:
        logits, _ = model(idx, targets) # with targets the model returns the logits of every position
    # only the scored positions (the endings), as (rows, vocab): the softmax skips the context, and cross_entropy
    # over a (batch, vocab, T) layout took 2-4x as long on a CPU
    scored = targets != -1
    losses = torch.zeros(targets.shape, device=targets.device)
    losses[scored] = F.cross_entropy(logits[scored].float(), targets[scored], reduction='none')
    return losses


def choose(losses, targets):
    """
    From per-token losses (rows, T) and targets (-1: not scored): the row of lowest summed loss (acc's pick)
    and the row of lowest mean loss per scored token (acc_norm's pick).
    """
    scored = (targets != -1).float()
    total = (losses * scored).sum(1)
    mean = total / scored.sum(1)
    return int(total.argmin()), int(mean.argmin())


def evaluate_hellaswag(model, encoded_examples, device, ctx=nullcontext(), rank=0, world_size=1):
    """
    This rank's counts over the examples, a tensor [examples, right by acc, right by acc_norm] on device: summed
    over ranks (all_reduce) they are one process's counts. Rank r scores examples r, r+W, ...; a rank with one
    example fewer scores its last one again, uncounted, so that every rank runs as many forward passes (FSDP
    needs every rank in each one). The model is put in eval mode and back.
    """
    counts = torch.zeros(3, device=device) # fp32 is exact for counts below 2**24 (and MPS has no fp64)
    n = len(encoded_examples)
    was_training = model.training
    model.eval()
    block_size = model.config.block_size
    for i in range(rank, math.ceil(n / world_size) * world_size, world_size):
        encoded = encoded_examples[min(i, n - 1)]
        idx, targets = example_batch(encoded, block_size)
        pick_sum, pick_mean = choose(token_losses(model, idx.to(device), targets.to(device), ctx), targets.to(device))
        if i < n:
            label = encoded[2]
            counts += torch.tensor([1.0, pick_sum == label, pick_mean == label], device=device)
    model.train(was_training)
    return counts


def accuracies(counts):
    """{'examples', 'acc', 'acc_norm'} from evaluate_hellaswag's (all-reduced) counts."""
    n, right, right_norm = (float(c) for c in counts)
    return {'examples': int(n), 'acc': right / n, 'acc_norm': right_norm / n}

# -----------------------------------------------------------------------------
# train.py's side

def hellaswag_for_training(hellaswag_file, dataset):
    """
    The encoded examples for train.py's eval_hellaswag: read, checked and tokenized once before training, so
    that a bad file, a char-level dataset or a missing tokenizer stops the run before its first step.
    """
    encode = hellaswag_encoder(os.path.join(ROOT, 'data', dataset))
    return [encode_example(e, encode) for e in load_hellaswag(hellaswag_file_path(hellaswag_file))]


def hellaswag_acc_norm(model, encoded_examples, device, ctx, rank, world_size, distributed):
    """acc_norm over all the examples, each rank scoring its share (every rank calls it and gets the same value)."""
    counts = evaluate_hellaswag(model, encoded_examples, device, ctx, rank, world_size)
    if distributed:
        torch.distributed.all_reduce(counts)
    return accuracies(counts)['acc_norm']

# -----------------------------------------------------------------------------
# the script

def main(argv):
    from configurator import configure
    from device import autocast_context, keep_freed_memory, resolve_device, resolve_dtype
    from huggingface import GPT2_SIZES, is_pretrained
    from model import GPT

    settings = dict(
        init_from='resume', # 'resume' (out_dir/ckpt.pt), 'gpt2'..'gpt2-xl', or a local Hugging Face GPT-2 directory
        out_dir='out', # the training run to evaluate, with init_from='resume'
        hellaswag_file='', # a HellaSwag jsonl; '' = the official split, downloaded once into cache_dir
        split='val', # the official split to download: 'val' (10,042 examples) or 'train'
        cache_dir='', # where the download is kept; '' = $XDG_CACHE_HOME/hellaswag or ~/.cache/hellaswag
        limit=0, # score only the first limit examples; 0 = all
        device='auto', # 'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:0', 'mps'
        dtype='auto', # 'float32', 'bfloat16', 'float16'; 'auto': bf16 where native, else fp16 on GPUs, else fp32
        unsafe_load=False, # load a checkpoint that holds Python objects (it can run code: trusted files only)
    )
    configure(settings, argv)
    s = settings
    if s['limit'] < 0:
        raise UserError(f"limit={s['limit']} must be >= 0 (0 scores every example)")
    if s['init_from'] != 'resume' and not is_pretrained(s['init_from']):
        raise UserError(f"init_from={s['init_from']!r} is not supported: use 'resume' (the ckpt.pt in out_dir), "
                        f"one of {', '.join(GPT2_SIZES)}, or a directory holding a Hugging Face GPT-2")
    # the data first: a bad file is reported before a model is loaded
    path = hellaswag_file_path(s['hellaswag_file'], s['split'], s['cache_dir'])
    examples = load_hellaswag(path, s['limit'])
    device = resolve_device(s['device'])
    dtype = resolve_dtype(s['dtype'], device)
    if torch.device(device).type == 'cpu':
        keep_freed_memory()
    if s['init_from'] == 'resume':
        model, checkpoint = GPT.from_checkpoint(os.path.join(s['out_dir'], 'ckpt.pt'), 'cpu',
                                                unsafe=s['unsafe_load'], dropout=0.0)
        dataset = (checkpoint.get('config') or {}).get('dataset')
        del checkpoint
        source = os.path.join(s['out_dir'], 'ckpt.pt')
    else:
        model, dataset, source = GPT.from_pretrained(s['init_from'], dict(dropout=0.0)), None, s['init_from']
    encode = hellaswag_encoder(os.path.join(ROOT, 'data', dataset) if dataset else None, model.config.vocab_size)
    encoded = [encode_example(e, encode) for e in examples]
    model.to(device)
    ctx = autocast_context(device, dtype)
    print(f"HellaSwag: {len(encoded):,} examples from {path}; model {source} on {device} in {dtype}")
    t0 = time.time()
    counts = torch.zeros(3)
    for start in range(0, len(encoded), PROGRESS_EVERY):
        counts += evaluate_hellaswag(model, encoded[start:start + PROGRESS_EVERY], device, ctx).cpu()
        if start + PROGRESS_EVERY < len(encoded):
            done = accuracies(counts)
            print(f"{done['examples']:,}/{len(encoded):,}: acc_norm {done['acc_norm']:.4f}, acc {done['acc']:.4f}")
    seconds = time.time() - t0
    result = accuracies(counts)
    print(f"acc_norm {result['acc_norm']:.4f}, acc {result['acc']:.4f} over {result['examples']:,} examples "
          f"({seconds:.1f}s, {result['examples'] / seconds:.2f} examples/s)")
    # one line for scripts, as bench.py's
    print(f"hellaswag: split={os.path.basename(path)} examples={result['examples']} acc_norm={result['acc_norm']:.4f} "
          f"acc={result['acc']:.4f} seconds={seconds:.2f} examples_per_s={result['examples'] / seconds:.3f}")


COMMANDS = {'hellaswag': main}

if __name__ == '__main__':
    from common import exit_on_user_error, error_exit
    exit_on_user_error()
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        error_exit(f"usage: python eval.py {'|'.join(COMMANDS)} [--key=value ...] (--help lists the settings)")
    COMMANDS[sys.argv[1]](sys.argv[2:])
