"""Models composed of layers under the exact names of the PyTorch module tree."""
