# Fine-tunes the largest GPT-2 (gpt2-xl, 1.5B) on Tiny Shakespeare in GPT-2's BPE tokens, on a single GPU.
# Prepare the tokens first: python data/shakespeare/prepare.py
import time

out_dir = 'out-shakespeare'
eval_interval = 5 # the whole run is 20 steps: a val check every 5 shows where it stops improving
eval_iters = 40
wandb_log = False # True sends the curves to wandb under the project and run name below
wandb_project = 'shakespeare'
wandb_run_name = 'ft-' + str(time.time()) # a timestamp, so that repeated runs get distinct names

dataset = 'shakespeare'
init_from = 'gpt2-xl' # OpenAI's 1.5B weights: 48 layers, 1600 wide

# a model this large memorizes ~300k tokens within a couple of passes: keep the checkpoint of the best val loss
always_save_checkpoint = False

# tokens per step: 1 sequence x 1024 tokens x 32 accumulated micro-steps = 32,768; the train split holds
# 301,966 tokens, so a pass over it takes ~9.2 steps and the 20 steps make ~2.2 passes
batch_size = 1 # one sequence per micro-step: what fits beside 1.5B weights and their AdamW state
gradient_accumulation_steps = 32
max_iters = 20

# pretrained weights need only a nudge: a flat rate 20x below pretraining's 6e-4
learning_rate = 3e-5
decay_lr = False
