"""
Llama interop: a Hugging Face LlamaForCausalLM directory loads as a GPT with pos_emb='rope', norm='rmsnorm',
mlp='swiglu' and bias=False (init_from=DIR), such a GPT exports as a LlamaForCausalLM (python model.py export_hf),
both with transformers' logits, and what the other side cannot express is refused in one line.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, one_line_error, run
from checkpoint import save_checkpoint
from common import UserError
from huggingface import export_hf
from model import GPT, GPTConfig, MODEL_ARGS, OPTIONS_KEY, model_options

WEIGHT_SCALE = 3.0 # the random weights times this: activations large enough that every layer is nonlinear
TOLERANCE = 1e-5 # fp32 logits, ours against transformers'
# a GPT that is a Llama: every option Llama has, at a value other than its default
LLAMA_LIKE = dict(n_layer=2, n_head=4, n_kv_head=2, n_embd=64, block_size=32, vocab_size=96, bias=False, dropout=0.0,
                  pos_emb='rope', rope_theta=500.0, norm='rmsnorm', norm_eps=1e-6, mlp='swiglu', mlp_hidden=96)


def tiny_llama(path, vocab_size=96, tie=False, seed=0):
    """
    A random LlamaForCausalLM, 64 wide, 2 layers, 4 query heads sharing 2 key/value heads, saved with
    save_pretrained. Its norms' weights are spread over [0.5, 1.5], so that a norm mapped to the wrong place shows.
    """
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                         intermediate_size=160, vocab_size=vocab_size, max_position_embeddings=64, rope_theta=500.0,
                         rms_norm_eps=1e-5, tie_word_embeddings=tie)
    hf = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.uniform_(0.5, 1.5) if name.endswith('norm.weight') else p.mul_(WEIGHT_SCALE)
    hf.save_pretrained(path)
    return str(path)


@pytest.fixture(scope='session')
def llama_dir(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp('tiny-llama'))


def all_logits(model, idx):
    with torch.no_grad():
        logits, _ = model(idx, idx) # with targets the model returns every position's logits
    return logits


def hf_logits(path, idx):
    from transformers import LlamaForCausalLM
    with torch.no_grad():
        return LlamaForCausalLM.from_pretrained(path).eval()(idx).logits


def tokens(vocab_size, seed=0):
    return torch.randint(0, vocab_size, (2, 32), generator=torch.Generator().manual_seed(seed))


def randomized(model):
    """model with every weight random and not small (zero_init's zeros included), the norms' around 1."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.uniform_(0.5, 1.5) if name.endswith(('ln_1.weight', 'ln_2.weight', 'ln_f.weight')) else p.normal_(0, 0.1)
    return model.eval()

# -----------------------------------------------------------------------------
# Llama in

@pytest.mark.parametrize('tie', [False, True])
def test_a_llama_directory_loads_with_transformers_logits(tmp_path, tie):
    path = tiny_llama(tmp_path, tie=tie)
    model = GPT.from_pretrained(path, dict(dropout=0.1)).eval()
    cfg = model.config
    assert (cfg.n_layer, cfg.n_head, cfg.n_kv_head, cfg.n_embd, cfg.mlp_hidden, cfg.vocab_size, cfg.block_size) == \
        (2, 4, 2, 64, 160, 96, 64)
    assert (cfg.pos_emb, cfg.norm, cfg.mlp, cfg.bias, cfg.tie_embeddings) == ('rope', 'rmsnorm', 'swiglu', False, tie)
    assert (cfg.rope_theta, cfg.norm_eps, cfg.dropout) == (500.0, 1e-5, 0.1)
    idx = tokens(96)
    ours, theirs = all_logits(model, idx), hf_logits(path, idx)
    assert theirs.abs().max() > 1 and (ours - theirs).abs().max() < TOLERANCE


def test_older_layouts_load_too_pytorch_model_bin_and_a_transformers_4_config(tmp_path, llama_dir):
    """config.json with top-level rope_theta and rope_scaling: null, and weights in pytorch_model.bin holding the
    rope buffers older transformers saved, split over two shards listed by an index."""
    from safetensors.torch import load_file
    old = tmp_path / 'old'
    old.mkdir()
    config = json.loads(open(os.path.join(llama_dir, 'config.json')).read())
    config.update(rope_theta=config.pop('rope_parameters')['rope_theta'], rope_scaling=None)
    (old / 'config.json').write_text(json.dumps(config))
    weights = load_file(os.path.join(llama_dir, 'model.safetensors'))
    weights['model.layers.0.self_attn.rotary_emb.inv_freq'] = torch.ones(8)
    names = sorted(weights)
    shards = {'pytorch_model-00001-of-00002.bin': names[:10], 'pytorch_model-00002-of-00002.bin': names[10:]}
    for file, keys in shards.items():
        torch.save({k: weights[k] for k in keys}, old / file)
    index = {'weight_map': {k: file for file, keys in shards.items() for k in keys}}
    (old / 'pytorch_model.bin.index.json').write_text(json.dumps(index))
    model = GPT.from_pretrained(str(old)).eval()
    assert model.config.rope_theta == 500.0
    idx = tokens(96)
    assert (all_logits(model, idx) - hf_logits(llama_dir, idx)).abs().max() < TOLERANCE


ALL = 'all' # edited(drop=ALL): no weight file at all

def edited(src, dst, config=None, drop=(), add=None):
    """A copy of the Llama directory src in dst with config.json entries changed ('DROP': removed), and weights
    dropped or added."""
    from safetensors.torch import load_file, save_file
    shutil.copytree(src, dst)
    cfg = json.loads((dst / 'config.json').read_text())
    cfg.update(config or {})
    (dst / 'config.json').write_text(json.dumps({k: v for k, v in cfg.items() if v != 'DROP'}))
    weights = load_file(str(dst / 'model.safetensors'))
    weights = dict({k: v for k, v in weights.items() if drop is not ALL and k not in drop}, **(add or {}))
    if drop is ALL:
        os.remove(dst / 'model.safetensors')
    else:
        save_file(weights, str(dst / 'model.safetensors'), metadata={'format': 'pt'})
    return str(dst)


# (what is wrong, how the directory is changed, what the error says)
BAD_LLAMAS = [
    ('rope scaling (transformers 4)', dict(config={'rope_scaling': {'rope_type': 'linear', 'factor': 2.0}}),
     "rope scaling {'rope_type': 'linear', 'factor': 2.0}"),
    ('rope scaling (transformers 5)',
     dict(config={'rope_parameters': {'rope_type': 'yarn', 'factor': 4.0, 'rope_theta': 500.0}}),
     "rope scaling {'rope_type': 'yarn', 'factor': 4.0}"),
    ('biases in attention', dict(config={'attention_bias': True}), 'attention_bias=true'),
    ('biases in the MLP', dict(config={'mlp_bias': True}), 'mlp_bias=true'),
    ('another activation', dict(config={'hidden_act': 'gelu'}), "hidden_act='gelu'"),
    ('a head size of its own', dict(config={'head_dim': 32}), 'head_dim=32: the head size here is'),
    ('a sliding window', dict(config={'sliding_window': 16}), 'sliding_window=16'),
    ('tied, but a different lm_head', dict(config={'tie_word_embeddings': True}),
     'tie_word_embeddings=true, but lm_head.weight differs'),
    ('untied, but no lm_head', dict(drop=['lm_head.weight']), 'tie_word_embeddings=false .* no lm_head.weight'),
    ('a weight missing', dict(drop=['model.layers.1.mlp.up_proj.weight']),
     'has no weight model.layers.1.mlp.up_proj.weight'),
    ('a bias the config does not mention', dict(add={'model.layers.0.self_attn.q_proj.bias': torch.zeros(64)}),
     'no place for \\(model.layers.0.self_attn.q_proj.bias\\)'),
    ('sizes that disagree with the weights', dict(config={'intermediate_size': 128}),
     'gate_proj.weight has shape \\(160, 64\\) but config.json implies \\(128, 64\\)'),
    ('an incomplete config', dict(config={'hidden_size': 'DROP'}), 'config.json has no hidden_size'),
    ('no weight files', dict(drop=ALL), 'has no weights: it needs one of model.safetensors'),
    ('not a language model', dict(config={'architectures': ['LlamaForSequenceClassification']}),
     'holds a LlamaForSequenceClassification, not a LlamaForCausalLM'),
    ('no heads', dict(config={'num_attention_heads': 0}), 'num_attention_heads=0: it must be a positive integer'),
]

@pytest.mark.parametrize('change, match', [case[1:] for case in BAD_LLAMAS], ids=[case[0] for case in BAD_LLAMAS])
def test_a_llama_variant_this_gpt_cannot_reproduce_is_refused_not_loaded_wrong(tmp_path, llama_dir, change, match):
    path = edited(llama_dir, tmp_path / 'bad', **change)
    with pytest.raises(UserError, match=match):
        GPT.from_pretrained(path)


def test_a_bad_llama_directory_stops_train_py_with_one_line(tmp_path, llama_dir, char_data):
    common = ['--dataset=shakespeare_char', '--device=cpu', '--compile=False', f'--out_dir={tmp_path / "out"}']
    bad = edited(llama_dir, tmp_path / 'window', config={'sliding_window': 16})
    assert 'sliding_window=16' in one_line_error(run('train.py', f'--init_from={bad}', *common, check=False))
    assert not (tmp_path / 'out' / 'ckpt.pt').exists()

# -----------------------------------------------------------------------------
# fine-tuning a Llama directory, sampling the run, and exporting it again

def test_finetune_a_llama_dir_on_a_char_dataset_then_sample_and_export_it(tmp_path, char_data):
    path = tiny_llama(tmp_path / 'llama', vocab_size=65) # Tiny Shakespeare's 65 characters
    out = tmp_path / 'out'
    p = run('train.py', f'--init_from={path}', '--dataset=shakespeare_char', f'--out_dir={out}', '--block_size=32',
            '--batch_size=4', '--gradient_accumulation_steps=1', '--max_iters=12', '--eval_interval=12',
            '--eval_iters=2', '--learning_rate=3e-3', '--decay_lr=False', '--compile=False', '--device=cpu',
            '--dtype=float32', env_extra={'OMP_NUM_THREADS': '1'})
    assert 'Initializing from Llama weights' in p.stdout and 'loading Llama weights' in p.stdout
    loss = [float(x) for x in re.findall(r'^iter \d+: loss ([\d.]+)', p.stdout, re.M)]
    assert len(loss) == 12 and np.mean(loss[-3:]) < loss[0], loss
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    assert ckpt['model_args'] == dict(n_layer=2, n_head=4, n_embd=64, block_size=32, bias=False, vocab_size=65,
                                      dropout=0.0)
    assert ckpt[OPTIONS_KEY] == dict(n_kv_head=2, pos_emb='rope', rope_theta=500.0, norm='rmsnorm', mlp='swiglu',
                                     mlp_hidden=160, tie_embeddings=False)
    p = run('sample.py', f'--out_dir={out}', '--start=ROMEO:', '--num_samples=1', '--max_new_tokens=8',
            '--device=cpu')
    assert 'ROMEO:' in p.stdout
    # the run goes out as a Llama again, its block cropped to the 32 positions it was trained with
    p = run('model.py', 'export_hf', str(out), str(tmp_path / 'again'))
    assert 'transformers.LlamaForCausalLM.from_pretrained' in p.stdout
    assert json.loads((tmp_path / 'again' / 'config.json').read_text())['max_position_embeddings'] == 32
    model, _ = GPT.from_checkpoint(str(out / 'ckpt.pt'))
    idx = tokens(65)
    assert (hf_logits(str(tmp_path / 'again'), idx) - all_logits(model.eval(), idx)).abs().max() < TOLERANCE


def test_sample_py_refuses_a_llama_dir_whose_tokenizer_it_does_not_read(llama_dir):
    p = run('sample.py', f'--init_from={llama_dir}', '--device=cpu', check=False)
    assert 'whose tokenizer is not read here: fine-tune it on a dataset first' in one_line_error(p)

# -----------------------------------------------------------------------------
# Llama out

@pytest.mark.parametrize('tie', [False, True])
def test_export_a_rope_rmsnorm_swiglu_gpt_as_llama_with_the_same_logits(tmp_path, tie):
    """
    Through python model.py export_hf (the tied one through export_hf itself); zero_init is only how training
    starts, so it exports as any other option.
    """
    options = dict(LLAMA_LIKE, tie_embeddings=tie, zero_init=True)
    model = randomized(GPT(GPTConfig(**options)))
    args = {k: options[k] for k in MODEL_ARGS}
    save_checkpoint({'model': model.state_dict(), 'model_args': args, OPTIONS_KEY: model_options(model.config)},
                    str(tmp_path / 'ckpt.pt'))
    out = tmp_path / 'hf'
    if tie:
        export_hf(GPT.from_checkpoint(str(tmp_path / 'ckpt.pt'))[0], str(out))
    else:
        assert 'wrote a Hugging Face Llama' in run('model.py', 'export_hf', str(tmp_path), str(out)).stdout
    config = json.loads((out / 'config.json').read_text())
    assert {k: config[k] for k in ('architectures', 'hidden_size', 'intermediate_size', 'num_attention_heads',
                                   'num_key_value_heads', 'num_hidden_layers', 'head_dim', 'rms_norm_eps', 'rope_theta',
                                   'max_position_embeddings', 'vocab_size', 'tie_word_embeddings', 'attention_bias',
                                   'mlp_bias', 'hidden_act')} == \
        dict(architectures=['LlamaForCausalLM'], hidden_size=64, intermediate_size=96, num_attention_heads=4,
             num_key_value_heads=2, num_hidden_layers=2, head_dim=16, rms_norm_eps=1e-6, rope_theta=500.0,
             max_position_embeddings=32, vocab_size=96, tie_word_embeddings=tie, attention_bias=False,
             mlp_bias=False, hidden_act='silu')
    idx = tokens(96)
    ours = all_logits(model, idx)
    assert ours.abs().max() > 1 and (hf_logits(str(out), idx) - ours).abs().max() < TOLERANCE
    back = GPT.from_pretrained(str(out)).eval() # and in again
    assert (all_logits(back, idx) - ours).abs().max() < TOLERANCE


def test_multi_query_exports_too(tmp_path):
    model = randomized(GPT(GPTConfig(**dict(LLAMA_LIKE, n_kv_head=1))))
    export_hf(model, str(tmp_path))
    idx = tokens(96)
    assert json.loads((tmp_path / 'config.json').read_text())['num_key_value_heads'] == 1
    assert (hf_logits(str(tmp_path), idx) - all_logits(model, idx)).abs().max() < TOLERANCE


LLAMA_PARTS = dict(pos_emb='rope', norm='rmsnorm', mlp='swiglu', bias=False)
# (options with no Hugging Face equivalent, what the error names); rope models export as Llama, others as GPT-2
UNEXPORTABLE = [
    (dict(LLAMA_PARTS, qk_norm=True), 'qk_norm=True'),
    (dict(LLAMA_PARTS, mlp='relu2'), "mlp='relu2'"),
    (dict(LLAMA_PARTS, mlp='gelu'), "mlp='gelu'"),
    (dict(LLAMA_PARTS, logit_softcap=30.0), 'logit_softcap=30.0'),
    (dict(LLAMA_PARTS, norm='layernorm'), "norm='layernorm'"),
    (dict(LLAMA_PARTS, bias=True), 'bias=True'),
    (dict(norm='rmsnorm'), "norm='rmsnorm': a model with learned positions exports as Hugging Face's GPT2LMHeadModel"),
    (dict(mlp='swiglu'), "mlp='swiglu'"),
    (dict(n_kv_head=1), 'n_kv_head=1'),
    (dict(tie_embeddings=False), 'tie_embeddings=False'),
    (dict(qk_norm=True), 'qk_norm=True'),
    (dict(mlp_hidden=96), 'mlp_hidden=96'),
]

@pytest.mark.parametrize('options, match', UNEXPORTABLE, ids=[m for _, m in UNEXPORTABLE])
def test_export_refuses_what_neither_gpt2_nor_llama_can_express_and_writes_nothing(tmp_path, options, match):
    model = GPT(GPTConfig(n_layer=1, n_head=4, n_embd=64, block_size=16, vocab_size=96, **options))
    with pytest.raises(UserError, match=re.escape(match)):
        export_hf(model, str(tmp_path / 'hf'))
    assert not (tmp_path / 'hf').exists()


def test_export_refusal_from_the_shell_is_one_line(tmp_path):
    options = dict(LLAMA_LIKE, qk_norm=True)
    model = GPT(GPTConfig(**options))
    save_checkpoint({'model': model.state_dict(), 'model_args': {k: options[k] for k in MODEL_ARGS},
                     OPTIONS_KEY: model_options(model.config)}, str(tmp_path / 'ckpt.pt'))
    line = one_line_error(run('model.py', 'export_hf', str(tmp_path), str(tmp_path / 'hf'), check=False))
    assert 'qk_norm=True' in line and 'LlamaForCausalLM' in line and 'train with qk_norm=False' in line


def test_huggingface_py_imports_neither_transformers_nor_safetensors_until_weights_move():
    code = "import sys, huggingface, model; print(sorted({'transformers', 'safetensors'} & set(sys.modules)))"
    p = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.stdout.strip() == '[]', p.stderr
