"""Evaluation: BSS Eval v4 and MUSDB18-HQ runs."""
