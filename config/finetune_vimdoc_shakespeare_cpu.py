# Fine-tunes the model of config/pretrain_vimdoc_cpu.py (exported to out-vimdoc-cpu/hf) on Tiny Shakespeare in
# GPT-2 tokens, on a CPU. Prepare: python data/shakespeare/prepare.py; then:
# $ python train.py config/finetune_vimdoc_shakespeare_cpu.py
# docs/fineweb-edu.md compares its full val loss with the same model trained from scratch for as many steps.
out_dir = 'out-vimdoc-shakespeare-cpu'
init_from = 'out-vimdoc-cpu/hf' # a Hugging Face GPT-2 directory: the model's shape comes from it and stays
dataset = 'shakespeare'
eval_interval = 50
eval_iters = 5
log_interval = 10
full_eval = True # at the end, the loss over every block of val.bin: the number the comparison uses

batch_size = 4
block_size = 64
gradient_accumulation_steps = 1
dropout = 0.0

learning_rate = 1e-3 # lower than pretraining's 3e-3: the weights start somewhere worth keeping
max_iters = 150
lr_decay_iters = 150
warmup_iters = 10
min_lr = 1e-4

device = 'cpu'
compile = False
