"""Integrations of ift_snn with deep-learning frameworks (PyTorch: :mod:`ift_snn.integrations.torch`; layers
converted from sinabs: :mod:`ift_snn.integrations.convert`)."""
