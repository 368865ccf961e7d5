# A small character-level GPT on Tiny Shakespeare, nanoGPT's GPU baseline: minutes on one GPU, which makes it
# a quick end-to-end check of a change. Run: python train.py config/shakespeare_char.py (CPU: shakespeare_char_cpu.py)

out_dir = 'out-shakespeare-char'
eval_interval = 250 # the model overfits 1M characters fast: frequent val checks catch its best point
eval_iters = 200
log_interval = 10 # a GPU step takes milliseconds: a line per 10 steps keeps the log short

# once it overfits, the val loss climbs again: write ckpt.pt only for a new best
always_save_checkpoint = False

wandb_log = False # off by default here; --wandb_log=True turns it on
wandb_project = 'shakespeare-char'
wandb_run_name = 'mini-gpt'

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 64
block_size = 256 # each prediction sees at most the 256 characters before it

# 6 layers, 6 heads of 64 dims, 384 wide: ~10.6M parameters
n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2 # strong regularization: a model this size can memorize the 1M-character training text

learning_rate = 1e-3 # a small model tolerates larger steps than GPT-2's 6e-4
max_iters = 5000
lr_decay_iters = 5000 # the cosine reaches min_lr at the last step
min_lr = 1e-4 # a tenth of the peak rate
beta2 = 0.99 # 64 x 256 = 16,384 tokens a step give noisy gradients: a longer second-moment average evens them out

warmup_iters = 100 # brief: a model this small trains stably almost from the first step
