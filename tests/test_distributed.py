"""A converted network under DistributedDataParallel: 2 processes, gloo on the
CPU, started by the test on a file rendezvous. Its gradients are the average of
what one process computes on each half of the batch, and the replicas stay equal."""
import copy
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from utils import converted_zoo

WORLD = 2
BATCH = 4  # 2 per process
STEPS = 3


def _setup():
    """The converted network, its batch and targets: the same in every process."""
    _, converted, x = converted_zoo(BATCH)
    return converted.train(), x, torch.tensor([1, 7, 3, 0])


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        model, x, target = _setup()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
        part = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        first_grads = None
        for _ in range(STEPS):
            opt.zero_grad()
            F.cross_entropy(ddp(x[part]), target[part]).backward()
            if first_grads is None:
                first_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            opt.step()
        torch.save({"grads": first_grads, "state": model.state_dict()},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD,
             join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    # The replicas hold the same parameters after every step.
    for k, v in ranks[0]["state"].items():
        if "running" not in k and "num_batches" not in k:  # BatchNorm buffers are per rank
            assert torch.equal(v, ranks[1]["state"][k]), k

    # First-step gradients: the mean of one process's gradients on each half.
    model, x, target = _setup()
    expected = None
    for r in range(WORLD):
        half = copy.deepcopy(model)
        part = slice(r * BATCH // WORLD, (r + 1) * BATCH // WORLD)
        F.cross_entropy(half(x[part]), target[part]).backward()
        grads = {n: p.grad / WORLD for n, p in half.named_parameters()}
        expected = grads if expected is None else {n: expected[n] + grads[n] for n in grads}
    assert expected.keys() == ranks[0]["grads"].keys()
    for n, g in expected.items():
        torch.testing.assert_close(ranks[0]["grads"][n], g, msg=n)
        torch.testing.assert_close(ranks[1]["grads"][n], g, msg=n)
