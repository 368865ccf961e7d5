# evaluate OpenAI's gpt2-large on OpenWebText (first: python data/openwebtext/prepare.py):
# python train.py config/eval_gpt2_large.py
batch_size = 8
eval_iters = 500 # 500 * 8 * 1024 tokens: enough for a stable estimate
eval_only = True
wandb_log = False
init_from = 'gpt2-large'
