"""
Sample from a trained model.

$ python sample.py --out_dir=out-shakespeare-char --start="ROMEO:" --num_samples=3
$ python sample.py --out_dir=out-shakespeare-char --start=FILE:prompt.txt
"""
import os

import torch

from configurator import configure
from model import (GPT, GPT2_SIZES, GPT2_VOCAB_SIZE, UserError, check_sampling, exit_on_user_error, gpt2_encoding, is_pretrained,
                   load_meta, meta_file, read_utf8, resolve_device, resolve_dtype, keep_freed_memory, prepare_for_sampling)

# -----------------------------------------------------------------------------
init_from = 'resume' # 'resume' (the ckpt.pt in out_dir), 'gpt2' ('-medium', '-large', '-xl'), or a local Hugging Face GPT-2 directory
out_dir = 'out' # ignored if init_from is not 'resume'
start = "\n" # or "<|endoftext|>" or etc. Can also specify a file, use as: "FILE:prompt.txt"
num_samples = 10 # number of samples to draw
max_new_tokens = 500 # number of tokens generated in each sample
temperature = 0.8 # 1.0 = no change, < 1.0 = less random, > 1.0 = more random, in predictions
top_k = 200 # retain only the top_k most likely tokens (a value >= the vocab size keeps them all)
seed = 1337
device = 'auto' # 'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:0', 'mps'
dtype = 'auto' # 'auto' (bf16 where supported, else fp16 on GPUs, else fp32), 'float32', 'bfloat16', 'float16'
kv_cache = True # False recomputes the whole context for every new token (slow; for checking)
unsafe_load = False # True: load a checkpoint that holds more than tensors and plain values (can run code: trusted files only)
compile = False # torch.compile the one-token decoding step (with kv_cache): ~15-40 s to compile on a CPU, then faster per token
overflow = 'recompute' # past block_size: 'recompute' (exact, as nanoGPT; slow) or 'slide' (fast, slightly less context), see GPT.generate
# -----------------------------------------------------------------------------
exit_on_user_error() # bad settings and files end in one 'error: ...' line, not a traceback
configure(globals())
# -----------------------------------------------------------------------------

if init_from != 'resume' and not is_pretrained(init_from):
    raise UserError(f"init_from={init_from!r} is not supported: use 'resume' (the ckpt.pt in out_dir), one of "
                    f"{', '.join(GPT2_SIZES)}, or a directory holding a Hugging Face GPT-2")
if num_samples <= 0:
    raise UserError(f"num_samples={num_samples} must be > 0")
if max_new_tokens < 0:
    raise UserError(f"max_new_tokens={max_new_tokens} must be >= 0")
check_sampling(temperature, top_k, overflow)
if seed < 0:
    raise UserError(f"seed={seed} must be >= 0")

device = resolve_device(device)
dtype = resolve_dtype(dtype, device)
torch.manual_seed(seed)
if torch.device(device).type == 'cuda':
    torch.cuda.manual_seed(seed)
if torch.device(device).type == 'cpu':
    keep_freed_memory()

# model
if init_from == 'resume':
    model, checkpoint = GPT.from_checkpoint(os.path.join(out_dir, 'ckpt.pt'), device, unsafe=unsafe_load, dropout=0.0)
    dataset = checkpoint.get('config', {}).get('dataset')
else: # GPT-2 weights: GPT-2's tokenizer
    model = GPT.from_pretrained(init_from, dict(dropout=0.0))
    model.to(device)
    dataset = None
# the weights are cast to dtype once (and packed on CPUs), instead of autocast casting them for every token
model = prepare_for_sampling(model, device, dtype, compile)

# the tokenizer: the dataset's meta.pkl (char-level) if the checkpoint names one that has it, else GPT-2 BPE
data_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', dataset) if dataset else None
meta = load_meta(data_dir) if dataset else None
if meta is not None:
    meta_path = os.path.join('data', dataset, os.path.basename(meta_file(data_dir))) # meta.json, or nanoGPT's meta.pkl
    print(f"Loading meta from {meta_path}...")
    stoi, itos = meta['stoi'], meta['itos']
    if meta['vocab_size'] != model.config.vocab_size:
        raise UserError(f"{meta_path} has vocab_size {meta['vocab_size']} but the model has "
                        f"{model.config.vocab_size}: the dataset was prepared again differently; prepare it as the model was")
    def encode(s):
        unknown = sorted(set(c for c in s if c not in stoi))
        if unknown:
            raise UserError(f"the prompt has characters not in the model's vocabulary: {''.join(unknown)!r}; remove them from start")
        return [stoi[c] for c in s]
    decode = lambda l: ''.join([itos[i] for i in l])
else:
    # no meta.pkl: assume GPT-2 encodings by default
    if model.config.vocab_size < GPT2_VOCAB_SIZE:
        where = f"data/{dataset}/ has no meta.pkl" if dataset else f"no meta.pkl comes with init_from={init_from!r}"
        raise UserError(f"the model has {model.config.vocab_size} tokens, too few for GPT-2's tokenizer ({GPT2_VOCAB_SIZE:,}), "
                        f"and {where} to decode them: prepare its dataset again (python data/<name>/prepare.py) "
                        f"and sample its checkpoint with init_from='resume'")
    print("No meta.pkl found, assuming GPT-2 encodings...")
    enc = gpt2_encoding() # offline: GPT2_BPE_DIR, see model.py
    encode = lambda s: enc.encode(s, allowed_special={"<|endoftext|>"})
    decode = lambda l: enc.decode(l)

# encode the beginning of the prompt
if start.startswith('FILE:'):
    path = start[5:]
    if not os.path.isfile(path):
        raise UserError(f"start=FILE:{path}: no such file; give the path of a text file holding the prompt")
    start = read_utf8(path, 'the prompt file')
start_ids = encode(start)
if not start_ids:
    raise UserError("start is empty: give at least one character or token to continue from")
x = torch.tensor(start_ids, dtype=torch.long, device=device)[None, ...]

# run generation
with torch.no_grad():
    for k in range(num_samples):
        y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k, use_kv_cache=kv_cache, overflow=overflow, compile=compile)
        print(decode(y[0].tolist()))
        print('---------------')
