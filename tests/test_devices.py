"""
The GPU, Apple (MPS) and multi-node code paths, pinned down on a CPU: a checkpoint always loads to the CPU, random
state survives a trip through a device, training makes no float64 tensor (MPS has none), dtypes and MFU peaks follow
what the hardware answers (mocked here), and the guard's rollback is decided by rank 0 for every rank.
"""
import os
import random
import socket
import subprocess
import sys
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils._python_dispatch import TorchDispatchMode

import checkpoint
import device
from common import UserError
from conftest import ROOT, TINY
from model import GPT, GPTConfig, sample_next


def all_tensors(obj):
    return [x for x in tree_leaves(obj) if isinstance(x, torch.Tensor)]


def write_checkpoint(path, seed=0, written_on='cuda:0'):
    """
    A small train.py-style checkpoint (weights and AdamW moments) as a GPU run writes it: every storage in the
    file is tagged with the device it came from, here written_on, so that torch.load puts it back there by default.
    Returns the model whose weights it holds.
    """
    torch.manual_seed(seed)
    args = dict(n_layer=1, n_head=2, n_embd=16, block_size=8, bias=False, vocab_size=11, dropout=0.0)
    model = GPT(GPTConfig(**args))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(11, (2, 8))
    model(idx, idx)[1].backward()
    optimizer.step()
    ckpt = {'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'model_args': args, 'iter_num': 7,
            'best_val_loss': 2.5, 'config': {}}
    tag = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: written_on
    try:
        torch.save(ckpt, path)
    finally:
        torch.serialization.location_tag = tag
    return model


def spy_on_torch_load(monkeypatch):
    """torch.load, still loading, but recording the map_location of each call in the list it returns."""
    calls, real_load = [], torch.load
    def load(*args, **kwargs):
        calls.append(kwargs.get('map_location'))
        return real_load(*args, **kwargs)
    monkeypatch.setattr(torch, 'load', load)
    return calls


# -----------------------------------------------------------------------------
# checkpoints load to the CPU, whatever device wrote them or will run them

def test_a_checkpoint_written_on_a_gpu_loads_to_the_cpu(tmp_path, monkeypatch):
    """
    Every torch.load asks for the CPU: a checkpoint whose tensors were on cuda:0 loads on this machine without
    CUDA, and nothing of it lands on a GPU before load_state_dict copies it there.
    """
    path = tmp_path / 'ckpt.pt'
    model = write_checkpoint(path)
    if not torch.cuda.is_available(): # the file really asks for a GPU: without a map_location it cannot load here
        with pytest.raises(RuntimeError, match='CUDA'):
            torch.load(path, weights_only=True)
    calls = spy_on_torch_load(monkeypatch)
    ckpt = checkpoint.load_checkpoint(str(path))
    assert calls == ['cpu']
    loaded = all_tensors(ckpt)
    assert len(loaded) > 2 * len(model.state_dict()) # the weights and both AdamW moments of each
    assert {t.device.type for t in loaded} == {'cpu'}
    assert torch.equal(ckpt['model']['lm_head.weight'], model.state_dict()['lm_head.weight'])


def test_from_checkpoint_puts_the_model_on_its_device_and_leaves_the_checkpoint_on_the_cpu(tmp_path, monkeypatch):
    """
    GPT.from_checkpoint(path, device) moves only the model: the checkpoint it also returns (the optimizer's moments,
    twice the model's size) stays on the CPU. 'meta' stands in for a GPU here.
    """
    path = tmp_path / 'ckpt.pt'
    write_checkpoint(path)
    calls = spy_on_torch_load(monkeypatch)
    model, ckpt = GPT.from_checkpoint(str(path), device='meta')
    assert calls == ['cpu']
    assert {p.device.type for p in model.parameters()} == {'meta'}
    assert {t.device.type for t in all_tensors(ckpt['model'])} == {'cpu'}
    moments = all_tensors(ckpt['optimizer']['state'])
    assert moments and {t.device.type for t in moments} == {'cpu'}


# -----------------------------------------------------------------------------
# random state that went through a device comes back through the CPU

class OnGPU(torch.Tensor):
    """
    A stand-in for a tensor that a checkpoint put on cuda:0: its device says so, .numpy() refuses as a CUDA
    tensor's does, and no op runs on it except the copy back to the CPU (.cpu()), which gives a plain CPU tensor.
    """

    @staticmethod
    def __new__(cls, data):
        t = torch.Tensor._make_wrapper_subclass(cls, data.shape, dtype=data.dtype, device='cuda:0')
        t.data_on_host = data.clone()
        return t

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                        "to host memory first.")

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and kwargs.get('device') == torch.device('cpu'):
            return args[0].data_on_host.clone()
        raise RuntimeError(f"{func} needs a CPU tensor, and this one is on cuda:0")


def on_gpu(state):
    return tree_map(lambda x: OnGPU(x) if isinstance(x, torch.Tensor) else x, state)


def draws():
    """Numbers from each generator that a training step may use."""
    return (torch.rand(4).tolist(), np.random.rand(4).tolist(), np.random.standard_normal(3).tolist(),
            [random.random() for _ in range(4)], random.gauss(0.0, 1.0))


def test_rng_state_restores_every_generator_even_from_tensors_on_a_gpu():
    """
    set_rng_state takes each saved tensor through .cpu() first, so a state that a checkpoint loaded onto a GPU
    restores torch's, numpy's and Python's generators exactly as well as one that stayed on the CPU.
    """
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal(1) # numpy and Python now each hold a cached second normal sample: it is saved too
    random.gauss(0.0, 1.0)
    state = checkpoint.rng_state()
    assert state['numpy']['has_gauss'] == 1 and state['python']['gauss_next'] is not None
    expected = draws()
    gpu_state = on_gpu(state)
    assert {t.device.type for t in all_tensors(gpu_state)} == {'cuda'} and len(all_tensors(gpu_state)) == 2
    checkpoint.set_rng_state(gpu_state)
    assert draws() == expected
    checkpoint.set_rng_state(state) # and the plain CPU tensors of a state that never left the CPU
    assert draws() == expected


def test_device_generators_are_saved_and_restored_through_the_cpu(monkeypatch):
    """
    Where MPS (or CUDA) is in use, rng_state() saves its generator too, and set_rng_state hands it back as a plain
    CPU tensor, even when it was loaded onto a device. Both devices are faked: their answers are recorded.
    """
    mps_state, cuda_state = torch.arange(16, dtype=torch.uint8), torch.arange(8, dtype=torch.uint8)
    restored = {}
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: True)
    monkeypatch.setattr(torch.mps, 'get_rng_state', lambda *a, **k: mps_state.clone())
    monkeypatch.setattr(torch.mps, 'set_rng_state', lambda s, *a, **k: restored.__setitem__('mps', s))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_initialized', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setattr(torch.cuda, 'get_rng_state_all', lambda: [cuda_state.clone()])
    monkeypatch.setattr(torch.cuda, 'set_rng_state', lambda s, i=0: restored.__setitem__(('cuda', i), s))
    state = checkpoint.rng_state()
    assert torch.equal(state['mps'], mps_state) and torch.equal(state['cuda'][0], cuda_state)
    checkpoint.set_rng_state(on_gpu(state))
    assert set(restored) == {'mps', ('cuda', 0)}
    for got, want in ((restored['mps'], mps_state), (restored['cuda', 0], cuda_state)):
        assert type(got) is torch.Tensor and got.device.type == 'cpu' and torch.equal(got, want)


# -----------------------------------------------------------------------------
# no float64 on the training device: MPS has none

FLOAT64_PROBE = """
import os, runpy, sys
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

class Float64Outputs(TorchDispatchMode):
    '''Runs every op as usual, and remembers those that give a float64 tensor.'''
    def __init__(self):
        super().__init__()
        self.ops, self.seen = set(), 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.seen += 1
        if any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in tree_leaves(out)):
            self.ops.add(str(func))
        return out

sys.argv, sys.path[0] = ['train.py', *sys.argv[1:]], os.getcwd() # as python train.py would have them
mode = Float64Outputs()
with mode:
    runpy.run_path('train.py', run_name='__main__')
print(f'ops seen: {mode.seen}')
print(f'float64 ops: {sorted(mode.ops)}')
"""


def test_training_and_its_evaluations_make_no_float64_tensor(char_data, tmp_path):
    """
    train.py on the CPU, watched op by op: training steps, evals at steps 0, 2 and 4, the checkpoint saves and the
    full val loss produce no float64 tensor, since MPS cannot hold one (the eval sums used to be float64).
    """
    args = ['--dataset=shakespeare_char', f'--out_dir={tmp_path}', *TINY, '--batch_size=64', '--block_size=64',
            '--max_iters=4', '--eval_interval=2', '--eval_iters=2', '--log_interval=1', '--full_eval=True']
    p = subprocess.run([sys.executable, '-c', FLOAT64_PROBE, *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONUNBUFFERED='1'))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    for line in ('step 0:', 'step 2:', 'step 4:', 'full val loss', 'saving checkpoint'):
        assert line in p.stdout, p.stdout
    assert int(p.stdout.split('ops seen: ')[1].split()[0]) > 1000 # the mode really watched the run
    assert 'float64 ops: []' in p.stdout, p.stdout[-1000:]


# -----------------------------------------------------------------------------
# the dtype follows what the hardware answers

class ScalerSpy:
    """Records how device.grad_scaler builds its GradScaler (a real CUDA one turns itself off without CUDA)."""
    made = []

    def __init__(self, device='cuda', enabled=True, **kwargs):
        ScalerSpy.made.append((device, enabled))


def fake_gpu(monkeypatch, native_bf16):
    """
    torch.cuda.is_bf16_supported as a GPU answers it: an A100 (native_bf16) says True either way; a T4 or V100
    says True only when emulation counts. GradScaler is spied on.
    """
    answer = lambda including_emulation=True: native_bf16 or including_emulation
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', answer)
    ScalerSpy.made = []
    monkeypatch.setattr(torch.amp, 'GradScaler', ScalerSpy)


def test_a_gpu_with_emulated_bf16_trains_in_fp16_with_a_grad_scaler(monkeypatch):
    """A T4 or V100: 'auto' is fp16 with an active GradScaler, and asking for bf16 (slow, emulated) is an error."""
    fake_gpu(monkeypatch, native_bf16=False)
    assert device.resolve_dtype('auto', 'cuda') == 'float16'
    assert device.resolve_dtype('auto', 'cuda:1') == 'float16'
    assert device.native_bf16('cuda') is False
    with pytest.raises(UserError, match='no native bf16'):
        device.resolve_dtype('bfloat16', 'cuda')
    assert device.resolve_dtype('float16', 'cuda') == 'float16'
    device.grad_scaler('cuda', 'float16')
    device.grad_scaler('cuda', 'float32') # bench.py's fp32 baseline
    assert ScalerSpy.made == [('cuda', True), ('cuda', False)]


def test_a_gpu_with_native_bf16_trains_in_bf16_without_a_grad_scaler(monkeypatch):
    """An A100 or later: 'auto' is bf16, and its GradScaler is off (bf16 has fp32's range)."""
    fake_gpu(monkeypatch, native_bf16=True)
    assert device.resolve_dtype('auto', 'cuda') == 'bfloat16'
    assert device.resolve_dtype('bfloat16', 'cuda') == 'bfloat16'
    assert device.native_bf16('cuda') is True
    device.grad_scaler('cuda', 'bfloat16')
    device.grad_scaler('cuda', 'float32')
    assert ScalerSpy.made == [('cuda', False), ('cuda', False)]


@pytest.mark.parametrize('macos', [(13, 5), (14, 0)])
def test_mps_trains_in_fp32_by_default_and_in_bf16_only_from_macos_14(monkeypatch, macos):
    """An Apple GPU: 'auto' stays fp32 on any macOS; an explicit bf16 needs macOS 14, and is an error before."""
    monkeypatch.setattr(torch.backends.mps, 'is_macos_or_newer', lambda major, minor: macos >= (major, minor))
    assert device.resolve_dtype('auto', 'mps') == 'float32'
    assert device.native_bf16('mps') is (macos >= (14, 0))
    if macos >= (14, 0):
        assert device.resolve_dtype('bfloat16', 'mps') == 'bfloat16'
    else:
        with pytest.raises(UserError, match='macOS 14'):
            device.resolve_dtype('bfloat16', 'mps')


# -----------------------------------------------------------------------------
# MFU's denominator: each GPU by its own name

@pytest.mark.parametrize('name, dtype, peak', [
    ('NVIDIA H100 80GB HBM3', 'bfloat16', 989e12), # SXM
    ('NVIDIA H100 PCIe', 'bfloat16', 756e12),
    ('NVIDIA H100 NVL', 'bfloat16', 835e12),
    ('NVIDIA H100 80GB HBM3', 'float32', 495e12), # TF32
    ('NVIDIA H100 PCIe', 'float32', 378e12),
    ('NVIDIA H200', 'bfloat16', 989e12),
    ('NVIDIA L40S', 'bfloat16', 362e12),
    ('NVIDIA L40', 'bfloat16', 181e12),
    ('NVIDIA L4', 'bfloat16', 121e12),
    ('NVIDIA A10', 'bfloat16', 125e12),
    ('NVIDIA A100-SXM4-80GB', 'bfloat16', 312e12),
    ('NVIDIA A100-SXM4-80GB', 'float16', 312e12),
    ('NVIDIA A100-SXM4-80GB', 'float32', 156e12), # TF32
    ('NVIDIA A10', 'float32', 62.5e12), # TF32
    ('Tesla T4', 'float16', 65e12),
    ('Tesla T4', 'float32', 8.1e12), # no TF32: plain fp32
    ('Tesla V100-SXM2-16GB', 'float32', 15.7e12), # no TF32: plain fp32
    ('NVIDIA GeForce RTX 4090', 'bfloat16', 165e12),
    ('NVIDIA GeForce GTX 1080 Ti', 'float32', None), # not in the table: measured instead
    ('NVIDIA RTX A1000 6GB Laptop GPU', 'bfloat16', None), # a name that merely contains A100 is not one
])
def test_gpu_peak_flops_tells_similar_names_apart(name, dtype, peak):
    assert device.gpu_peak_flops(name, dtype) == peak


def test_synchronize_waits_for_the_device_it_is_given(monkeypatch):
    """Timing on an Apple GPU waits for its queue (torch.mps.synchronize); on the CPU there is nothing to wait for."""
    calls = []
    monkeypatch.setattr(torch.mps, 'synchronize', lambda: calls.append('mps'))
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda *a: calls.append('cuda'))
    device.synchronize('mps')
    assert calls == ['mps']
    device.synchronize('cpu')
    assert calls == ['mps']


# -----------------------------------------------------------------------------
# the guard's rollback: rank 0 decides, every rank follows

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def rollback_rank(rank, root, port):
    """One of 2 gloo ranks: each has its own out_dir (as on nodes that share no disk) and asks for a rollback."""
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.distributed.init_process_group('gloo', rank=rank, world_size=2, timeout=timedelta(seconds=60))
    try:
        results = {}
        for case, allowed in (('rank0_has_one', True), ('rank1_has_one', True), ('rank0_not_allowed', rank != 0),
                              ('rank1_has_a_broken_one', True)):
            path = os.path.join(root, case, f'rank{rank}', 'ckpt.pt')
            got = checkpoint.rollback_checkpoint(path, allowed, distributed=True)
            results[case] = None if got is None else (got['iter_num'], got['model']['lm_head.weight'])
        torch.save(results, os.path.join(root, f'results{rank}.pt'))
    finally:
        torch.distributed.destroy_process_group()


def test_rollback_is_decided_and_read_by_rank_0_for_every_rank(tmp_path):
    """
    checkpoint.rollback_checkpoint under 2 gloo ranks that see different files: when rank 0 has this run's
    checkpoint, both ranks get its weights, although rank 1 has no file; when rank 0 has none, or may not use
    its file (an earlier run's), both get None, although rank 1 has a checkpoint. Rank 1 never opens its own
    file: a broken one there changes nothing.
    """
    weights = {}
    for case, holder in (('rank0_has_one', 0), ('rank1_has_one', 1), ('rank0_not_allowed', 0),
                         ('rank0_not_allowed', 1), ('rank1_has_a_broken_one', 0)):
        (tmp_path / case / f'rank{holder}').mkdir(parents=True)
        model = write_checkpoint(tmp_path / case / f'rank{holder}' / 'ckpt.pt', seed=holder, written_on='cpu')
        weights[case, holder] = model.state_dict()['lm_head.weight']
    (tmp_path / 'rank1_has_a_broken_one' / 'rank1').mkdir()
    (tmp_path / 'rank1_has_a_broken_one' / 'rank1' / 'ckpt.pt').write_bytes(b'half a checkpoint')
    torch.multiprocessing.spawn(rollback_rank, args=(str(tmp_path), free_port()), nprocs=2)
    results = [torch.load(tmp_path / f'results{rank}.pt', weights_only=True) for rank in (0, 1)]
    for got in results:
        iter_num, weight = got['rank0_has_one']
        assert iter_num == 7 and torch.equal(weight, weights['rank0_has_one', 0])
        assert got['rank1_has_one'] is None
        assert got['rank0_not_allowed'] is None
        iter_num, weight = got['rank1_has_a_broken_one']
        assert iter_num == 7 and torch.equal(weight, weights['rank1_has_a_broken_one', 0])


# -----------------------------------------------------------------------------
# smaller fixes

def test_torchrun_refuses_one_named_gpu_for_every_rank():
    with pytest.raises(UserError) as e:
        device.torchrun_device('cuda:0', 1)
    assert 'cuda:LOCAL_RANK' in str(e.value) and '\n' not in str(e.value)


def test_resume_command_relaunches_as_the_run_was_launched():
    """nproc_per_node is the processes of one node, not the world size; several nodes each get their own node rank."""
    argv = ['train.py', '--x=1', '--init_from=scratch']
    nodes = checkpoint.resume_command(argv, world_size=16, local_world_size=8,
                                      env={'MASTER_ADDR': '10.0.0.1', 'MASTER_PORT': '29500'})
    assert nodes.startswith('torchrun --nnodes=2 --nproc_per_node=8 --node_rank=NODE_RANK '
                            '--master_addr=10.0.0.1 --master_port=29500 train.py --x=1 --init_from=resume')
    assert '--nproc_per_node=16' not in nodes and 'scratch' not in nodes and 'NODE_RANK 0..1' in nodes
    one_node = checkpoint.resume_command(argv, world_size=4, local_world_size=4)
    assert one_node == 'torchrun --standalone --nproc_per_node=4 train.py --x=1 --init_from=resume'
    assert checkpoint.resume_command(argv) == 'python train.py --x=1 --init_from=resume'


def test_use_device_makes_a_named_gpu_current_and_leaves_the_cpu_alone(monkeypatch):
    made_current = []
    monkeypatch.setattr(torch.cuda, 'set_device', made_current.append)
    device.use_device('cpu')
    assert made_current == []
    device.use_device('cuda:1')
    assert made_current == [torch.device('cuda:1')]


class BackendSpy:
    """A stand-in for torch.backends.cuda.matmul or cudnn.conv that records which switches are set."""

    def __init__(self):
        object.__setattr__(self, 'set', {})

    fp32_precision = 'none'

    def __setattr__(self, name, value):
        self.set[name] = value


def test_enable_tf32_uses_torchs_fp32_precision_switch(monkeypatch):
    """
    Only the fp32_precision switches: torch raises when code reads the legacy allow_tf32 flags after a mix of
    the two ways of setting them.
    """
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    old = matmul.fp32_precision, conv.fp32_precision
    try:
        device.enable_tf32()
        assert matmul.fp32_precision == 'tf32' and conv.fp32_precision == 'tf32'
    finally:
        matmul.fp32_precision, conv.fp32_precision = old
    spies = BackendSpy(), BackendSpy()
    monkeypatch.setattr(torch.backends.cuda, 'matmul', spies[0])
    monkeypatch.setattr(torch.backends.cudnn, 'conv', spies[1])
    device.enable_tf32()
    assert [s.set for s in spies] == [{'fp32_precision': 'tf32'}] * 2 # and no allow_tf32


class OpNames(TorchDispatchMode):
    """The names of the ops that run while it is on."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


# ops that would make sampling wait for the device: a value read back to the host (.item()), a result whose size
# depends on the data; and multinomial itself, which inductor cannot compile (it calls back into eager code)
SYNCING_OPS = ('aten._local_scalar_dense', 'aten.nonzero', 'aten.multinomial')


@pytest.mark.parametrize('seed', [0, 1, 2, 3, 4])
def test_sample_next_draws_multinomials_token_without_a_host_sync(seed):
    """
    sample_next draws as torch.multinomial draws one sample, so the same generator state gives the same token
    (temperature and top_k applied first), without multinomial and without waiting for the device.
    """
    logits = torch.randn(3, 5, 50, generator=torch.Generator().manual_seed(100 + seed)) * 3
    for temperature, top_k in ((1.0, None), (0.7, 10)):
        scaled = logits[:, -1, :] / temperature
        if top_k is not None:
            kth = torch.topk(scaled, top_k).values[:, -1:]
            scaled = scaled.masked_fill(scaled < kth, -float('inf'))
        torch.manual_seed(seed)
        expected = torch.multinomial(F.softmax(scaled, dim=-1), num_samples=1)
        torch.manual_seed(seed)
        with OpNames() as ops:
            token = sample_next(logits, temperature, top_k)
        assert token.shape == (3, 1) and torch.equal(token, expected)
        assert not [name for name in ops.names if name.startswith(SYNCING_OPS)], ops.names


def test_the_gpu_smoke_check_says_skip_and_succeeds_where_no_gpu_is_visible():
    """tests/gpu_smoke.sh is for CUDA machines: with no GPU visible it checks nothing and says so in one line."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', PYTHON=sys.executable)
    p = subprocess.run(['bash', os.path.join(ROOT, 'tests', 'gpu_smoke.sh')], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip().splitlines() == ["SKIP: no CUDA GPU is present (torch.cuda.is_available() is False); "
                                             "nothing was checked"]
