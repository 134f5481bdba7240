#!/usr/bin/env python3
"""Leader failover: kill -9 of the leading coordinator -> first step completed by the job's next
generation under the new leader, against the same job's recovery from a kill -9 of a lone
coordinator on the embedded state that is restarted at once (a supervisor's best case).

Two coordinators share an etcd (started here, on loopback) with an election lease of TTL
seconds (default 3); two workers know both. A checkpoint every step makes each completed step
visible as `checkpoint_step` in `kiln status --json`, polled every 20 ms. The leader is killed
KILLS times (default 10), each time after the running generation has completed 20 steps; the
killed coordinator is started again as a standby. Prints each failover, the median, the min and
max, and the same for the embedded baseline.

    cargo build --release --bins && scripts/bench/failover.py [KILLS] [TTL]
"""
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KILN = os.path.join(ROOT, "target", "release", "kiln")
WORKER = os.path.join(ROOT, "target", "release", "kiln-worker")
KILLS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
TTL = sys.argv[2] if len(sys.argv) > 2 else "3"

JOB = """
job "failover" {
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
    epochs     = 400
    seed       = 42
    optimizer "adam" {
      learning_rate = 0.001
    }
  }
  checkpoint {
    every_steps = 1
    keep        = 2
  }
}
"""

CLUSTER = """
cluster "local" {
  provider = "local"
  node_pool "cpu" {
    count = 2
  }
}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value is not None:
            return value
        time.sleep(0.02)
    sys.exit(f"timed out waiting for {what}")


class Bench:
    def __init__(self, work):
        self.work = work
        os.makedirs(work, exist_ok=True)
        self.procs = []
        with open(os.path.join(work, "cluster.hcl"), "w") as f:
            f.write(CLUSTER)
        with open(os.path.join(work, "job.hcl"), "w") as f:
            f.write(JOB)
        for name in ("token", "client-token"):
            with open(os.path.join(work, name), "w") as f:
                f.write(name + "-bench\n")
        self.env = dict(os.environ, KILN_TOKEN="client-token-bench")

    def spawn(self, args, log):
        proc = subprocess.Popen(args, cwd=self.work, env=self.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(self.work, log), "a"))
        self.procs.append(proc)
        return proc

    def coordinator(self, name, state_args):
        ready = os.path.join(self.work, name + ".ready")
        if os.path.exists(ready):
            os.remove(ready)
        port = getattr(self, "port_" + name, None) or free_port()
        setattr(self, "port_" + name, port)
        proc = self.spawn([KILN, "coordinator", "--listen", f"127.0.0.1:{port}",
                           "--join-token-file", "token", "--client-token-file", "client-token",
                           "--ready-file", ready] + state_args, name + ".log")
        wait_for("the coordinator to listen", lambda: os.path.exists(ready) or None)
        return proc, f"http://127.0.0.1:{port}"

    def status(self, urls):
        out = subprocess.run([KILN, "status", "failover-1", "--json", "--coordinator", urls],
                             cwd=self.work, env=self.env, capture_output=True, text=True)
        if out.returncode != 0:
            return None
        return json.loads(out.stdout)

    def run(self, name, start, kill_and_recover):
        """Starts coordinators with `start`, two workers and the job; KILLS times, waits for 20
        steps of the generation, then `kill_and_recover` and times the first new step."""
        urls = start()
        for i in range(2):
            self.spawn([WORKER, "--coordinator", urls, "--join-token-file", "token",
                        "--node-name", f"w{i}"], f"w{i}.log")
        subprocess.run([KILN, "submit", "job.hcl", "--coordinator", urls], cwd=self.work,
                       env=self.env, check=True, capture_output=True)
        times = []
        step = 0
        for _ in range(KILLS):
            since = step
            seen = wait_for("20 steps", lambda: (lambda s: s if s and s["state"] == "running"
                                                 and s.get("checkpoint_step", 0) >= since + 20
                                                 else None)(self.status(urls)), 180)
            generation, step = seen["generation"], seen.get("checkpoint_step", 0)
            killed = time.monotonic()
            kill_and_recover()
            wait_for("the first step of the next generation", lambda: (
                lambda s: True if s and s["generation"] > generation
                and s.get("checkpoint_step", 0) > step else None)(self.status(urls)), 120)
            times.append(time.monotonic() - killed)
            print(f"{name}: kill -9 -> first step of the next generation {times[-1]:.3f} s",
                  flush=True)
        return times

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.procs = []


def etcd_start(work):
    client, peer = free_port(), free_port()
    etcd = os.environ.get("KILN_ETCD") or shutil.which("etcd")
    if not etcd:
        sys.exit("no etcd binary (Debian: apt-get install etcd-server, or set KILN_ETCD)")
    proc = subprocess.Popen([etcd, "--name", "b0", "--data-dir", os.path.join(work, "etcd"),
                             "--listen-client-urls", f"http://127.0.0.1:{client}",
                             "--advertise-client-urls", f"http://127.0.0.1:{client}",
                             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-cluster", f"b0=http://127.0.0.1:{peer}",
                             "--logger=zap", "--log-level=error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{client}"

    def healthy():
        try:
            with socket.create_connection(("127.0.0.1", client), timeout=1) as s:
                s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
                return True if b'"health":"true"' in s.recv(4096) else None
        except OSError:
            return None

    wait_for("etcd", healthy)
    return proc, endpoint


def summary(name, times):
    print(f"{name}: median {statistics.median(times):.3f} s of {len(times)} "
          f"(min {min(times):.3f}, max {max(times):.3f})")


def main():
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as work:
        etcd, endpoint = etcd_start(work)
        bench = Bench(os.path.join(work, "etcd-run"))
        etcd_args = ["--etcd", endpoint, "--election-ttl", f"{TTL}s"]
        replicas = {}

        def start_pair():
            replicas["a"], url_a = bench.coordinator("a", etcd_args)
            time.sleep(0.5)  # a leads first
            replicas["b"], url_b = bench.coordinator("b", etcd_args)
            replicas["urls"] = {"a": url_a, "b": url_b}
            return f"{url_a},{url_b}"

        def leads(name):
            # The log of the running process says it was elected after it last started.
            with open(os.path.join(bench.work, name + ".log")) as f:
                log = f.read()
            return "elected leader" in log[log.rfind("coordinator listening"):]

        def kill_leader():
            for name in ("a", "b"):
                if leads(name):
                    replicas[name].send_signal(signal.SIGKILL)
                    replicas[name].wait()
                    replicas[name], _ = bench.coordinator(name, etcd_args)
                    return
            sys.exit("no coordinator leads")

        etcd_times = bench.run(f"etcd, TTL {TTL} s", start_pair, kill_leader)
        bench.stop()

        embedded = Bench(os.path.join(work, "embedded-run"))
        lone = {}

        def start_lone():
            lone["c"], url = embedded.coordinator("c", ["--state", ".kiln/state"])
            return url

        def restart_lone():
            lone["c"].send_signal(signal.SIGKILL)
            lone["c"].wait()
            lone["c"], _ = embedded.coordinator("c", ["--state", ".kiln/state"])

        embedded_times = embedded.run("embedded, restarted at once", start_lone, restart_lone)
        embedded.stop()
        etcd.kill()
        summary(f"failover on etcd (TTL {TTL} s)", etcd_times)
        summary("embedded coordinator restarted at once", embedded_times)


if __name__ == "__main__":
    main()
