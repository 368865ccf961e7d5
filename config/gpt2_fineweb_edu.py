# Pretrains GPT-2 (124M) on FineWeb-Edu's 10B-token sample with the settings of the well-known GPT-2 reproduction:
# ~0.5M tokens a step, 19,073 steps (one pass over ~10B tokens), a short warmup and a cosine decay to lr / 10.
# Prepare: python data/fineweb_edu/prepare.py   (streams HuggingFaceFW/fineweb-edu sample-10BT into 100M-token
#          shards, ~20 GB; docs/fineweb-edu.md)
# Train:   torchrun --standalone --nproc_per_node=8 train.py config/gpt2_fineweb_edu.py
#
# Smaller machines keep the same optimization: gradient_accumulation_steps counts micro-steps for the whole job, so
# fewer GPUs simply run more of them each (1 GPU: all 8, each 64 x 1024 tokens). One consumer GPU with 8 GB:
#   python train.py config/gpt2_fineweb_edu.py --batch_size=8 --gradient_accumulation_steps=64
#   (8 x 1024 x 64 = 524,288 tokens a step, the same as below); if that runs out of memory, add
#   --grad_checkpointing=True (each block's activations recomputed in backward: ~1/3 more compute, far less memory)
#   or halve batch_size again and double gradient_accumulation_steps. The weights, gradients and AdamW moments
#   of 124M parameters take ~2 GB in fp32; the rest is activations, which batch_size scales. The whole run is
#   ~6 x 124M x 10B = 7.4e18 FLOPs, so a single consumer GPU needs days: --max_iters (with --lr_decay_iters at the
#   same value) trains on fewer tokens with a complete schedule.
out_dir = 'out-gpt2-fineweb-edu'
dataset = 'fineweb_edu' # data/fineweb_edu: *_val_000000.bin and *_train_*.bin shards, read in order
wandb_log = False # True to follow the curves on wandb (needs wandb login, or WANDB_MODE=offline)
wandb_project = 'fineweb-edu'
wandb_run_name = 'gpt2-124M'

# 64 sequences x 1024 tokens x 8 micro-steps = 524,288 tokens (2**19) a step; on 8 GPUs each runs one micro-step
batch_size = 64
block_size = 1024
gradient_accumulation_steps = 8

# GPT-2 small, with GPT-2's biases (so the weights export to Hugging Face's GPT-2 unchanged)
n_layer = 12
n_head = 12
n_embd = 768
bias = True
dropout = 0.0

# 19,073 steps x 524,288 tokens = ~10.0B tokens: one epoch of sample-10BT
max_iters = 19073
lr_decay_iters = 19073
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 715 # ~375M tokens of linear warmup
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0

eval_interval = 250 # a val loss, HellaSwag and a checkpoint every ~131M tokens
eval_iters = 160 # 160 x 64 x 1024 = ~10M val tokens per estimate, split among the ranks
eval_hellaswag = True # HellaSwag acc_norm at each eval (train.py; the val set is downloaded once)
log_interval = 10
keep_last = 2 # also keep the two newest checkpoints besides ckpt.pt
