"""
Sample text from a trained model, or from GPT-2's weights.

$ python sample.py --out_dir=out-shakespeare-char --start="ROMEO:" --num_samples=3
$ python sample.py --init_from=gpt2 --start=FILE:prompt.txt
"""
import os

import torch

from common import UserError, exit_on_user_error
from configurator import configure
from device import keep_freed_memory, resolve_device, resolve_dtype
from huggingface import GPT2_SIZES, is_pretrained
from model import GPT, check_sampling, prepare_for_sampling
from tokens import dataset_tokenizer, read_utf8

# -----------------------------------------------------------------------------
init_from = 'resume' # 'resume' (out_dir/ckpt.pt), 'gpt2'..'gpt2-xl', or a local Hugging Face GPT-2 directory
out_dir = 'out' # the training run to sample from, with init_from='resume'
start = "\n" # the prompt: text (e.g. "<|endoftext|>" for GPT-2), or FILE:path to read it from a file
num_samples = 10 # how many samples to print
max_new_tokens = 500 # tokens to generate per sample
temperature = 0.8 # divides the logits: below 1 sharpens the distribution, above 1 flattens it
top_k = 200 # sample among the top_k most likely tokens only (a value >= the vocab size keeps them all)
seed = 1337
device = 'auto' # 'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:0', 'mps'
dtype = 'auto' # 'float32', 'bfloat16', 'float16'; 'auto': bf16 where native, else fp16 on GPUs, else fp32
kv_cache = True # False recomputes the whole context for every new token (slow; for checking)
unsafe_load = False # load a checkpoint that holds Python objects (it can run code: trusted files only)
compile = False # torch.compile the one-token step (with kv_cache): 15-40 s to compile on a CPU, then faster
overflow = 'recompute' # past block_size: 'recompute' (exact, as nanoGPT) or 'slide' (fast); see GPT.generate
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
torch.manual_seed(seed) # seeds every device's generator
if torch.device(device).type == 'cpu':
    keep_freed_memory()

# the model: built and loaded on the CPU, then cast to dtype and moved once (the checkpoint's optimizer state,
# twice the model's size, never reaches the device and is dropped right away)
if init_from == 'resume':
    model, checkpoint = GPT.from_checkpoint(os.path.join(out_dir, 'ckpt.pt'), 'cpu', unsafe=unsafe_load, dropout=0.0)
    dataset = checkpoint.get('config', {}).get('dataset')
    del checkpoint
else: # GPT-2 weights: GPT-2's tokenizer
    model = GPT.from_pretrained(init_from, dict(dropout=0.0))
    dataset = None
model = prepare_for_sampling(model, device, dtype, compile)

# the tokenizer: the dataset's meta.pkl (char-level) if the checkpoint names one that has it, else GPT-2's BPE
data_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', dataset) if dataset else None
encode, decode = dataset_tokenizer(data_dir, model.config.vocab_size, init_from)

if start.startswith('FILE:'):
    path = start[5:]
    if not os.path.isfile(path):
        raise UserError(f"start=FILE:{path}: no such file; give the path of a text file holding the prompt")
    start = read_utf8(path, 'the prompt file')
start_ids = encode(start)
if not start_ids:
    raise UserError("start is empty: give at least one character or token to continue from")
x = torch.tensor(start_ids, dtype=torch.long, device=device)[None, ...]

with torch.no_grad():
    for k in range(num_samples):
        y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k, use_kv_cache=kv_cache,
                           overflow=overflow, compile=compile)
        print(decode(y[0].tolist()))
        print('---------------')
