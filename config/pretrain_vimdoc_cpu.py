# Pretrains a small GPT-2-token model on a local English corpus (Vim's manual, ~3.4M GPT-2 tokens) on a CPU, the
# first half of a pretrain-then-fine-tune exercise; config/finetune_vimdoc_shakespeare_cpu.py is the second half.
# Build the corpus and its shards (docs/fineweb-edu.md, "A local corpus"), then:
# $ python train.py config/pretrain_vimdoc_cpu.py
# $ python model.py export_hf out-vimdoc-cpu out-vimdoc-cpu/hf   # the weights, for the fine-tune's init_from
# The same shape trained from scratch on Shakespeare for as many steps as both halves together is the baseline:
# $ python train.py config/pretrain_vimdoc_cpu.py --dataset=shakespeare --out_dir=out-shakespeare-scratch-cpu \
#     --max_iters=450 --lr_decay_iters=450 --full_eval=True
out_dir = 'out-vimdoc-cpu'
dataset = 'vimdoc' # a shard folder: read in order, one pass is ~12,000 steps of this batch
eval_interval = 100
eval_iters = 5
log_interval = 10

# 4 sequences x 64 tokens: small steps, so that a few minutes hold a few hundred of them
batch_size = 4
block_size = 64
gradient_accumulation_steps = 1

# a small model with GPT-2's vocabulary (its embedding is most of the ~3.3M parameters) and GPT-2's biases, so that
# it exports to a Hugging Face GPT-2 directory exactly
n_layer = 2
n_head = 2
n_embd = 64
bias = True
dropout = 0.0

learning_rate = 3e-3
max_iters = 300
lr_decay_iters = 300
warmup_iters = 10
min_lr = 3e-4

device = 'cpu'
compile = False # torch.compile's start-up would cost more than it saves in a few minutes
