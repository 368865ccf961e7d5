# A small GPT that adds 2-digit numbers, sized for 5 minutes of a 2-core CPU (docs/arithmetic.md has the numbers).
# $ python data/arithmetic/prepare.py && python train.py config/arithmetic.py
# $ python data/arithmetic/evaluate.py --out_dir=out-arithmetic
# Each window is one problem (block_size = the dataset's row length), and the loss counts only its answer.
# Other datasets of data/arithmetic/prepare.py have longer rows: give --dataset=... --block_size=<their row_len>.

out_dir = 'out-arithmetic'
eval_interval = 500
eval_iters = 20
log_interval = 100
always_save_checkpoint = True

dataset = 'arithmetic'
loss_mask = True
gradient_accumulation_steps = 1
batch_size = 256
block_size = 10 # the rows of 2-digit addition: '99+99=891\n'

n_layer = 2
n_head = 4
n_embd = 128
dropout = 0.0

muon = True
learning_rate = 1e-2
max_seconds = 270.0 # the budget, in seconds of training and evaluation
max_iters = 100000 # a ceiling never reached: the time budget ends the run first
lr_decay_iters = 100000 # unused: with max_seconds set, the cosine decay spans the time budget instead
min_lr = 1e-3
beta2 = 0.99
warmup_iters = 50

device = 'cpu'
compile = False
