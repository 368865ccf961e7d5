"""
Arithmetic problems as characters, for teaching a small GPT to add, subtract, multiply and divide.

$ python data/arithmetic/prepare.py                                   # 2-digit addition, into data/arithmetic
$ python data/arithmetic/prepare.py --ops=+-*/ --digits=3 --out_dir=data/arithmetic_all3

A problem is a line: the operands in decimal (no leading zeros), the operator, '=', the answer, '\n'. Answers:
a+b, a-b (negative allowed: '12-57=-45'), a*b, and for a/b (b >= 1) the integer quotient and remainder written
'17/5=3r2'. For the operators in reverse (default all four) the answer's digits are stored least significant
first ('57+68=521'; a quotient and a remainder each on its own: '17/50=0r71'), the order in which carries are
worked out; tokens.reverse_answers turns them back when decoding. Division learnt faster reversed too (see
docs/arithmetic.md).

Every problem is a row of row_len tokens: the line, then pad characters up to the longest line of the dataset.
Files written (atomically) into out_dir:
- train.bin, val.bin: the rows as uint16 char ids; val holds num_val problems per operator, train up to
  num_train others; the two never share a problem;
- train_mask.bin, val_mask.bin: one uint8 per token, 1 on the answer characters and the '\n' that ends the answer
  (the targets train.py's loss counts with loss_mask=True), 0 on the prompt and the padding;
- meta.pkl and meta.json: the vocabulary (nanoGPT's format) plus ops, digits, reverse, row_len and pad.
"""
import os
import sys

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(here))) # the repo root: common.py, tokens.py, configurator.py
from common import UserError, exit_on_user_error, write_bytes_atomic
from configurator import configure
from tokens import reverse_answers, write_meta, write_tokens

OPS = '+-*/'
MAX_DIGITS = 6 # a 6-digit product has 12 digits; larger problems make rows (and contexts) long for little use
PAD = '\n' # fills a row after the answer's '\n': each problem reads as a line of its own, and the loss skips it
ANSWER_END = '\n'


def answer(a, op, b):
    """The answer to a op b as it reads (not reversed): '125', '-45', '3876', '3r2'."""
    if op == '+':
        return str(a + b)
    if op == '-':
        return str(a - b)
    if op == '*':
        return str(a * b)
    q, r = divmod(a, b)
    return f"{q}r{r}"


def problem_line(a, op, b, reverse):
    """The line of a problem as stored: prompt, answer (digits reversed if op is in reverse), '\n'."""
    line = f"{a}{op}{b}={answer(a, op, b)}"
    return reverse_answers(line, reverse) + ANSWER_END


def check_settings(ops, digits, reverse, num_val, num_train):
    """A one-line UserError for settings that cannot make a dataset."""
    if not ops or any(c not in OPS for c in ops) or len(set(ops)) != len(ops):
        raise UserError(f"ops={ops!r} must be some of {OPS!r}, each once (e.g. --ops=+ or --ops=+-*/)")
    if any(c not in OPS for c in reverse):
        raise UserError(f"reverse={reverse!r} must be some of {OPS!r} (the operators whose answers are reversed), "
                        f"or empty for none")
    if not 1 <= digits <= MAX_DIGITS:
        raise UserError(f"digits={digits} must be 1..{MAX_DIGITS}: the most digits an operand has")
    if num_val < 1 or num_train < 1:
        raise UserError(f"num_val={num_val} and num_train={num_train} must both be >= 1")
    smallest = min(problem_count(op, digits) for op in ops)
    if num_val >= smallest:
        raise UserError(f"num_val={num_val} leaves no training problems: there are only {smallest:,} "
                        f"{digits}-digit problems of an operator; use a smaller num_val or more digits")


def problem_count(op, digits):
    """How many problems op has with operands 0..10**digits-1 (the divisor 1.. for '/')."""
    n = 10 ** digits
    return n * (n - 1) if op == '/' else n * n


def split_problems(op, digits, num_val, num_train, rng):
    """(val, train): disjoint lists of (a, b) for op, num_val held out and up to num_train others, drawn at random."""
    n = 10 ** digits
    total = problem_count(op, digits)
    picked = rng.choice(total, size=min(total, num_val + num_train), replace=False)
    if op == '/':
        a, b = picked // (n - 1), picked % (n - 1) + 1 # divisors 1..n-1
    else:
        a, b = picked // n, picked % n
    pairs = list(zip(a.tolist(), b.tolist()))
    return pairs[:num_val], pairs[num_val:]


def encode_rows(lines, row_len, stoi):
    """(ids, mask) of lines (as problem_line gives them): each padded to row_len tokens, the mask on its answer."""
    lut = np.zeros(max(map(ord, stoi)) + 1, dtype=np.uint16) # char code -> token id (every char here is ASCII)
    for c, i in stoi.items():
        lut[ord(c)] = i
    text = ''.join(line.ljust(row_len, PAD) for line in lines)
    ids = lut[np.frombuffer(text.encode('ascii'), dtype=np.uint8)]
    answer_start = np.array([line.index('=') + 1 for line in lines])[:, None]
    line_end = np.array([len(line) for line in lines])[:, None]
    col = np.arange(row_len)[None, :]
    mask = ((col >= answer_start) & (col < line_end)).astype(np.uint8) # the answer and its '\n'
    return ids, mask.reshape(-1)


def prepare(out_dir, ops, digits, reverse, num_val, num_train, seed):
    """Write the dataset (see the module's docstring) into out_dir; returns the entries it adds to the meta."""
    check_settings(ops, digits, reverse, num_val, num_train)
    rng = np.random.default_rng(seed)
    lines = {'train': [], 'val': []}
    for op in ops:
        val, train = split_problems(op, digits, num_val, num_train, rng)
        lines['val'] += [problem_line(a, op, b, reverse) for a, b in val]
        lines['train'] += [problem_line(a, op, b, reverse) for a, b in train]
    rng.shuffle(lines['train']) # with several operators, each part of the file mixes them
    row_len = max(len(line) for split in lines.values() for line in split)
    chars = sorted(set('0123456789=' + ops + PAD + ('r' if '/' in ops else ''))) # '-' is also the minus sign
    stoi = {c: i for i, c in enumerate(chars)}
    os.makedirs(out_dir, exist_ok=True)
    for split, split_lines in lines.items():
        ids, mask = encode_rows(split_lines, row_len, stoi)
        print(f"{split}: {len(split_lines):,} problems, {len(ids):,} tokens")
        write_tokens(os.path.join(out_dir, f'{split}.bin'), ids)
        write_bytes_atomic(os.path.join(out_dir, f'{split}_mask.bin'), mask.tobytes())
    extra = dict(ops=ops, digits=digits, reverse=reverse, row_len=row_len, pad=PAD)
    write_meta(out_dir, chars, extra)
    print(f"vocab {''.join(chars)!r} ({len(chars)} chars), rows of {row_len} tokens, answers of {reverse!r} "
          f"reversed, written to {out_dir}")
    return extra


if __name__ == '__main__':
    # -------------------------------------------------------------------------
    ops = '+' # the operators, some of '+-*/': e.g. --ops=+-*/ mixes all four in one dataset
    digits = 2 # operands are 0..10**digits-1 (the divisor 1..), written without leading zeros
    reverse = '+-*/' # the operators whose answers are stored least significant digit first; '' = none
    num_val = 1000 # held-out problems per operator (val.bin, and what evaluate.py scores)
    num_train = 1000000 # at most this many training problems per operator (all the others when fewer exist)
    out_dir = '' # where the files go; '' = beside this script (dataset='arithmetic'); data/<name> for another
    seed = 2357
    # -------------------------------------------------------------------------
    exit_on_user_error() # bad settings end in one 'error: ...' line, not a traceback
    configure(globals())
    prepare(out_dir or here, str(ops), digits, str(reverse), num_val, num_train, seed)
