# Scores OpenAI's released gpt2 (124M parameters) on OpenWebText's val split; nothing is trained.
# Needs data/openwebtext/*.bin from python data/openwebtext/prepare.py; run: python train.py config/eval_gpt2.py
batch_size = 8
eval_iters = 500 # 500 batches x 8 x 1024 tokens, ~4M tokens: the mean loss then hardly varies from run to run
eval_only = True # evaluate once and exit, writing no checkpoint
wandb_log = False
init_from = 'gpt2'
