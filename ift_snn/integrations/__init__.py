"""Integrations of ift_snn with deep-learning frameworks (PyTorch: :mod:`ift_snn.integrations.torch`)."""
