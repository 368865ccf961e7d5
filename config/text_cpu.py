# Your own text (data/text/prepare.py) on a CPU: config/shakespeare_char_cpu.py's model and schedule for any dataset.
# $ python data/text/prepare.py --input=book.txt --name=mybook [--tokenizer=char|gpt2|bpe]
# $ python train.py config/text_cpu.py --dataset=mybook
# $ python sample.py --out_dir=out-text-cpu
# The same settings for every tokenizer, so that their bits per character compare (docs/own-text.md): only the
# vocabulary, and with it the embedding and the output layer, changes with the tokenizer.

out_dir = 'out-text-cpu'
eval_interval = 500
eval_iters = 4 # evals come out of the time budget, and GPT-2's 50,304-token output layer makes each one dear
log_interval = 50
always_save_checkpoint = False
full_eval = True # at the end, the loss over all of val.bin: what bits per character are computed from

dataset = 'mybook' # a placeholder: give yours with --dataset=NAME
gradient_accumulation_steps = 1
batch_size = 32
block_size = 128 # tokens of context; data/text/prepare.py makes sure each split holds at least one such window

n_layer = 4
n_head = 4
n_embd = 128
# a book-sized text is seen 10-20 times in 5 minutes, enough to memorise it: dropout keeps val loss falling longer
dropout = 0.2

muon = True
learning_rate = 1e-2
max_seconds = 300.0 # the budget, in seconds of training and evaluation
max_iters = 100000 # a ceiling never reached: the time budget ends the run first
lr_decay_iters = 100000 # unused: with max_seconds set, the cosine decay spans the time budget instead
min_lr = 1e-3
beta2 = 0.99
warmup_iters = 50

device = 'cpu'
compile = False
