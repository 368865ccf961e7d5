# Fine-tunes GPT-2 (124M) on Tiny Shakespeare in GPT-2's BPE tokens on a laptop CPU, in a few minutes.
# Prepare: python data/shakespeare/prepare.py; afterwards: python sample.py --out_dir=out-shakespeare-cpu
out_dir = 'out-shakespeare-cpu'
eval_interval = 10 # 40 steps in all: four looks at the val loss
eval_iters = 10 # few batches per look, so that evaluating stays a small part of a CPU run
log_interval = 1 # a CPU step takes long enough that every one is worth a line
wandb_log = False

dataset = 'shakespeare'
init_from = 'gpt2'
always_save_checkpoint = False # write ckpt.pt only when the val loss reaches a new low

# 4 sequences x 128 tokens per step: GPT-2's 1024 positions are cut to 128 so that a CPU step stays short
batch_size = 4
block_size = 128
gradient_accumulation_steps = 1
max_iters = 40

learning_rate = 3e-5 # the same small, flat rate as the GPU fine-tune
decay_lr = False
dropout = 0.0 # 40 short steps are too few to overfit, so no regularization is needed

device = 'cpu'
compile = False # torch.compile's start-up would cost more than it could save over 40 steps
