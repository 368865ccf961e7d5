"""
HellaSwag (eval.py): the official jsonl read line by line, each ending scored by the mean loss of its own tokens
after the context, ranks that split the examples, the script, and train.py's eval_hellaswag.
"""
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TINY, one_line_error, run
from checkpoint import save_checkpoint
from common import UserError
from eval import (accuracies, choose, encode_example, evaluate_hellaswag, example_batch, hellaswag_encoder,
                  hellaswag_file_path, load_hellaswag, token_losses)
from model import GPT, GPTConfig
from tokens import GPT2_PADDED_VOCAB_SIZE, gpt2_encoding

EMBD = 32
# a proxy nobody listens on: a download attempt fails at once
NO_NETWORK = {'HTTPS_PROXY': 'http://127.0.0.1:9', 'HTTP_PROXY': 'http://127.0.0.1:9', 'NO_PROXY': ''}


def official(ctx, endings, label, ind=0):
    """One line as the official files have it: ctx is ctx_a + ' ' + ctx_b, and fields the scoring does not use."""
    ctx_a, _, ctx_b = ctx.rpartition('. ')
    return json.dumps({'ind': ind, 'activity_label': 'Testing', 'ctx_a': ctx_a + '.', 'ctx_b': ctx_b, 'ctx': ctx,
                       'split': 'val', 'split_type': 'indomain', 'label': label, 'endings': endings,
                       'source_id': f'hand-made~{ind}'}) + '\n'


# With the hand-set model below (' yes' likely, ' no' less so, every other token unlikely):
# 1. 'yes yes yes yes' has the lowest mean loss but a higher sum than 'no': mean and sum disagree.
# 2. 'yes' is right on its own, but scoring the unlikely context with each ending would favour the long 'no ...'.
HAND_MADE = [
    official("A robot is asked. Is it", ["yes yes yes yes", "no", "maybe", "never"], 0, ind=1),
    official("Zebra quantum xylophone. Zebra quantum xylophone", ["yes", "no no no no no no", "maybe", "never"], 0,
             ind=2),
]
LIKELY = {' yes': 14.0, ' no': 13.5} # logits; every other token's is 0


@pytest.fixture(scope='module')
def gpt2_tokens(gpt2_bpe_dir):
    """GPT-2's tokenizer offline, in this process and in the scripts it runs."""
    os.environ['GPT2_BPE_DIR'] = gpt2_bpe_dir
    yield gpt2_encoding()
    os.environ.pop('GPT2_BPE_DIR')


def hand_set_gpt(logits_of_ids, block_size=64):
    """
    A GPT whose next-token logits are logits_of_ids ({id: logit}, 0 elsewhere) whatever the context: the blocks'
    output projections are zero, so the residual stream is wte[token] + wpe[pos]; every position embedding is
    e = (1, -1, 1, ...), every embedding a multiple of e, so ln_f makes it e again, and the tied lm_head gives
    token j the logit e . wte[j] = c_j * |e|^2 = c_j * EMBD.
    """
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=EMBD, block_size=block_size, bias=False,
                          vocab_size=GPT2_PADDED_VOCAB_SIZE, dropout=0.0))
    e = torch.tensor([1.0, -1.0] * (EMBD // 2))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('c_proj.weight'):
                p.zero_()
        model.transformer.wpe.weight.copy_(e.expand_as(model.transformer.wpe.weight))
        model.transformer.wte.weight.zero_()
        for i, logit in logits_of_ids.items():
            model.transformer.wte.weight[i] = e * logit / EMBD
    return model.eval()


def likely_ids(enc):
    ids = {}
    for word, logit in LIKELY.items():
        (i,) = enc.encode_ordinary(word) # one token each
        ids[i] = logit
    return ids


def write(path, lines):
    path.write_text(''.join(lines))
    return str(path)

# -----------------------------------------------------------------------------
# the file

def test_reads_ctx_endings_and_label_of_the_official_format(tmp_path):
    path = write(tmp_path / 'h.jsonl', [HAND_MADE[0], '\n', HAND_MADE[1]]) # a blank line is skipped
    examples = load_hellaswag(path)
    assert examples == [{'ctx': 'A robot is asked. Is it', 'endings': ["yes yes yes yes", "no", "maybe", "never"],
                         'label': 0},
                        {'ctx': 'Zebra quantum xylophone. Zebra quantum xylophone',
                         'endings': ["yes", "no no no no no no", "maybe", "never"], 'label': 0}]
    assert load_hellaswag(path, limit=1) == examples[:1]


@pytest.mark.parametrize('line, complaint', [
    ('{"ctx": "A man", "endings": ["a", "b", "c", "d"], "label": 1', 'line 2 is not valid JSON'),
    ('{"ctx": "A man", "label": 1}', 'line 2 has no endings'),
    ('{"ctx": "A man", "endings": ["a", "b", "c", "d"]}', 'line 2 has no label'),
    ('{"ctx": "A man", "endings": ["a", "b", "c"], "label": 1}', 'line 2: endings must be a list of 4'),
    ('{"ctx": "A man", "endings": ["a", "b", "c", "d"], "label": 4}', 'line 2: label must be an integer from 0 to 3'),
    ('{"ctx": "A man", "endings": ["a", "b", "c", "d"], "label": "1"}', 'line 2: label must be an integer'),
    ('{"ctx": "", "endings": ["a", "b", "c", "d"], "label": 1}', 'line 2: ctx must be a non-empty string'),
    ('["A man", ["a", "b", "c", "d"], 1]', 'line 2 is not a JSON object'),
])
def test_a_bad_line_is_an_error_that_names_it(tmp_path, line, complaint):
    path = write(tmp_path / 'bad.jsonl', [HAND_MADE[0], line + '\n'])
    with pytest.raises(UserError, match=re.escape(f"{path} {complaint}")):
        load_hellaswag(path)


def test_an_empty_file_is_an_error(tmp_path):
    with pytest.raises(UserError, match='holds no examples'):
        load_hellaswag(write(tmp_path / 'empty.jsonl', ['\n']))

# -----------------------------------------------------------------------------
# the scoring

def test_acc_sums_the_endings_losses_and_acc_norm_averages_them():
    """Per-token losses, with -1 targets where nothing is scored (the context, the padding)."""
    losses = torch.tensor([[9.0, 1.0, 1.0, 1.0, 1.0], # context token, then 4 tokens of loss 1: sum 4, mean 1
                           [9.0, 3.0, 0.0, 0.0, 0.0], # 1 token of loss 3: sum 3, mean 3
                           [9.0, 2.0, 2.0, 0.0, 0.0], # sum 4, mean 2
                           [9.0, 5.0, 0.0, 0.0, 0.0]])
    targets = torch.tensor([[-1, 7, 7, 7, 7], [-1, 7, -1, -1, -1], [-1, 7, 7, -1, -1], [-1, 7, -1, -1, -1]])
    assert choose(losses, targets) == (1, 0) # acc: the lowest sum (3); acc_norm: the lowest mean (1)
    assert accuracies(torch.tensor([8.0, 3.0, 5.0])) == {'examples': 8, 'acc': 3 / 8, 'acc_norm': 5 / 8}


def test_rows_are_context_then_ending_after_a_space_and_only_the_ending_is_scored(gpt2_tokens):
    encoded = encode_example({'ctx': 'Is it', 'endings': ['yes yes', 'no', 'maybe', 'never'], 'label': 0},
                             gpt2_tokens.encode_ordinary)
    ctx, endings, label = encoded
    assert ctx == gpt2_tokens.encode_ordinary('Is it') and endings[0] == gpt2_tokens.encode_ordinary(' yes yes')
    idx, targets = example_batch(encoded, block_size=64)
    assert idx.shape == targets.shape == (4, len(ctx) + 2 - 1) # the longest row, less its last token (only a target)
    assert idx[0].tolist() == ctx + endings[0][:1]
    assert targets[0].tolist() == [-1] * (len(ctx) - 1) + endings[0]
    assert targets[1].tolist() == [-1] * (len(ctx) - 1) + endings[1] + [-1] # padding is not scored
    # a block too short for the whole row: the context loses tokens from its start, the ending stays whole
    idx, targets = example_batch(encoded, block_size=2)
    assert idx[0].tolist() == ctx[-1:] + endings[0][:1] and targets[0].tolist() == endings[0]


def test_an_endings_loss_is_the_cross_entropy_of_its_tokens_one_after_another(gpt2_tokens):
    """
    The batched, padded rows against a reference that feeds the model context + ending[:j] once per token and
    reads only the last position: scoring the context, the padding or a token off by one would differ.
    """
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=EMBD, block_size=64, bias=True,
                          vocab_size=GPT2_PADDED_VOCAB_SIZE, dropout=0.0)).eval()
    with torch.no_grad(): # larger weights than at init: a peaked distribution, different for every context
        for p in model.parameters():
            p.mul_(20)
    example = json.loads(HAND_MADE[0])
    encoded = encode_example(example, gpt2_tokens.encode_ordinary)
    idx, targets = example_batch(encoded, block_size=64)
    losses = token_losses(model, idx, targets)
    ctx, endings, _ = encoded
    for row, ending in enumerate(endings):
        reference = []
        for j, token in enumerate(ending):
            with torch.no_grad():
                logits, _ = model(torch.tensor([ctx + ending[:j]]))
            reference.append(-torch.log_softmax(logits[0, -1].float(), -1)[token].item())
        scored = losses[row][targets[row] != -1]
        assert scored.tolist() == pytest.approx(reference, abs=1e-4)
        assert losses[row][targets[row] == -1].abs().max() == 0


def test_a_hand_set_model_picks_the_right_endings_by_mean_loss(gpt2_tokens, tmp_path):
    enc = gpt2_tokens
    ids = likely_ids(enc)
    model = hand_set_gpt(ids)
    log_z = math.log(sum(math.exp(v) for v in ids.values()) + GPT2_PADDED_VOCAB_SIZE - len(ids))
    examples = [encode_example(e, enc.encode_ordinary) for e in load_hellaswag(write(tmp_path / 'h.jsonl', HAND_MADE))]
    # each ending token costs log Z - its logit, known in closed form
    idx, targets = example_batch(examples[0], 64)
    losses = token_losses(model, idx, targets)
    assert losses[0][targets[0] != -1].tolist() == pytest.approx([log_z - LIKELY[' yes']] * 4, abs=1e-4)
    assert losses[1][targets[1] != -1].tolist() == pytest.approx([log_z - LIKELY[' no']], abs=1e-4)
    # example 1: the sum (acc) picks 'no', the mean (acc_norm) picks 'yes yes yes yes', which is right;
    # example 2: right by both, and it would not be if the context's tokens were scored with each ending
    assert choose(losses, targets) == (1, 0)
    counts = evaluate_hellaswag(model, examples, 'cpu')
    assert accuracies(counts) == {'examples': 2, 'acc': 0.5, 'acc_norm': 1.0}


class CountingModel(torch.nn.Module):
    """Counts forward passes: FSDP needs every rank in each one."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config, self.calls = model, model.config, 0

    def forward(self, idx, targets):
        self.calls += 1
        return self.model(idx, targets)


def test_ranks_that_split_the_examples_sum_to_one_process_with_as_many_forward_passes_each(gpt2_tokens):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=EMBD, block_size=64, bias=False,
                          vocab_size=GPT2_PADDED_VOCAB_SIZE, dropout=0.0))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(20)
    words = ['a cat', 'the dog', 'one bird', 'red fish', 'two cows', 'my horse', 'her goat']
    examples = [encode_example({'ctx': f'Look at {w}. It', 'endings': ['runs', 'sits down', 'is blue', 'flies away'],
                                'label': i % 4}, gpt2_tokens.encode_ordinary) for i, w in enumerate(words)]
    one = evaluate_hellaswag(model, examples, 'cpu')
    assert 0 < one[2] < len(examples) # not all right or wrong: a mix-up of examples would show
    for world_size in (2, 3):
        counting = [CountingModel(model) for _ in range(world_size)]
        parts = [evaluate_hellaswag(counting[r], examples, 'cpu', rank=r, world_size=world_size)
                 for r in range(world_size)]
        assert torch.equal(sum(parts), one)
        assert {m.calls for m in counting} == {math.ceil(len(examples) / world_size)}
    assert model.training # put back as it was

# -----------------------------------------------------------------------------
# the script, and train.py

@pytest.fixture(scope='module')
def hand_set_run(gpt2_tokens, tmp_path_factory):
    """An out_dir with the hand-set model as a checkpoint, and the hand-made file."""
    out = tmp_path_factory.mktemp('hand-set')
    model = hand_set_gpt(likely_ids(gpt2_tokens))
    args = dict(n_layer=1, n_head=1, n_embd=EMBD, block_size=64, bias=False, vocab_size=GPT2_PADDED_VOCAB_SIZE,
                dropout=0.0)
    save_checkpoint({'model': model.state_dict(), 'model_args': args, 'iter_num': 0, 'best_val_loss': 9.0,
                     'config': {'dataset': 'openwebtext'}}, str(out / 'ckpt.pt'))
    return out, write(out / 'hellaswag.jsonl', HAND_MADE)


def test_the_script_scores_a_checkpoint(hand_set_run):
    out, data = hand_set_run
    p = run('eval.py', 'hellaswag', f'--out_dir={out}', f'--hellaswag_file={data}', '--device=cpu', '--dtype=float32')
    assert 'acc_norm 1.0000, acc 0.5000 over 2 examples' in p.stdout
    assert re.search(r'^hellaswag: .*examples=2 acc_norm=1.0000 acc=0.5000 .*examples_per_s=', p.stdout, re.M)


def test_the_scripts_bad_input_is_one_line(hand_set_run, tmp_path, char_data):
    out, data = hand_set_run
    bad = write(tmp_path / 'bad.jsonl', [HAND_MADE[0], '{"ctx": "x"\n'])
    common = [f'--out_dir={out}', '--device=cpu']
    assert 'bad.jsonl line 2 is not valid JSON' in one_line_error(
        run('eval.py', 'hellaswag', f'--hellaswag_file={bad}', *common, check=False))
    assert 'no such file' in one_line_error(
        run('eval.py', 'hellaswag', f'--hellaswag_file={tmp_path / "nope.jsonl"}', *common, check=False))
    # offline, with no copy in the cache: says how to give the file
    msg = one_line_error(run('eval.py', 'hellaswag', f'--cache_dir={tmp_path / "cache"}', *common, check=False,
                             env_extra=NO_NETWORK))
    assert 'could not download' in msg and '--hellaswag_file=PATH' in msg
    assert 'usage: python eval.py hellaswag' in one_line_error(run('eval.py', 'hellaswag-2', check=False))
    with pytest.raises(UserError, match="HellaSwag's test split has no labels"):
        hellaswag_file_path(split='test', cache_dir=str(tmp_path))


def test_a_char_level_model_is_refused(tmp_path, char_data, gpt2_tokens):
    with pytest.raises(UserError, match="scored in GPT-2 tokens but dataset 'shakespeare_char' has its own vocab"):
        hellaswag_encoder(char_data)
    with pytest.raises(UserError, match="the model has 65 tokens"):
        hellaswag_encoder(None, 65)


@pytest.fixture(scope='module')
def bpe_data(gpt2_tokens):
    """data/shakespeare in GPT-2 tokens, prepared by its prepare.py (offline: GPT2_BPE_DIR)."""
    run('data/shakespeare/prepare.py')
    return os.path.join(ROOT, 'data', 'shakespeare')


def torchrun(*args):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py', *args]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180,
                       env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1'))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p


def test_train_py_reports_and_logs_hellaswag_at_each_eval_split_among_ranks(tmp_path, hand_set_run, bpe_data):
    """
    train.py's acc_norm is eval.py's on the checkpoint it saved after the last eval; 2 FSDP ranks (each scoring
    its share of 7 examples, as many forward passes each) give what one process gives.
    """
    _, hand_made = hand_set_run
    words = ['a cat', 'the dog', 'one bird', 'red fish', 'two cows', 'my horse', 'her goat']
    data = write(tmp_path / 'seven.jsonl', [official(f'Look at {w}. It', ['runs', 'sits down', 'is blue', 'flies away'],
                                                     i % 4, ind=i) for i, w in enumerate(words)])
    args = ['--dataset=shakespeare', *TINY, '--gradient_accumulation_steps=2', '--eval_iters=1', '--max_iters=2',
            '--eval_interval=2', '--learning_rate=1e-2', '--warmup_iters=0', '--eval_hellaswag=True', f'--hellaswag_file={data}']
    one = run('train.py', *args, f'--out_dir={tmp_path / "one"}', env_extra={'OMP_NUM_THREADS': '1'})
    scores = re.findall(r'^step (\d+): .*, hellaswag acc_norm ([\d.]+)$', one.stdout, re.M)
    assert [s for s, _ in scores] == ['0', '2']
    logged = [json.loads(line) for line in (tmp_path / 'one' / 'log.jsonl').read_text().splitlines()]
    assert [r['hellaswag'] for r in logged if r['kind'] == 'eval'] == pytest.approx([float(v) for _, v in scores],
                                                                                    abs=1e-4)
    p = run('eval.py', 'hellaswag', f'--out_dir={tmp_path / "one"}', f'--hellaswag_file={data}', '--device=cpu',
            '--dtype=float32')
    assert f"acc_norm {scores[-1][1]}" in p.stdout
    two = torchrun(*args, f'--out_dir={tmp_path / "two"}', '--fsdp=True')
    assert re.findall(r'^step (\d+): .*, hellaswag acc_norm ([\d.]+)$', two.stdout, re.M) == scores
    # a char-level dataset: refused before training starts
    p = run('train.py', '--dataset=shakespeare_char', *TINY, '--eval_hellaswag=True', f'--hellaswag_file={hand_made}',
            f'--out_dir={tmp_path / "char"}', check=False)
    assert "HellaSwag is scored in GPT-2 tokens" in one_line_error(p)
    assert not (tmp_path / 'char').exists()
