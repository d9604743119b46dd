"""Experiments and benchmarks: the paper's tables (paper), `ift-snn bench` (bench, bench_peers: the peers in
their default configuration), the neuron zoo (zoo), float32 errors against the oracle (precision) and a
derivation checked against the oracle (verify: what `derive` prints). Above training and integrations."""
