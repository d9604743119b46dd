"""DistributedDataParallel over the PyTorch layers: two CPU processes (gloo), each with half of the batch, give
the gradients of one process on the whole batch (every weight, the recurrent layer's V, the trainable alphas)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

B = 8


def _net():
    from ift_snn.integrations.torch import LIF
    from ift_snn.integrations.torch_recurrent import RLIF

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 10), LIF(0.9, train_alpha=True),
                               RLIF(0.85, 8, in_features=10, recurrent_gain=2.0, train_alpha=True),
                               torch.nn.Linear(8, 3), LIF(0.85)).double()  # alpha too: compared at 1e-12


def _data():
    gen = torch.Generator().manual_seed(1)
    x = 2.0 * (torch.rand(B, 25, 6, generator=gen, dtype=torch.float64) < 0.4).double()
    return x, torch.randint(0, 3, (B,), generator=gen)


def _loss(net, x, y):
    return torch.nn.functional.cross_entropy(net(x).sum(1), y)  # the mean over the samples given


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        net = torch.nn.parallel.DistributedDataParallel(_net())
        x, y = _data()
        part = slice(rank * B // world, (rank + 1) * B // world)
        _loss(net, x[part], y[part]).backward()  # DDP averages the gradients over the processes
        if rank == 0:
            torch.save({k: p.grad for k, p in net.module.named_parameters()}, out)
        # both ranks leave together: a rank that tears gloo down while the other still talks to it can make the
        # other abort ("terminate called without an active exception", SIGABRT; seen once in a fresh-clone run)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_over_two_processes_gives_the_gradients_of_one(tmp_path):
    out = tmp_path / "grads.pt"
    mp.spawn(_worker, args=(2, str(tmp_path / "rendezvous"), str(out)), nprocs=2, join=True)
    got = torch.load(out)
    net = _net()
    x, y = _data()
    _loss(net, x, y).backward()
    names = [k for k, _ in net.named_parameters()]
    assert "1.alpha" in names and "2.V" in names and "2.alpha" in names and set(got) == set(names)
    for k, p in net.named_parameters():
        assert p.grad.abs().sum() > 0, f"{k}: no gradient, the test would not compare anything"
        torch.testing.assert_close(got[k], p.grad, rtol=1e-12, atol=1e-14, msg=f"dL/d{k}")
