"""Hugging Face interop: GPT-2 (the pretrained names, its weights in and out) and Llama directories (in and out).

transformers is imported only when weights are read or written. GPT.from_pretrained (model.py) is the entry point
that builds a model from read_pretrained; `python model.py export_hf CKPT OUT_DIR` calls export_hf, which writes
a GPT-2 or, for a rope model, a Llama (docs/llama.md).
"""

import json
import logging
import os

import torch

from checkpoint import clean_state_dict
from common import UserError, atomic_write, first_line, write_bytes_atomic
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
    """True for init_from values that name pretrained weights: a GPT2_SIZES name or a local directory."""
    return init_from in GPT2_SIZES or os.path.isdir(init_from)


def read_hf_config(path):
    """The config.json of a local Hugging Face directory, checked to be a GPT-2 this model can load."""
    config = read_config_json(path)
    check_hf_gpt2_config(config, path)
    return config

def read_config_json(path):
    """The config.json of a local Hugging Face directory, whatever model it describes."""
    if not os.path.isdir(path):
        raise UserError(f"init_from={path!r} is neither a GPT-2 model ({', '.join(GPT2_SIZES)}) nor a directory "
                        f"holding a Hugging Face GPT-2 or Llama (config.json and weights)")
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
    if not isinstance(config, dict):
        raise UserError(f"{config_path} is not a Hugging Face config: it holds no JSON object")
    return config

def check_hf_gpt2_config(config, where):
    """One clear error for a Hugging Face config that our GPT cannot reproduce."""
    model_type = config.get('model_type')
    if model_type != 'gpt2':
        raise UserError(f"{where} holds a {model_type!r} model, not GPT-2 or Llama: only GPT-2 (model_type 'gpt2') "
                        f"and Llama ('llama') weights can be loaded")
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
    A pos_emb='rope' model is written as a Llama instead (export_llama). Options that neither can express are a
    UserError that names them (check_exportable), before anything is written.
    From the shell: python model.py export_hf out-shakespeare hf-shakespeare
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"cannot export to {out_dir}: it is a file; give a directory (new, or one to write into)")
    if model.config.pos_emb == 'rope': # GPT-2 has no rotary positions: a rope model goes out as a Llama
        return export_llama(model, out_dir, vocab_size)
    check_exportable(model.config, GPT2_NEEDS, "learned positions", "GPT2LMHeadModel",
                     " (or pos_emb='rope', norm='rmsnorm', mlp='swiglu', bias=False, to export as a Llama)")
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


# -----------------------------------------------------------------------------
# Llama: LlamaForCausalLM directories in and out. A GPT with pos_emb='rope', norm='rmsnorm', mlp='swiglu' and
# bias=False is a Llama: the same rotate-half rotary layout and inverse frequencies, RMSNorm with a weight, SwiGLU,
# and grouped-query heads where query head h reads key/value head h // (n_head / n_kv_head). Only the names differ,
# and two of Llama's matrices are stacked into one of ours (q, k, v into c_attn; gate, up into c_fc). The weights
# are read from the files directly, not through transformers: it would tie, untie or initialise what the files and
# the config disagree about, and we refuse such a directory instead.

LLAMA_TYPE, LLAMA_ARCH = 'llama', 'LlamaForCausalLM'
# what config.json says by its silence, as transformers' LlamaConfig has it
LLAMA_DEFAULTS = dict(max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False,
                      hidden_act='silu')
LLAMA_SILU = ('silu', 'swish') # transformers' two names for x * sigmoid(x)
LLAMA_REQUIRED = ('hidden_size', 'intermediate_size', 'num_attention_heads', 'num_hidden_layers', 'vocab_size')
# keys of Llama-like configs for features this GPT does not have: each must be absent, null or false
LLAMA_ABSENT = ('sliding_window', 'use_sliding_window', 'attention_chunk_size', 'no_rope_layers',
                'attn_logit_softcapping', 'final_logit_softcapping')
LLAMA_WEIGHT_FILES = ('model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin',
                      'pytorch_model.bin.index.json') # the first one present is read
ROPE_BUFFER = 'rotary_emb.inv_freq' # older transformers saved rope's frequencies: recomputed here, so not needed

# (option, whether config has what the format needs, the setting it needs); the first failing one is named
GPT2_NEEDS = (
    ('norm', lambda c: c.norm == 'layernorm', "norm='layernorm'"),
    ('mlp', lambda c: c.mlp == 'gelu', "mlp='gelu'"),
    ('n_kv_head', lambda c: c.n_kv_head in (0, c.n_head), "n_kv_head=0 (every head its own keys and values)"),
    ('tie_embeddings', lambda c: c.tie_embeddings, "tie_embeddings=True"),
    ('mlp_hidden', lambda c: c.mlp_hidden in (0, 4 * c.n_embd), "mlp_hidden=0 (4 * n_embd)"),
    ('norm_eps', lambda c: c.norm_eps == LAYER_NORM_EPS, f"norm_eps={LAYER_NORM_EPS}"),
    ('qk_norm', lambda c: not c.qk_norm, "qk_norm=False"),
    ('logit_softcap', lambda c: not c.logit_softcap, "logit_softcap=0"),
)
LLAMA_NEEDS = (
    ('norm', lambda c: c.norm == 'rmsnorm', "norm='rmsnorm'"),
    ('mlp', lambda c: c.mlp == 'swiglu', "mlp='swiglu'"),
    ('bias', lambda c: not c.bias, "bias=False"),
    ('qk_norm', lambda c: not c.qk_norm, "qk_norm=False"),
    ('logit_softcap', lambda c: not c.logit_softcap, "logit_softcap=0"),
)


def check_exportable(config, needs, kind, arch, alternative=''):
    """A UserError naming the first option of config that Hugging Face's arch cannot express."""
    for option, fits, setting in needs:
        if not fits(config):
            raise UserError(f"cannot export {option}={getattr(config, option)!r}: a model with {kind} exports as "
                            f"Hugging Face's {arch}, which needs {setting}: train with {setting}{alternative}")


def is_llama_config(config):
    return config.get('model_type') == LLAMA_TYPE or LLAMA_ARCH in (config.get('architectures') or ())


def pretrained_family(name_or_dir):
    """'Llama' for a directory holding a Llama config, else 'GPT-2' (whose loading reports any other problem)."""
    try:
        config = read_config_json(name_or_dir) if name_or_dir not in GPT2_SIZES else {}
    except UserError:
        return 'GPT-2'
    return 'Llama' if is_llama_config(config) else 'GPT-2'


def read_pretrained(name_or_dir):
    """(GPTConfig fields, state_dict) of pretrained weights: a GPT-2 name or directory, or a Llama directory."""
    if name_or_dir not in GPT2_SIZES:
        config = read_config_json(name_or_dir)
        if is_llama_config(config):
            return llama_weights(name_or_dir, config)
    return gpt2_weights(name_or_dir)


def llama_config(config, where):
    """The GPTConfig fields of a Llama config.json; a feature this GPT does not implement is a UserError."""
    missing = [k for k in LLAMA_REQUIRED if k not in config]
    if missing:
        raise UserError(f"{where}/config.json has no {missing[0]}: a Llama config needs {', '.join(LLAMA_REQUIRED)}")
    for k in LLAMA_REQUIRED:
        if not isinstance(config[k], int) or config[k] <= 0:
            raise UserError(f"{where}/config.json has {k}={config[k]!r}: it must be a positive integer")
    architectures = config.get('architectures') or [LLAMA_ARCH]
    if LLAMA_ARCH not in architectures: # a Llama body under another head (classification, ...), or none
        raise UserError(f"{where} holds a {architectures[0]}, not a {LLAMA_ARCH}: only a language model's weights "
                        f"(with its lm_head) can be loaded")
    c = dict(LLAMA_DEFAULTS, **{k: v for k, v in config.items() if v is not None})
    n_embd, n_head = c['hidden_size'], c['num_attention_heads']
    # rope's settings: top-level rope_theta and rope_scaling, or since transformers 5 one rope_parameters dict
    rope_params = dict(c.get('rope_parameters') or {})
    rope_theta = rope_params.pop('rope_theta', c['rope_theta'])
    unsupported = []
    for rope in (c.get('rope_scaling') or {}, rope_params):
        if rope.get('rope_type', rope.get('type', 'default')) != 'default' or set(rope) - {'rope_type', 'type'}:
            unsupported.append(f"rope scaling {rope}: only plain rope is implemented")
            break
    for key in ('attention_bias', 'mlp_bias'):
        if c.get(key):
            unsupported.append(f"{key}=true: this GPT's Llama layers have no biases")
    if c['hidden_act'] not in LLAMA_SILU:
        unsupported.append(f"hidden_act={c['hidden_act']!r}: the MLP is SwiGLU, with silu")
    if c.get('head_dim') not in (None, n_embd // n_head) or n_embd % n_head:
        unsupported.append(f"head_dim={c.get('head_dim')}: the head size here is hidden_size / num_attention_heads "
                           f"= {n_embd / n_head:g}")
    if c.get('partial_rotary_factor', 1) != 1:
        unsupported.append(f"partial_rotary_factor={c['partial_rotary_factor']}: rope turns every dimension here")
    unsupported += [f"{k}={c[k]!r}" for k in LLAMA_ABSENT if c.get(k)]
    if set(c.get('layer_types') or ()) - {'full_attention'}: # e.g. some layers with a sliding window
        unsupported.append(f"layer_types={sorted(set(c['layer_types']))}: every layer here is full attention")
    if unsupported:
        raise UserError(f"{where} is a Llama variant this GPT does not implement, so it is not loaded: "
                        f"{'; '.join(unsupported)}")
    n_kv_head = c.get('num_key_value_heads', n_head)
    return dict(n_layer=c['num_hidden_layers'], n_head=n_head, n_kv_head=0 if n_kv_head == n_head else n_kv_head,
                n_embd=n_embd, block_size=c['max_position_embeddings'], vocab_size=c['vocab_size'], bias=False,
                pos_emb='rope', rope_theta=float(rope_theta), norm='rmsnorm', norm_eps=float(c['rms_norm_eps']),
                mlp='swiglu', mlp_hidden=c['intermediate_size'], tie_embeddings=bool(c['tie_word_embeddings']))


def read_weight_files(path):
    """Every tensor of a Hugging Face directory's weights: one file or the shards an .index.json lists."""
    name = next((n for n in LLAMA_WEIGHT_FILES if os.path.isfile(os.path.join(path, n))), None)
    if name is None:
        raise UserError(f"{path} has no weights: it needs one of {', '.join(LLAMA_WEIGHT_FILES)}")
    files = [name]
    if name.endswith('.index.json'):
        try:
            with open(os.path.join(path, name)) as f:
                files = sorted(set(json.load(f)['weight_map'].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{path}/{name} is not a weight index with a 'weight_map' ({type(e).__name__}: "
                            f"{first_line(e)})")
    tensors = {}
    for file in files:
        file_path = os.path.join(path, file)
        try:
            if file.endswith('.safetensors'):
                from safetensors.torch import load_file # comes with transformers
                tensors.update(load_file(file_path))
            else:
                tensors.update(torch.load(file_path, map_location='cpu', weights_only=True))
        except Exception as e: # a missing, truncated or foreign file: each library raises its own kind
            raise UserError(f"could not read the weights {file_path} ({type(e).__name__}: {first_line(e)})")
    return tensors


def llama_weights(path, config):
    """
    (GPTConfig fields, state_dict under model.py's names) of the LlamaForCausalLM in directory path, whose
    config.json is config. Every weight the config implies must be there in its shape and nothing else (older
    files' rope buffers aside), and an lm_head must agree with tie_word_embeddings. Weights come as fp32.
    """
    fields = llama_config(config, path)
    hf = {k: v for k, v in read_weight_files(path).items() if not k.endswith(ROPE_BUFFER)}
    n, hidden, vocab = fields['n_embd'], fields['mlp_hidden'], fields['vocab_size']
    hs = n // fields['n_head']
    kv = (fields['n_kv_head'] or fields['n_head']) * hs

    def take(key, *shape):
        if key not in hf:
            raise UserError(f"{path} has no weight {key}: its files are incomplete, or not a LlamaForCausalLM's")
        t = hf.pop(key)
        if tuple(t.shape) != shape:
            raise UserError(f"{path}: {key} has shape {tuple(t.shape)} but config.json implies {shape}")
        return t.float()

    embed = take('model.embed_tokens.weight', vocab, n)
    lm_head = take('lm_head.weight', vocab, n) if 'lm_head.weight' in hf else None
    if fields['tie_embeddings'] and lm_head is not None and not torch.equal(lm_head, embed):
        raise UserError(f"{path}/config.json says tie_word_embeddings=true, but lm_head.weight differs from "
                        f"embed_tokens: set it to false if the output matrix is its own")
    if not fields['tie_embeddings'] and lm_head is None:
        raise UserError(f"{path}/config.json says tie_word_embeddings=false (Llama's default), but there is no "
                        f"lm_head.weight: set it to true if the output shares embed_tokens")
    sd = {'transformer.wte.weight': embed, 'lm_head.weight': embed if lm_head is None else lm_head}
    for i in range(fields['n_layer']):
        hf_layer, ours = f'model.layers.{i}.', f'transformer.h.{i}.'
        sd[ours + 'ln_1.weight'] = take(hf_layer + 'input_layernorm.weight', n)
        sd[ours + 'attn.c_attn.weight'] = torch.cat([take(hf_layer + 'self_attn.q_proj.weight', n, n),
                                                     take(hf_layer + 'self_attn.k_proj.weight', kv, n),
                                                     take(hf_layer + 'self_attn.v_proj.weight', kv, n)])
        sd[ours + 'attn.c_proj.weight'] = take(hf_layer + 'self_attn.o_proj.weight', n, n)
        sd[ours + 'ln_2.weight'] = take(hf_layer + 'post_attention_layernorm.weight', n)
        sd[ours + 'mlp.c_fc.weight'] = torch.cat([take(hf_layer + 'mlp.gate_proj.weight', hidden, n),
                                                  take(hf_layer + 'mlp.up_proj.weight', hidden, n)])
        sd[ours + 'mlp.c_proj.weight'] = take(hf_layer + 'mlp.down_proj.weight', n, hidden)
    sd['transformer.ln_f.weight'] = take('model.norm.weight', n)
    if hf: # biases, extra layers, extra norms: a variant whose config does not say so
        raise UserError(f"{path} has weights this GPT has no place for ({', '.join(sorted(hf)[:3])}): "
                        f"a Llama variant it does not implement, so it is not loaded")
    print(f"loading Llama weights from {path} ({fields['n_layer']} layers, {fields['n_head']} heads, "
          f"{kv // hs} key/value heads, {n} wide)")
    return fields, sd


def export_llama(model, out_dir, vocab_size=None):
    """
    Write a pos_emb='rope' GPT as a Hugging Face LlamaForCausalLM directory (config.json + model.safetensors, fp32)
    that transformers loads, giving the same logits. vocab_size (default: the model's) keeps the first rows of the
    embeddings only. Each file is written whole or not at all; options Llama has no equivalent for are refused first.
    """
    cfg = model.config
    check_exportable(cfg, LLAMA_NEEDS, "pos_emb='rope'", LLAMA_ARCH)
    vocab_size = cfg.vocab_size if vocab_size is None else vocab_size
    if not 0 < vocab_size <= cfg.vocab_size:
        raise UserError(f"vocab_size={vocab_size} must be in 1..{cfg.vocab_size} (the model's vocab_size)")
    from safetensors.torch import save_file
    ours = {k: v.detach().float().cpu() for k, v in clean_state_dict(model.state_dict()).items()}
    n, hs, n_kv_head = cfg.n_embd, cfg.n_embd // cfg.n_head, cfg.n_kv_head or cfg.n_head
    sd = {'model.embed_tokens.weight': ours['transformer.wte.weight'][:vocab_size],
          'model.norm.weight': ours['transformer.ln_f.weight']}
    if not cfg.tie_embeddings: # tied: transformers ties lm_head to embed_tokens itself
        sd['lm_head.weight'] = ours['lm_head.weight'][:vocab_size]
    for i in range(cfg.n_layer):
        hf_layer, layer = f'model.layers.{i}.', f'transformer.h.{i}.'
        q, k, v = ours[layer + 'attn.c_attn.weight'].split([n, n_kv_head * hs, n_kv_head * hs])
        gate, up = ours[layer + 'mlp.c_fc.weight'].chunk(2)
        sd.update({hf_layer + 'input_layernorm.weight': ours[layer + 'ln_1.weight'],
                   hf_layer + 'self_attn.q_proj.weight': q, hf_layer + 'self_attn.k_proj.weight': k,
                   hf_layer + 'self_attn.v_proj.weight': v,
                   hf_layer + 'self_attn.o_proj.weight': ours[layer + 'attn.c_proj.weight'],
                   hf_layer + 'post_attention_layernorm.weight': ours[layer + 'ln_2.weight'],
                   hf_layer + 'mlp.gate_proj.weight': gate, hf_layer + 'mlp.up_proj.weight': up,
                   hf_layer + 'mlp.down_proj.weight': ours[layer + 'mlp.c_proj.weight']})
    eot = GPT2_EOT if vocab_size > GPT2_EOT else None # only a GPT-2 vocabulary has <|endoftext|>
    config = dict(architectures=[LLAMA_ARCH], model_type=LLAMA_TYPE, hidden_size=n,
                  intermediate_size=ours['transformer.h.0.mlp.c_proj.weight'].size(1),
                  num_attention_heads=cfg.n_head, num_key_value_heads=n_kv_head, num_hidden_layers=cfg.n_layer,
                  head_dim=hs, hidden_act='silu', rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
                  rope_scaling=None, max_position_embeddings=cfg.block_size, vocab_size=vocab_size,
                  tie_word_embeddings=cfg.tie_embeddings, attention_bias=False, mlp_bias=False,
                  attention_dropout=0.0, bos_token_id=eot, eos_token_id=eot, torch_dtype='float32')
    os.makedirs(out_dir, exist_ok=True)
    with atomic_write(os.path.join(out_dir, 'model.safetensors')) as tmp:
        save_file({k: t.contiguous() for k, t in sd.items()}, tmp, metadata={'format': 'pt'})
    write_bytes_atomic(os.path.join(out_dir, 'config.json'), (json.dumps(config, indent=2) + '\n').encode())
    return out_dir
