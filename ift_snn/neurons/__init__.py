"""Definitions (SymPy only): neuron models and their constructors (models), closed-form kernels and their
recurrences (kernels), surrogate gradients (surrogates), the whitelist parser of user expressions
(expressions) and the one model grammar (spec). The bottom layer: it imports nothing above it."""
