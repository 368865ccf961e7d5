"""Shared helpers: the repo root, a prepared Tiny Shakespeare, and a way to run the scripts."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT) # tests import model.py and configurator.py like the scripts do
CHAR_DIR = os.path.join(ROOT, 'data', 'shakespeare_char')
# GPT-2's encoder.json and vocab.bpe, kept beside the repo so that the tokenizer tests run offline
SHARED_BPE = os.path.join(ROOT, '..', 'shared', 'data', 'gpt2-bpe')
GPT2_BPE_NAMES = ('encoder.json', 'vocab.bpe')

# a model small enough that a few training steps take well under a second
TINY = ['--gradient_accumulation_steps=1', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4',
        '--dropout=0.0', '--compile=False', '--device=cpu', '--dtype=float32']


def run(script, *args, check=True, timeout=300, env_extra=None, **kwargs):
    """Run one of the repo's scripts in a subprocess, as a user would; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', **(env_extra or {}))
    p = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=kwargs.pop('cwd', ROOT),
                       capture_output=True, text=True, timeout=timeout, env=env, **kwargs)
    if check and p.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def one_line_error(p):
    """The check for bad input: a non-zero exit, no traceback, and exactly one 'error: ...' line. Returns the line."""
    assert p.returncode != 0, p.stdout
    assert 'Traceback' not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), p.stderr
    return lines[0]


@pytest.fixture(scope='session')
def char_data():
    """data/shakespeare_char prepared by its prepare.py, as a user prepares it, from the input.txt that ships here."""
    p = run('data/shakespeare_char/prepare.py', check=False)
    if p.returncode != 0 or not all(os.path.exists(os.path.join(CHAR_DIR, f)) for f in ('train.bin', 'val.bin')):
        pytest.fail(f"Tiny Shakespeare could not be prepared: python data/shakespeare_char/prepare.py exited with "
                    f"{p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}", pytrace=False)
    return CHAR_DIR

@pytest.fixture(scope='session')
def gpt2_bpe_dir():
    """The directory of GPT-2's BPE files for GPT2_BPE_DIR. Without it the tests that need it skip (and fail in CI)."""
    if not all(os.path.isfile(os.path.join(SHARED_BPE, name)) for name in GPT2_BPE_NAMES):
        pytest.skip(f"no GPT-2 encoder.json and vocab.bpe in {os.path.normpath(SHARED_BPE)}")
    return SHARED_BPE

# -----------------------------------------------------------------------------
# In CI (CI=true) a skipped test is a failed one: a test that cannot run there is a gap in the coverage, not a
# pass. Only tests marked gpu may skip, on runners without an accelerator.

def in_ci():
    return os.environ.get('CI', '').lower() in ('true', '1', 'yes')


def pytest_configure(config):
    config.addinivalue_line('markers', 'gpu: needs an accelerator; the one kind of test allowed to skip in CI')


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skip in any phase (a skipif mark, a fixture that skips, pytest.skip in the test) fails in CI; not an xfail."""
    outcome = yield
    report = outcome.get_result()
    if not in_ci() or not report.skipped or hasattr(report, 'wasxfail') or item.get_closest_marker('gpu') is not None:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = 'failed'
    report.longrepr = f"skipped in CI, where every test must run (only @pytest.mark.gpu tests may skip): {reason}"
