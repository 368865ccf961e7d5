"""Shared helpers: the repo root, a prepared Tiny Shakespeare, and a way to run the scripts."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT) # tests import model.py and configurator.py like the scripts do
CHAR_DIR = os.path.join(ROOT, 'data', 'shakespeare_char')
SHARED_INPUT = os.path.join(ROOT, '..', 'shared', 'data', 'tinyshakespeare', 'input.txt')

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
    """data/shakespeare_char prepared from the canonical input.txt (copied from ../shared when it is missing)."""
    target = os.path.join(CHAR_DIR, 'input.txt')
    if not os.path.exists(target):
        if not os.path.exists(SHARED_INPUT):
            pytest.skip("no Tiny Shakespeare input.txt here and none in ../shared/data/tinyshakespeare")
        shutil.copy(SHARED_INPUT, target)
    run('data/shakespeare_char/prepare.py')
    return CHAR_DIR
