"""The PyTorch DDP baseline of scripts/bench/ddp.sh and scripts/gpu-check: the same
architecture, batch and optimizer as the kiln job, on the CPU (gloo, one thread per process)
or on the GPU (nccl, every rank on cuda:0). Prints the global samples/s of the timed steps
(after a warm-up) as one number on stdout.

    python3 torch_ddp.py --model mlp|cnn --workers N --steps S --batch-size B [--device cuda]
"""
import argparse
import os
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F


def model(kind):
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
        )
    # kiln's `model "cnn" { input_shape = [1, 28, 28], channels = [16, 32], hidden = [64] }`
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def rank_main(rank, args, port, out):
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    cuda = args.device == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=args.workers)
    device = torch.device("cuda:0" if cuda else "cpu")
    net = nn.parallel.DistributedDataParallel(model(args.model).to(device))
    # Burn's Adam defaults: betas (0.9, 0.999), epsilon 1e-5.
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-5)
    samples = args.batch_size * 50
    x = torch.randn(samples, 784, device=device)
    y = torch.randint(0, 10, (samples,), device=device)

    def step(i):
        idx = torch.randint(0, samples, (args.batch_size,), device=device)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        loss.backward()
        opt.step()

    for i in range(args.warmup):
        step(i)
    if cuda:
        torch.cuda.synchronize()
    dist.barrier()
    start = time.perf_counter()
    for i in range(args.steps):
        step(i)
    if cuda:
        torch.cuda.synchronize()
    dist.barrier()
    elapsed = time.perf_counter() - start
    if rank == 0:
        out.put(args.steps * args.batch_size * args.workers / elapsed)
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--port", type=int, default=29533)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = p.parse_args()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=rank_main, args=(r, args, args.port, out)) for r in range(args.workers)]
    for proc in procs:
        proc.start()
    rate = out.get()
    for proc in procs:
        proc.join()
    print(f"{rate:.1f}")


if __name__ == "__main__":
    main()
