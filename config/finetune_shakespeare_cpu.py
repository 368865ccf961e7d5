# fine-tune GPT-2 (124M) on Tiny Shakespeare in GPT-2 tokens on a laptop CPU, in a few minutes
# first: python data/shakespeare/prepare.py; then: python sample.py --out_dir=out-shakespeare-cpu
out_dir = 'out-shakespeare-cpu'
eval_interval = 10
eval_iters = 10
log_interval = 1
wandb_log = False

dataset = 'shakespeare'
init_from = 'gpt2'
always_save_checkpoint = False # only save when val improves

# 4 sequences of 128 tokens per step: GPT-2's 1024 positions cropped to 128 to keep steps short
batch_size = 4
block_size = 128
gradient_accumulation_steps = 1
max_iters = 40

learning_rate = 3e-5
decay_lr = False
dropout = 0.0

device = 'cpu'
compile = False # compiling would take longer than the run
