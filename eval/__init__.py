"""Evaluation: BSS Eval v4 (museval's numbers, faster) and MUSDB18-HQ runs."""
from .bsseval import bss_eval

__all__ = ["bss_eval"]
