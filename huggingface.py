"""Hugging Face interop for GPT-2: the pretrained GPT-2 names, reading GPT-2 weights, and exporting a GPT as GPT-2.

transformers is imported only when weights are read or written. GPT.from_pretrained (model.py) is the entry point
that builds a model from gpt2_weights; `python model.py export_hf CKPT OUT_DIR` calls export_hf.
"""

import json
import logging
import os

import torch

from checkpoint import clean_state_dict
from common import UserError, first_line
from tokens import GPT2_EOT, GPT2_PADDED_VOCAB_SIZE, GPT2_VOCAB_SIZE

# the pretrained GPT-2 sizes init_from accepts: (n_layer, n_head, n_embd); all have vocab 50257, block 1024, biases
GPT2_SIZES = {
    'gpt2':        (12, 12, 768),  # 124M params
    'gpt2-medium': (24, 16, 1024), # 350M params
    'gpt2-large':  (36, 20, 1280), # 774M params
    'gpt2-xl':     (48, 25, 1600), # 1558M params
}
# Hugging Face's names for the two GELUs (gelu_new is GPT-2's: the same tanh formula as PyTorch's approximate='tanh')
HF_GELUS = {'gelu': 'none', 'gelu_new': 'tanh', 'gelu_pytorch_tanh': 'tanh', 'gelu_fast': 'tanh'}
# the weights that Hugging Face's GPT-2 keeps in Conv1D modules, stored transposed relative to nn.Linear
HF_CONV1D = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')
HF_MASK_BUFFERS = ('.attn.bias', '.attn.masked_bias') # causal masks older transformers keep as buffers, not weights
LAYER_NORM_EPS = 1e-5 # model.LayerNorm's epsilon


def is_pretrained(init_from):
    """True for init_from values that name GPT-2 weights: a GPT2_SIZES name or a local directory."""
    return init_from in GPT2_SIZES or os.path.isdir(init_from)


def read_hf_config(path):
    """The config.json of a local Hugging Face directory, checked to be a GPT-2 this model can load."""
    if not os.path.isdir(path):
        raise UserError(f"init_from={path!r} is neither a GPT-2 model ({', '.join(GPT2_SIZES)}) nor a directory "
                        f"holding a Hugging Face GPT-2 (config.json and weights)")
    config_path = os.path.join(path, 'config.json')
    if not os.path.isfile(config_path):
        hint = (f"; for the train.py checkpoint in it use init_from='resume' with out_dir={path!r}"
                if os.path.isfile(os.path.join(path, 'ckpt.pt')) else " (write one with save_pretrained or export_hf)")
        raise UserError(f"{path} has no config.json: it is not a Hugging Face model directory{hint}")
    try:
        with open(config_path) as f:
            config = json.load(f)
    except ValueError as e:
        raise UserError(f"{config_path} is not valid JSON ({first_line(e)})")
    check_hf_gpt2_config(config, path)
    return config

def check_hf_gpt2_config(config, where):
    """One clear error for a Hugging Face config that our GPT cannot reproduce."""
    model_type = config.get('model_type')
    if model_type != 'gpt2':
        raise UserError(f"{where} holds a {model_type!r} model, not GPT-2: only GPT-2 weights (model_type 'gpt2') "
                        f"can be loaded")
    unsupported = []
    if config.get('n_inner') not in (None, 4 * config.get('n_embd', 0)):
        unsupported.append(f"n_inner={config['n_inner']} (we use 4 * n_embd)")
    if config.get('activation_function', 'gelu_new') not in HF_GELUS:
        unsupported.append(f"activation_function={config['activation_function']!r} (we have {', '.join(HF_GELUS)})")
    if config.get('layer_norm_epsilon', LAYER_NORM_EPS) != LAYER_NORM_EPS:
        unsupported.append(f"layer_norm_epsilon={config['layer_norm_epsilon']} (we use {LAYER_NORM_EPS})")
    if config.get('scale_attn_by_inverse_layer_idx') or not config.get('scale_attn_weights', True):
        unsupported.append("a non-standard attention scaling")
    if not config.get('tie_word_embeddings', True):
        unsupported.append("untied input and output embeddings")
    if unsupported:
        raise UserError(f"{where} is a GPT-2 variant this model cannot reproduce: {'; '.join(unsupported)}")


def gpt2_weights(name_or_dir):
    """
    GPT-2's weights through transformers: a name from GPT2_SIZES (downloaded once into the Hugging Face cache, and
    read from there afterwards, offline too) or a local directory written by save_pretrained or export_hf.
    Returns (config, state_dict): the GPTConfig fields of the weights' shape and GELU, and the weights under
    model.py's names, Conv1D weights transposed to nn.Linear's layout. Any problem is a one-line UserError.
    """
    if name_or_dir not in GPT2_SIZES:
        read_hf_config(name_or_dir) # a clear error for a directory that is not GPT-2, before loading anything big
    from transformers import GPT2LMHeadModel
    from transformers.utils.logging import disable_progress_bar
    disable_progress_bar() # its per-tensor bar for a load of seconds; a download keeps huggingface_hub's bar
    hub_log = logging.getLogger('huggingface_hub')
    hub_level = hub_log.level
    hub_log.setLevel(logging.ERROR) # offline it warns about each failed request; the error below says what to do
    try:
        hf = GPT2LMHeadModel.from_pretrained(name_or_dir)
    except Exception as e:
        where = ("online once to download them into the Hugging Face cache, or set init_from to a local directory"
                 if name_or_dir in GPT2_SIZES
                 else "the directory needs config.json and model.safetensors (or pytorch_model.bin)")
        raise UserError(f"could not load GPT-2 weights {name_or_dir!r} ({type(e).__name__}: {first_line(e)}): {where}")
    finally:
        hub_log.setLevel(hub_level)
    cfg = hf.config
    check_hf_gpt2_config(cfg.to_dict(), name_or_dir)
    print(f"loading weights from pretrained gpt: {name_or_dir} ({cfg.n_layer} layers, {cfg.n_head} heads, "
          f"{cfg.n_embd} wide)")
    config = dict(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.n_positions,
                  vocab_size=cfg.vocab_size, bias=True, gelu_approximate=HF_GELUS[cfg.activation_function])
    state_dict = {}
    for k, v in hf.state_dict().items():
        if k.endswith(HF_MASK_BUFFERS):
            continue
        state_dict[k] = v.t() if k.endswith(HF_CONV1D) else v # HF's Conv1D stores (in, out); nn.Linear (out, in)
    if 'lm_head.weight' not in state_dict: # tied: some versions store it only once
        state_dict['lm_head.weight'] = state_dict['transformer.wte.weight']
    return config, state_dict


def export_hf(model, out_dir, vocab_size=None):
    """
    Write a GPT as a Hugging Face GPT-2 directory (config.json + model.safetensors) that
    transformers.GPT2LMHeadModel.from_pretrained(out_dir) loads, giving the same logits. Returns out_dir.
    - bias=False models get zero biases, since HF's GPT-2 always has them: the outputs do not change.
    - A vocab padded from GPT-2's 50257 up to 50304 for speed is cut back to 50257 (give vocab_size to
      choose); logits[..., :50257] are unchanged.
    - activation_function is the model's own GELU: 'gelu' (exact) or 'gelu_new' (GPT-2's tanh approximation).
    From the shell: python model.py export_hf out-shakespeare hf-shakespeare
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"cannot export to {out_dir}: it is a file; give a directory (new, or one to write into)")
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils.logging import disable_progress_bar
    disable_progress_bar() # a bar for writing one small file
    cfg = model.config
    if vocab_size is None:
        vocab_size = GPT2_VOCAB_SIZE if cfg.vocab_size == GPT2_PADDED_VOCAB_SIZE else cfg.vocab_size
    if not 0 < vocab_size <= cfg.vocab_size:
        raise UserError(f"vocab_size={vocab_size} must be in 1..{cfg.vocab_size} (the model's vocab_size)")
    eot = GPT2_EOT if vocab_size > GPT2_EOT else None # only a GPT-2 vocabulary has <|endoftext|>
    hf_config = GPT2Config(vocab_size=vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                           n_head=cfg.n_head, layer_norm_epsilon=LAYER_NORM_EPS,
                           activation_function='gelu_new' if cfg.gelu_approximate == 'tanh' else 'gelu',
                           resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                           bos_token_id=eot, eos_token_id=eot, tie_word_embeddings=True)
    hf = GPT2LMHeadModel(hf_config)
    ours = clean_state_dict(model.state_dict())
    sd = {}
    for k, v in hf.state_dict().items():
        if k in ours:
            src = ours[k].detach().float().cpu()
            if k.endswith(HF_CONV1D):
                src = src.t()
            if k in ('transformer.wte.weight', 'lm_head.weight'):
                src = src[:vocab_size]
            sd[k] = src.contiguous()
        elif k.endswith('.bias') and not cfg.bias:
            sd[k] = torch.zeros_like(v) # the bias a bias=False model does without
        else:
            raise UserError(f"cannot export: Hugging Face's GPT-2 has {k} but this model has no such weight")
    hf.load_state_dict(sd, strict=True)
    os.makedirs(out_dir, exist_ok=True)
    hf.save_pretrained(out_dir)
    return out_dir
