"""
Loss curves: the run log train.py writes (out_dir/log.jsonl), and a picture of one or more runs drawn from it.

$ python plot.py out-shakespeare-char                     # writes loss-curves.png in the current directory
$ python plot.py out-lr-1e-2 out-lr-3e-3 --out=lr.png     # several runs overlaid, labelled by their folders

The picture shows the training loss of each logged step (thin), the train and val losses of each eval (solid and
dashed, with markers) and, when the runs evaluated it, HellaSwag's acc_norm (eval.py), all against tokens seen.

log.jsonl holds one JSON object a line, written by rank 0 only:
- {"kind": "step", "iter", "loss", "lr", "tokens", "tok_per_s", "mfu", "dt_ms", "time"} every log_interval steps;
- {"kind": "eval", "iter", "train_loss", "val_loss", "lr", "tokens", "time", "hellaswag"?} at every eval.
tokens = iter x tokens_per_iter: the tokens trained on before that loss was measured; time: seconds of training
(evals included) since the run started, across resumes; mfu is null until it is measured.
"""
import json
import os
import sys

from common import UserError, atomic_write, exit_on_user_error

LOG_NAME = 'log.jsonl'
KINDS = ('step', 'eval')
DEFAULT_OUT = 'loss-curves.png'
FIGURE_INCHES = (11, 4.2) # one panel; the HellaSwag panel widens it
DPI = 90 # about 1000 x 380 pixels: readable, and a PNG of tens of KB
STEP_ALPHA = 0.35 # the per-step training loss is noisy: drawn faintly under the eval curves


class RunLog:
    """
    Appends records to out_dir/log.jsonl. The first write decides what stays of an existing log: a new run
    (resume_iter=None) empties it; a run resumed from a checkpoint of iter K keeps the steps before K (the
    checkpoint has their updates) and the evals up to K, and drops all later lines, written by a run that went on
    past its last checkpoint. An eval at K is dropped only when the resumed run writes an eval at K itself (it
    evaluates the same weights), so the log holds each iter once. Until that first write the file is untouched.

    The log is in iter order (an eval before the step of the same iter), so what stays is a prefix of it, and the
    file is cut with one truncate: no temp file beside the checkpoints, and a long log is not copied. A crash
    leaves the old log or the cut one, and any later record is appended whole with one write.
    """

    def __init__(self, out_dir, resume_iter=None):
        self.path = os.path.join(out_dir, LOG_NAME)
        self.resume_iter = resume_iter
        self.started = False

    def write(self, kind, **fields):
        line = json.dumps({'kind': kind, **fields}) + '\n'
        if not self.started:
            self._cut(kind, fields.get('iter'))
            self.started = True
        with open(self.path, 'a', encoding='utf-8') as f:
            f.write(line)

    def _cut(self, kind, first_iter):
        """Truncate the log to what a run that first writes (kind, first_iter) keeps of it."""
        if self.resume_iter is None or not os.path.isfile(self.path):
            open(self.path, 'w').close()
            return
        keep = 0 # bytes
        with open(self.path, 'rb') as f:
            for line in f:
                if not line.endswith(b'\n') or self._past(line, kind, first_iter): # or a write cut short by a crash
                    break
                keep += len(line)
        os.truncate(self.path, keep)

    def _past(self, line, kind, first_iter):
        K = self.resume_iter
        try:
            record = json.loads(line)
            it, old_kind = int(record['iter']), record.get('kind')
        except (ValueError, KeyError, TypeError):
            return False # not ours to judge: kept, and plot.py will name it
        replaced = old_kind == 'eval' and kind == 'eval' and first_iter == K
        return it > K or (it == K and (old_kind != 'eval' or replaced))


def read_log(out_dir):
    """
    {'step': [records], 'eval': [records]} of out_dir/log.jsonl, each sorted by iter with one record per iter (the
    last written wins). A missing, empty or corrupt log is a UserError naming the folder or the line. An unfinished
    last line (no newline yet: a live run is writing it) is left out.
    """
    if not os.path.isdir(out_dir):
        raise UserError(f"{out_dir}: no such folder; give the out_dir of a train.py run")
    path = os.path.join(out_dir, LOG_NAME)
    if not os.path.isfile(path):
        raise UserError(f"{out_dir} has no {LOG_NAME}: train.py writes it there as it runs "
                        f"(runs from before the run log existed have none)")
    with open(path, encoding='utf-8', errors='replace') as f:
        lines = f.readlines()
    found = {kind: {} for kind in KINDS}
    for n, line in enumerate(lines, start=1):
        if not line.strip() or not line.endswith('\n'):
            continue
        try:
            record = json.loads(line)
            kind, it = record['kind'], int(record['iter'])
            if kind not in KINDS:
                raise KeyError(kind)
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path} line {n} is not a run-log record ({type(e).__name__}): each line must be a JSON "
                            f"object with kind 'step' or 'eval' and an iter; remove or fix that line")
        found[kind][it] = record
    if not found['step'] and not found['eval']:
        raise UserError(f"{path} holds no records yet: the run has not logged a step or an eval")
    return {kind: [found[kind][i] for i in sorted(found[kind])] for kind in KINDS}


def numbers(records, key):
    """(tokens, values) of the records that have a number under key."""
    pairs = [(r.get('tokens'), r.get(key)) for r in records]
    pairs = [(t, v) for t, v in pairs if isinstance(t, (int, float)) and isinstance(v, (int, float))]
    return [t for t, _ in pairs], [v for _, v in pairs]


def draw(runs, out):
    """runs: [(label, log)] from read_log. Writes a PNG to out (atomically) and returns out."""
    import matplotlib
    matplotlib.use('Agg') # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter
    from eval import CHANCE, GPT2_124M_ACC_NORM

    with_hellaswag = any(numbers(log['eval'], 'hellaswag')[0] for _, log in runs)
    width, height = FIGURE_INCHES
    fig, axes = plt.subplots(1, 2 if with_hellaswag else 1, figsize=(width * (1.6 if with_hellaswag else 1), height),
                             squeeze=False)
    loss_ax = axes[0][0]
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for i, (label, log) in enumerate(runs):
        color = colors[i % len(colors)]
        loss_ax.plot(*numbers(log['step'], 'loss'), color=color, alpha=STEP_ALPHA, linewidth=0.8)
        loss_ax.plot(*numbers(log['eval'], 'train_loss'), color=color, marker='o', markersize=3,
                     label=f"{label}: train")
        loss_ax.plot(*numbers(log['eval'], 'val_loss'), color=color, marker='s', markersize=3, linestyle='--',
                     label=f"{label}: val")
    loss_ax.set_title('loss (faint: every logged step)')
    loss_ax.set_ylabel('cross-entropy loss')
    if with_hellaswag:
        ax = axes[0][1]
        for i, (label, log) in enumerate(runs):
            tokens, scores = numbers(log['eval'], 'hellaswag')
            if scores: # a run without HellaSwag stays out of this panel's legend
                ax.plot(tokens, scores, color=colors[i % len(colors)], marker='o', markersize=3, label=label)
        ax.axhline(CHANCE, color='gray', linestyle=':', linewidth=1, label=f'chance {CHANCE:.2f}')
        ax.axhline(GPT2_124M_ACC_NORM, color='gray', linestyle='--', linewidth=1,
                   label=f'GPT-2 124M {GPT2_124M_ACC_NORM:.3f}')
        ax.set_title('HellaSwag acc_norm')
        ax.set_ylabel('accuracy')
    for ax in axes[0]:
        ax.set_xlabel('tokens seen')
        ax.xaxis.set_major_formatter(EngFormatter())
        ax.grid(alpha=0.3)
        ax.legend(fontsize='small')
    fig.tight_layout()
    with atomic_write(out) as tmp:
        fig.savefig(tmp, format='png', dpi=DPI)
    plt.close(fig)
    return out


def main(argv):
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message): # one 'error: ...' line, as every script here
            raise UserError(f"{message} (usage: python plot.py OUT_DIR [OUT_DIR ...] [--out=PNG])")

    parser = Parser(description="Draw the loss curves (and HellaSwag) of train.py runs from their log.jsonl.")
    parser.add_argument('out_dirs', nargs='+', metavar='OUT_DIR', help="a run's out_dir; several are overlaid")
    parser.add_argument('--out', default=DEFAULT_OUT, help=f"the PNG to write (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    runs = [(os.path.basename(os.path.normpath(d)), read_log(d)) for d in args.out_dirs]
    if not args.out.lower().endswith('.png'):
        raise UserError(f"--out={args.out}: the picture is a PNG, give a path ending in .png")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise UserError(f"--out={args.out}: its folder does not exist; create it first")
    print(f"wrote {draw(runs, args.out)}")


if __name__ == '__main__':
    exit_on_user_error()
    main(sys.argv[1:])
