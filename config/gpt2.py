# pretrain GPT-2 (124M) on OpenWebText on one node of 8 GPUs (first: python data/openwebtext/prepare.py):
# torchrun --standalone --nproc_per_node=8 train.py config/gpt2.py
wandb_log = True
wandb_project = 'owt'
wandb_run_name = 'gpt2-124M'

# 12 batch * 1024 block * 5 accumulation steps * 8 GPUs = 491,520 tokens per step, about 0.5M
batch_size = 12
block_size = 1024
gradient_accumulation_steps = 5 * 8

# 600k steps: about 300B tokens
max_iters = 600000
lr_decay_iters = 600000

eval_interval = 1000
eval_iters = 200
log_interval = 10

weight_decay = 1e-1
