"""A data-parallel training step of a small optical-flow-like model built from gpuops ops, under torch DDP
(issue 18, item 2): depthwise convolution, involution, the FlowNet correlation and RAFT's on-the-fly lookup,
with plain torch layers between them.

    torchrun --nproc-per-node 2 -m benchmarks.data_parallel --device cuda     # NCCL, a GPU per process
    python -m benchmarks.data_parallel --spawn 2                             # gloo on the CPU, no torchrun

Each process takes an equal share of one global batch; DDP averages the gradients.  Every run first checks
them (float64, one step) against a single-process run on the whole batch, then times ``--steps`` float32
steps and prints the throughput (samples per second over all processes).

On the CPU under torchrun, a rank that ran gpuops' CPU ops on numba's TBB layer aborted at interpreter exit
("terminate called without an active exception", after its work was done) in 2 of 11 runs here, and in none
of 8 with ``NUMBA_THREADING_LAYER=omp`` or of 18 started by ``--spawn``; GPU runs never start that pool.
"""
import argparse
import os
import tempfile
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import gpuops.torch as gt

CHANNELS = 16


class TinyFlow(nn.Module):
    """Features of two frames (stem, depthwise 3×3, involution), their correlation cost volume and a RAFT lookup
    at coordinates displaced by a predicted flow, then a 1×1 head to a flow field."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, CHANNELS, 3, padding=1)
        self.depthwise = gt.Conv2dDepthwise(CHANNELS, 3, padding=1)
        self.involution = gt.Involution(CHANNELS, 3)
        self.flow0 = nn.Conv2d(CHANNELS, 2, 1)
        self.head = nn.Conv2d(25 + 2 * 9, 2, 1)

    def features(self, x):
        return self.involution(F.relu(self.depthwise(F.relu(self.stem(x)))))

    def forward(self, a, b):
        fa, fb = self.features(a), self.features(b)
        cost = gt.correlation(fa, fb, pad_size=2, kernel_size=1, max_displacement=2)
        n, _, h, w = fa.shape
        ys, xs = torch.meshgrid(torch.arange(h, dtype=fa.dtype, device=fa.device),
                                torch.arange(w, dtype=fa.dtype, device=fa.device), indexing="ij")
        coords = torch.stack([xs, ys])[None] + self.flow0(fa)
        lookup = gt.corr_lookup(fa, fb, coords, radius=1, num_levels=2)
        return self.head(torch.cat([cost, lookup], 1))


def batch(size, seed=0, dtype=torch.float64, device="cpu", hw=(16, 20)):
    g = torch.Generator().manual_seed(seed)
    a, b = (torch.randn(size, 3, *hw, generator=g, dtype=dtype) for _ in range(2))
    target = torch.randn(size, 2, *hw, generator=g, dtype=dtype)
    return a.to(device), b.to(device), target.to(device)


def model(dtype=torch.float64, device="cpu", seed=0):
    torch.manual_seed(seed)
    return TinyFlow().to(dtype=dtype, device=device)


def loss_of(net, a, b, target):
    return F.mse_loss(net(a, b), target)


def single_process_grads(global_batch):
    """The float64 gradients of one step on the whole batch in this process: what DDP must reproduce (eval
    mode: the involution's batch norm then normalises with its running statistics, the same in every share
    of the batch; in training mode each process would normalise its share with its own statistics)."""
    net = model().eval()
    loss_of(net, *batch(global_batch)).backward()
    return {n: p.grad for n, p in net.named_parameters()}


def _ddp(net, dev):
    return nn.parallel.DistributedDataParallel(net, device_ids=None if dev.index is None else [dev.index])


def worker(rank, world, global_batch, steps, device, results):
    """One DDP process: the float64 check step, then ``steps`` timed float32 steps; rank 0 writes ``results``."""
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        dev = torch.device(f"cuda:{rank % torch.cuda.device_count()}") if device == "cuda" else torch.device("cpu")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        share = global_batch // world
        a, b, target = (t[rank * share:(rank + 1) * share] for t in batch(global_batch, device=dev))
        net = _ddp(model(device=dev).eval(), dev)
        loss_of(net, a, b, target).backward()
        grads = {n.removeprefix("module."): p.grad.cpu() for n, p in net.named_parameters()}

        net = _ddp(model(torch.float32, dev), dev)
        optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
        a, b, target = (t[rank * share:(rank + 1) * share] for t in batch(global_batch, 1, torch.float32, dev))
        elapsed = 0.0
        for step in range(steps + 2):                  # two warm-up steps (compilation, allocator)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss_of(net, a, b, target).backward()
            optimizer.step()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if step >= 2:
                elapsed += time.perf_counter() - start
        if rank == 0 and results:
            torch.save(dict(grads=grads, samples_per_s=global_batch * steps / elapsed), results)
        dist.barrier()          # every rank leaves the group together (gloo aborted a rank that left early)
    finally:
        dist.destroy_process_group()


def _spawned(rank, world, global_batch, steps, device, results, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    worker(rank, world, global_batch, steps, device, results)


def run_spawned(world, global_batch, steps, device, results):
    """``world`` processes on this host (torch.multiprocessing, spawn) on a free port; rank 0's results land in
    ``results``."""
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_spawned, args=(world, global_batch, steps, device, results, port), nprocs=world, join=True)
    return torch.load(results)


def _max_rel(grads, want):
    return max(((grads[n] - want[n]).norm() / want[n].norm().clamp_min(1e-300)).item() for n in want)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=16, help="global batch (a multiple of the process count)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--spawn", type=int, default=0, help="processes to spawn here instead of torchrun's")
    args = parser.parse_args()
    results = os.path.join(tempfile.gettempdir(), f"gpuops_data_parallel_{os.environ.get('MASTER_PORT', os.getpid())}.pt")
    if args.spawn:
        world, out = args.spawn, run_spawned(args.spawn, args.batch, args.steps, args.device, results)
    else:
        world = int(os.environ["WORLD_SIZE"])
        worker(int(os.environ["RANK"]), world, args.batch, args.steps, args.device, results)
        if int(os.environ["RANK"]) != 0:
            return
        out = torch.load(results)
    error = _max_rel(out["grads"], single_process_grads(args.batch))
    print(f"{world} process(es), {args.device}: gradients vs one process, max relative difference {error:.1e}; "
          f"{out['samples_per_s']:.1f} samples/s (global batch {args.batch})")


if __name__ == "__main__":
    main()
