# fine-tune GPT-2 XL (1.5B) on Tiny Shakespeare in GPT-2 tokens, on one GPU
# first: python data/shakespeare/prepare.py
import time

out_dir = 'out-shakespeare'
eval_interval = 5
eval_iters = 40
wandb_log = False # feel free to turn on
wandb_project = 'shakespeare'
wandb_run_name = 'ft-' + str(time.time())

dataset = 'shakespeare'
init_from = 'gpt2-xl' # the largest GPT-2

# only save when val improves: this small dataset is overfit quickly
always_save_checkpoint = False

# 1 batch * 32 accumulation steps * 1024 tokens = 32,768 tokens per iteration;
# Tiny Shakespeare has 301,966 train tokens, so one epoch is ~9.2 iterations
batch_size = 1
gradient_accumulation_steps = 32
max_iters = 20

# fine-tune at a small, constant learning rate
learning_rate = 3e-5
decay_lr = False
