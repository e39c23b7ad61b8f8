"""Layers that own their weights and call the kernels; one file per demucs file."""
