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
from huggingface import GPT2_SIZES, is_pretrained, pretrained_family
from model import GPT, check_sampling, prepare_for_sampling
from textstream import TextStream
from tokens import dataset_tokenizer, load_meta, read_utf8

# -----------------------------------------------------------------------------
init_from = 'resume' # 'resume' (out_dir/ckpt.pt), 'gpt2'..'gpt2-xl', or a local Hugging Face GPT-2 directory
# (a Llama directory is fine-tuned on a dataset first: its own tokenizer is not read here, see docs/llama.md)
out_dir = 'out' # the training run to sample from, with init_from='resume'
start = "\n" # the prompt: text (e.g. "<|endoftext|>" for GPT-2), or FILE:path to read it from a file
num_samples = 10 # how many samples to print
max_new_tokens = 500 # tokens to generate per sample
temperature = 0.8 # divides the logits: below 1 sharpens the distribution, above 1 flattens it
top_k = 200 # sample among the top_k most likely tokens only (a value >= the vocab size keeps them all)
top_p = 1.0 # < 1: sample among the fewest most likely tokens that hold top_p of the probability (1.0: off)
stop = '' # end each sample just before this text (not printed); '' never ends early. --stop="'\n\n'" for escapes
seed = 1337
device = 'auto' # 'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:0', 'mps'
dtype = 'auto' # 'float32', 'bfloat16', 'float16'; 'auto': bf16 where native, else fp16 on GPUs, else fp32
kv_cache = True # False recomputes the whole context for every new token (slow; for checking)
unsafe_load = False # load a checkpoint that holds Python objects (it can run code: trusted files only)
compile = False # torch.compile the one-token step (with kv_cache): 15-40 s to compile on a CPU, then faster
overflow = 'auto' # past block_size: 'auto' (fast: 'roll' for rope, else 'slide'), 'recompute' (nanoGPT's, exact)
# -----------------------------------------------------------------------------
exit_on_user_error() # bad settings and files end in one 'error: ...' line, not a traceback
configure(globals())
# -----------------------------------------------------------------------------

if init_from != 'resume' and not is_pretrained(init_from):
    raise UserError(f"init_from={init_from!r} is not supported: use 'resume' (the ckpt.pt in out_dir), one of "
                    f"{', '.join(GPT2_SIZES)}, or a directory holding a Hugging Face GPT-2")
if init_from != 'resume' and pretrained_family(init_from) == 'Llama':
    raise UserError(f"{init_from} holds a Llama, whose tokenizer is not read here: fine-tune it on a dataset first "
                    f"(python train.py --init_from={init_from} --dataset=NAME), then sample that run with --out_dir")
if num_samples <= 0:
    raise UserError(f"num_samples={num_samples} must be > 0")
if max_new_tokens < 0:
    raise UserError(f"max_new_tokens={max_new_tokens} must be >= 0")
check_sampling(temperature, top_k, overflow, top_p)
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
# with stop: the arithmetic datasets' decoder turns each answer's digits around, so their text is final a line
# at a time
whole_lines = bool(data_dir and (load_meta(data_dir) or {}).get('reverse'))

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
        settings = dict(temperature=temperature, top_k=top_k, top_p=top_p, use_kv_cache=kv_cache, overflow=overflow,
                        compile=compile)
        if not stop:
            print(decode(model.generate(x, max_new_tokens, **settings)[0].tolist()))
        else: # stop strings are text: decode as the tokens come and draw no more once one has appeared
            text = TextStream(decode, [stop], start_ids, whole_lines)
            for token in model.generate_tokens(x, max_new_tokens, **settings):
                text.push(token.item())
                if text.stopped:
                    break
            text.finish()
            print(decode(start_ids) + text.text)
        print('---------------')
