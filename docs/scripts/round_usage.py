"""What a slow round of the exodus PyTorch layer spends: its wall time beside the process's own CPU time (all
threads), minor page faults and involuntary context switches, and the CPU time the rest of the machine used
meanwhile: what ``bench --peers`` records of every timed call (bench_peers._usage_since; docs/benchmarks.md).

    python docs/scripts/round_usage.py                  # (16, 500, 4096), float32, 2 threads, 40 rounds
    python docs/scripts/round_usage.py --background     # with a process that fills and frees 1 GB every second

A slow round that took more CPU time of this process for the same work, with no page faults and nothing else
busy, ran on cores that were slower for that while (the host's load, which a virtual machine does not see as steal).
"""

import argparse
import statistics
import subprocess
import sys
import time

import torch

from ift_snn.experiments.bench_peers import _ift_layer, _usage, _usage_since


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
            before = _usage()  # the same record bench --peers keeps of every timed call
            t0 = time.perf_counter()
            run()
            rows.append((1e3 * (time.perf_counter() - t0), _usage_since(before)))
            time.sleep(pause)
    finally:
        if allocator is not None:
            allocator.kill()
    median = statistics.median(ms for ms, _ in rows)
    print(f"({B}, {T}, {N}) float32, 2 threads{', background allocator' if background else ''}: median "
          f"{median:.1f} ms, slowest / median {max(ms for ms, _ in rows) / median:.2f}")
    print("        wall ms   CPU ms  page faults  invol. switches  others' CPU ms")
    rows.sort(key=lambda r: r[0])
    for label, chosen in (("slowest", rows[::-1][:5]), ("fastest", rows[:5])):
        for ms, u in chosen:
            others = "?" if u["others_ms"] is None else f"{u['others_ms']:.0f}"
            print(f"{label:8s}{ms:7.0f}  {u['cpu_ms']:7.0f}  {u['faults']:11d}  {u['preempted']:15d}  {others:>13s}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--background", action="store_true")
    args = parser.parse_args()
    main(rounds=args.rounds, background=args.background)
