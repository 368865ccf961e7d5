"""
Exact-match accuracy of a trained arithmetic model on its dataset's held-out problems (val.bin).

$ python data/arithmetic/evaluate.py --out_dir=out-arithmetic

Each val row is split at its '=' into the prompt and the stored answer (with its '\n'). The model continues the
prompts greedily (top_k=1), in batches of prompts of one length, for as many tokens as the stored answer may take
(the row length less the prompt); a problem counts as right only if the continuation is exactly the stored answer
followed by '\n', digit for digit and in the stored order. The accuracy is printed overall and per operator,
with a few of the wrong answers (in reading order).
"""
import os
import sys

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(here))
sys.path.insert(0, ROOT) # the repo root: common.py, model.py, tokens.py, configurator.py
from common import UserError, exit_on_user_error
from configurator import configure
from model import GPT, prepare_for_sampling
from tokens import dataset_tokenizer, load_meta, open_tokens

SHOW_WRONG = 5 # wrong answers printed


def val_problems(data_dir, split='val'):
    """(prompts, answers, row_len): the split's rows as text, split after their '='; answers as stored, with '\n'."""
    meta = load_meta(data_dir)
    if meta is None or 'row_len' not in meta:
        raise UserError(f"{data_dir} is not an arithmetic dataset (its meta has no row_len): "
                        f"prepare one with python data/arithmetic/prepare.py")
    itos, row_len = meta['itos'], meta['row_len']
    ids = open_tokens(data_dir, split, row_len)
    text = ''.join(itos[i] for i in ids.tolist())
    prompts, answers = [], []
    for start in range(0, len(text), row_len):
        prompt, _, rest = text[start:start + row_len].partition('=')
        prompts.append(prompt + '=')
        answers.append(rest[:rest.index('\n') + 1])
    return prompts, answers, row_len


@torch.no_grad()
def accuracy(model, prompts, answers, row_len, encode, decode_raw, batch_size, device):
    """The number of prompts whose greedy continuation is exactly their answer, and the wrong (prompt, got) pairs."""
    by_len = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    right, wrong = 0, []
    for t, idx in sorted(by_len.items()):
        for b in range(0, len(idx), batch_size):
            batch = idx[b:b + batch_size]
            x = torch.tensor([encode(prompts[i]) for i in batch], dtype=torch.long, device=device)
            out = model.generate(x, row_len - t, temperature=1.0, top_k=1)[:, t:].tolist()
            for i, ids in zip(batch, out):
                got = decode_raw(ids)
                got = got[:got.index('\n') + 1] if '\n' in got else got
                if got == answers[i]:
                    right += 1
                else:
                    wrong.append((i, got))
    return right, wrong


if __name__ == '__main__':
    # -------------------------------------------------------------------------
    out_dir = 'out-arithmetic' # the training run whose ckpt.pt is scored
    split = 'val' # 'val': the held-out problems; 'train' scores the training problems instead
    batch_size = 1000 # prompts decoded together
    device = 'cpu'
    unsafe_load = False # load a checkpoint that holds Python objects (it can run code: trusted files only)
    # -------------------------------------------------------------------------
    exit_on_user_error() # bad settings and files end in one 'error: ...' line, not a traceback
    configure(globals())
    if split not in ('train', 'val'):
        raise UserError(f"split={split!r} must be 'val' or 'train'")
    if batch_size < 1:
        raise UserError(f"batch_size={batch_size} must be >= 1")
    model, checkpoint = GPT.from_checkpoint(os.path.join(out_dir, 'ckpt.pt'), 'cpu', unsafe=unsafe_load, dropout=0.0)
    dataset = checkpoint.get('config', {}).get('dataset')
    del checkpoint
    if not dataset:
        raise UserError(f"the checkpoint in {out_dir} names no dataset: it was not trained by train.py here")
    data_dir = os.path.join(ROOT, 'data', dataset)
    model = prepare_for_sampling(model, device, 'float32', False)
    encode, decode = dataset_tokenizer(data_dir, model.config.vocab_size)
    itos = load_meta(data_dir)['itos']
    prompts, answers, row_len = val_problems(data_dir, split)
    if row_len > model.config.block_size:
        raise UserError(f"the rows of {dataset!r} ({row_len} tokens) are longer than the model's block_size "
                        f"({model.config.block_size}): it was trained on another dataset")
    right, wrong = accuracy(model, prompts, answers, row_len, encode, lambda ids: ''.join(itos[i] for i in ids),
                            batch_size, device)
    ops = load_meta(data_dir)['ops']
    per_op = {op: [sum(op in p for p in prompts), 0] for op in ops}
    for i, _ in wrong:
        per_op[next(op for op in ops if op in prompts[i])][1] += 1
    print(f"exact match on {split} of {dataset}: {right}/{len(prompts)} = {100 * right / len(prompts):.2f}%")
    for op, (n, bad) in per_op.items():
        print(f"  {op}: {n - bad}/{n} = {100 * (n - bad) / n:.2f}%")
    for i, got in wrong[:SHOW_WRONG]:
        print(f"  wrong: {decode(encode(prompts[i] + answers[i])).strip()} but the model says "
              f"{decode(encode(prompts[i] + got)).strip()!r}")
