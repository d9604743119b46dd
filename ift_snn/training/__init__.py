"""Training: the dense SNN of the EXODUS paper's layer equations (network), losses and training loops
(train), truncated BPTT and local blocks (local), datasets (data: randman, digits, SHD; shd_like: an SHD-like
generator). Above the array APIs (ops), below the experiments and the CLI."""
