#!/usr/bin/env python3
"""Reference all-reduce timings with Open MPI, for comparison with `kiln bench allreduce`.

Run under mpirun, e.g. over TCP:

    mpirun --allow-run-as-root --oversubscribe -np 2 \
        --mca btl tcp,self --mca pml ob1 \
        python3 scripts/bench/mpi_allreduce.py --sizes 1MiB,16MiB,64MiB,256MiB

or over shared memory with `--mca btl vader,self`. Each size runs `--warmup` untimed
iterations, then `--iters` timed ones (each preceded by nothing: MPI_Allreduce itself
synchronises the ranks, and a barrier opens every size). Rank 0 prints one JSON line per
size plus a table; bandwidths follow NCCL's definitions (algbw = bytes / time,
busbw = algbw * 2(n-1)/n, GB = 1e9 bytes). Buffers are float32, op is MPI_SUM.
"""

import argparse
import json
import statistics
import time

import numpy as np
from mpi4py import MPI

UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def parse_size(text: str) -> int:
    text = text.strip()
    for suffix in ("KiB", "MiB", "GiB", "B"):
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * UNITS[suffix]
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1MiB,16MiB,64MiB,256MiB")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    rows = []
    for size in [parse_size(s) for s in args.sizes.split(",")]:
        n = size // 4
        send = np.full(n, rank + 1, dtype=np.float32)
        recv = np.empty(n, dtype=np.float32)
        comm.Barrier()
        for _ in range(args.warmup):
            comm.Allreduce(send, recv, op=MPI.SUM)
        times = []
        for _ in range(args.iters):
            start = time.perf_counter()
            comm.Allreduce(send, recv, op=MPI.SUM)
            times.append(time.perf_counter() - start)
        expected = world * (world + 1) / 2
        assert n == 0 or (recv[0] == expected and recv[-1] == expected)
        if rank == 0:
            median = statistics.median(times)
            algbw = size / median / 1e9
            row = {
                "size_bytes": size,
                "ranks": world,
                "iters": args.iters,
                "median_s": median,
                "min_s": min(times),
                "max_s": max(times),
                "algbw_gbps": algbw,
                "busbw_gbps": algbw * 2 * (world - 1) / world,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    if rank == 0:
        print(f"{'size':>10} {'median ms':>10} {'min ms':>9} {'max ms':>9} {'algbw GB/s':>11} {'busbw GB/s':>11}")
        for r in rows:
            print(
                f"{r['size_bytes'] >> 20:>7}MiB {r['median_s'] * 1e3:>10.2f} {r['min_s'] * 1e3:>9.2f}"
                f" {r['max_s'] * 1e3:>9.2f} {r['algbw_gbps']:>11.3f} {r['busbw_gbps']:>11.3f}"
            )


if __name__ == "__main__":
    main()
