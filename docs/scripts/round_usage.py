"""What a slow round of the exodus PyTorch layer spends: its wall time beside the process's own CPU time (user and
system, all threads), minor page faults and context switches (getrusage), and the CPU time the rest of the machine
used meanwhile (/proc/stat, less this process) (docs/benchmarks.md, "What is left of the slow rounds").

    python docs/scripts/round_usage.py                  # (16, 500, 4096), float32, 2 threads, 40 rounds
    python docs/scripts/round_usage.py --background     # with a process that fills and frees 1 GB every second

A slow round that took more CPU time of this process for the same work, with no page faults and nothing else
busy, ran on cores that were slower for that while (the host's load, which a virtual machine does not see as steal).
"""

import argparse
import resource
import statistics
import subprocess
import sys
import time

import torch

from ift_snn.experiments.bench_peers import _ift_layer


def _machine_busy() -> int:
    """Clock ticks every CPU spent busy (not idle, not waiting on I/O) since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]


def _own_ticks() -> int:
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, clock ticks


def main(B: int = 16, T: int = 500, N: int = 4096, rounds: int = 40, background: bool = False,
         pause: float = 0.2) -> None:
    torch.set_num_threads(2)
    x, g = 0.3 + 0.5 * torch.randn(B, T, N), torch.randn(B, T, N)
    layer = _ift_layer(torch, "exodus")

    def run() -> None:
        xi = x.detach().requires_grad_(True)
        layer(xi).backward(g)

    allocator = None
    if background:
        allocator = subprocess.Popen([sys.executable, "-c", (
            "import time, numpy as np\n"
            "while True:\n    a = np.ones(int(1e9) // 8); del a; time.sleep(1.0)\n")])
    try:
        for _ in range(3):
            run()
        rows = []
        for _ in range(rounds):
            r0, m0, o0 = resource.getrusage(resource.RUSAGE_SELF), _machine_busy(), _own_ticks()
            t0 = time.perf_counter()
            run()
            wall = 1e3 * (time.perf_counter() - t0)
            r1, m1, o1 = resource.getrusage(resource.RUSAGE_SELF), _machine_busy(), _own_ticks()
            rows.append((wall, 1e3 * (r1.ru_utime - r0.ru_utime), 1e3 * (r1.ru_stime - r0.ru_stime),
                         r1.ru_minflt - r0.ru_minflt, r1.ru_nvcsw - r0.ru_nvcsw, r1.ru_nivcsw - r0.ru_nivcsw,
                         (m1 - m0) - (o1 - o0)))
            time.sleep(pause)
    finally:
        if allocator is not None:
            allocator.kill()
    median = statistics.median(r[0] for r in rows)
    print(f"({B}, {T}, {N}) float32, 2 threads{', background allocator' if background else ''}: median "
          f"{median:.1f} ms, slowest / median {max(r[0] for r in rows) / median:.2f}")
    print("        wall ms  user ms  sys ms  minflt  vol.cs  invol.cs  others' ticks")
    for label, chosen in (("slowest", sorted(rows, reverse=True)[:5]), ("fastest", sorted(rows)[:5])):
        for r in chosen:
            print(f"{label:8s}{r[0]:7.0f}  {r[1]:7.0f}  {r[2]:6.0f}  {r[3]:6d}  {r[4]:6d}  {r[5]:8d}  {r[6]:13d}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--background", action="store_true")
    args = parser.parse_args()
    main(rounds=args.rounds, background=args.background)
