# Pretrains GPT-2 (124M, train.py's default model shape) from scratch on OpenWebText, on one node of 8 GPUs.
# Prepare: python data/openwebtext/prepare.py; then: torchrun --standalone --nproc_per_node=8 train.py config/gpt2.py
wandb_log = True # a run of days: watch its curves on wandb
wandb_project = 'owt'
wandb_run_name = 'gpt2-124M'

# ~0.5M tokens per optimizer step: 12 sequences x 1024 tokens x 40 micro-steps = 491,520; train.py shares the
# 40 micro-steps out among the ranks, so each of 8 GPUs runs 5 of them
batch_size = 12
block_size = 1024
gradient_accumulation_steps = 5 * 8

# 600,000 steps x 491,520 tokens: ~295B tokens; the cosine decay reaches min_lr at the very last step
max_iters = 600000
lr_decay_iters = 600000

eval_interval = 1000 # a val check every ~490M tokens
eval_iters = 200
log_interval = 10 # one line per 10 steps keeps a 600k-step log readable

weight_decay = 1e-1 # AdamW's decay of the matrices and embeddings (train.py's default too, written out here)
