"""The exodus PyTorch layer timed right after 1.5 GB were freed elsewhere in the process, 3 s after that (when
the kernel has reported the freed memory to the host), and plain (docs/benchmarks.md, "The slow rounds' cause").

    python docs/scripts/after_free.py                   # (16, 2000, 1024), float32, 2 threads, 8 rounds
"""

import statistics
import time

import torch

from ift_snn.experiments.bench_peers import _ift_layer


def main(B: int = 16, T: int = 2000, N: int = 1024, rounds: int = 8, pause: float = 3.0) -> None:
    torch.set_num_threads(2)
    layer = _ift_layer(torch, "exodus")
    x, g = 0.3 + 0.5 * torch.randn(B, T, N), torch.randn(B, T, N)

    def run() -> float:
        xi = x.detach().requires_grad_(True)
        t0 = time.perf_counter()
        layer(xi).backward(g)
        return 1e3 * (time.perf_counter() - t0)

    def free_big() -> None:
        big = torch.empty(int(1.5e9) // 4)
        big.fill_(1.0)
        del big

    for _ in range(3):
        run()
    times = {"plain": [], "right after 1.5 GB freed": [], f"{pause:g} s after 1.5 GB freed": [],
             f"after {pause:g} s idle": []}
    for _ in range(rounds):
        times["plain"].append(run())
        free_big()
        times["right after 1.5 GB freed"].append(run())
        free_big()
        time.sleep(pause)
        times[f"{pause:g} s after 1.5 GB freed"].append(run())
        time.sleep(pause)
        times[f"after {pause:g} s idle"].append(run())
    for k, v in times.items():
        print(f"{k:26s} median {statistics.median(v):6.1f} ms, rounds {', '.join(f'{t:.0f}' for t in v)}")


if __name__ == "__main__":
    main()
