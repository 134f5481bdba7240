#!/usr/bin/env python3
"""Recovery time under `kiln up`: kill -9 of a worker -> first step completed after the resume,
against the cold start -> first step of the same run.

A checkpoint every step makes each completed step visible as a `checkpoint N committed` event.
The job is killed KILLS times (default 10), each time once the running generation has completed
20 steps; the script prints each recovery, the median, and the ratio to the cold start.

    cargo build --release --bins && scripts/bench/recovery.py [KILLS]
"""
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KILN = os.path.join(ROOT, "target", "release", "kiln")
KILLS = int(sys.argv[1]) if len(sys.argv) > 1 else 10

CONFIG = """
cluster "local" {
  provider = "local"
  node_pool "cpu" {
    count = 2
  }
}

job "recovery" {
  cluster = "local"
  model "mlp" {
    inputs  = 32
    hidden  = [64, 64]
    classes = 4
  }
  dataset "blobs" {
    source   = "synthetic:blobs"
    samples  = 8192
    features = 32
    classes  = 4
    seed     = 7
  }
  training {
    workers    = 2
    batch_size = 64
    epochs     = 200
    seed       = 42
    optimizer "adam" {
      learning_rate = 0.001
    }
  }
  checkpoint {
    every_steps = 1
    keep        = 2
  }
  restart {
    max_restarts = %d
    backoff      = "0s"
  }
}
""" % KILLS


def worker_pids(tag):
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"KILN_TEST_TAG={tag}".encode() in env and b"kiln-worker" in cmd and state != "Z":
            pids.append(int(entry))
    return pids


def main():
    with tempfile.TemporaryDirectory() as work:
        with open(os.path.join(work, "main.hcl"), "w") as f:
            f.write(CONFIG)
        tag = f"bench-recovery-{os.getpid()}"
        env = dict(os.environ, KILN_TEST_TAG=tag)
        start = time.monotonic()
        up = subprocess.Popen([KILN, "up", work], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=env)
        committed = re.compile(r"checkpoint (\d+) committed")
        cold = None
        generation_steps = 0
        killed_at = None
        recoveries = []
        for line in up.stderr:
            if os.environ.get("DEBUG") and "committed" not in line:
                print("  |", line.rstrip(), flush=True)
            if "started on" in line:
                generation_steps = 0
            if not committed.search(line):
                continue
            now = time.monotonic()
            generation_steps += 1
            if cold is None:
                cold = now - start
            if killed_at is not None and generation_steps == 1:
                recoveries.append(now - killed_at)
                print(f"recovery {len(recoveries)}: {recoveries[-1]:.3f} s", flush=True)
                killed_at = None
            if killed_at is None and generation_steps == 20:
                if len(recoveries) == KILLS:
                    up.send_signal(signal.SIGINT)
                    break
                victim = worker_pids(tag)[0]
                killed_at = time.monotonic()
                os.kill(victim, signal.SIGKILL)
        up.wait()
    median = statistics.median(recoveries)
    print(f"cold start -> first step: {cold:.3f} s")
    print(f"kill -9 -> first step after resume: median {median:.3f} s of {len(recoveries)} "
          f"(min {min(recoveries):.3f}, max {max(recoveries):.3f})")
    print(f"recovery / cold start: x{median / cold:.2f}")


if __name__ == "__main__":
    main()
