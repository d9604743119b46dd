"""Page faults and time of the exodus PyTorch layer per forward + backward call (docs/benchmarks.md, "The slow
rounds' cause"): a layer that allocates nothing per call faults in no page after its first calls.

    python docs/scripts/layer_page_faults.py            # (16, 500, 4096), float32, 2 threads
"""

import time

import torch

from ift_snn.experiments.bench_peers import _ift_layer


def minor_faults() -> int:
    with open("/proc/self/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[7])


def main(B: int = 16, T: int = 500, N: int = 4096, calls: int = 6) -> None:
    torch.set_num_threads(2)
    layer = _ift_layer(torch, "exodus")
    x, g = 0.3 + 0.5 * torch.randn(B, T, N), torch.randn(B, T, N)
    for k in range(calls):
        xi = x.detach().requires_grad_(True)
        f0, t0 = minor_faults(), time.perf_counter()
        layer(xi).backward(g)
        dt, faults = time.perf_counter() - t0, minor_faults() - f0
        print(f"call {k + 1}: {1e3 * dt:7.1f} ms, {faults} minor page faults")
        del xi


if __name__ == "__main__":
    main()
