"""Multi-head attention (self and cross) as blocked GEMMs.

Scores are formed for one block of queries at a time, so the largest temporary is
``(block, keys)`` per head instead of ``(heads, queries, keys)``: for the official
model's frequency branch (2688 tokens) that is 2.7 MB instead of 231 MB.
"""
from __future__ import annotations

import math

import numpy as np

from .._threads import share
from .activations import exp_rows

QUERY_BLOCK = 256


def scaled_dot_product_attention(q, k, v, block=QUERY_BLOCK):
    """softmax(q kᵀ / sqrt(d)) v for ``q (heads, Tq, d)``, ``k, v (heads, Tk, d)``."""
    heads, queries, dim = q.shape
    out = np.empty_like(q)
    # q * scale once for all blocks: the same products as scaling each block's slice.
    q = q * q.dtype.type(1.0 / math.sqrt(dim))

    def head(h):
        # heads are independent: a spare core may take some (share), with the same calls
        scores = np.empty((min(block, queries), k.shape[1]), dtype=q.dtype)
        kt = k[h].T
        for start in range(0, queries, block):
            stop = min(start + block, queries)
            rows = scores[:stop - start]
            np.matmul(q[h, start:stop], kt, out=rows)
            inv_sums = exp_rows(rows)
            block_out = out[h, start:stop]
            np.matmul(rows, v[h], out=block_out)
            block_out *= inv_sums[:, None]

    share(head, heads)
    return out


def split_heads(x, heads):
    """``(T, C)`` -> ``(heads, T, C // heads)``, contiguous."""
    tokens, channels = x.shape
    return np.ascontiguousarray(x.reshape(tokens, heads, channels // heads).transpose(1, 0, 2))


def multi_head_attention(query, key, in_proj_weight, in_proj_bias, out_proj_weight,
                         out_proj_bias, heads, block=QUERY_BLOCK):
    """torch.nn.MultiheadAttention(batch_first=True) without masks, for one item.

    ``query (Tq, C)``, ``key (Tk, C)`` (also used as value, as demucs calls it);
    the packed ``in_proj_weight (3C, C)`` holds the q, k, v projections in that order.
    """
    channels = query.shape[1]
    wq, wk, wv = (in_proj_weight[i * channels:(i + 1) * channels] for i in range(3))
    bq, bk, bv = (in_proj_bias[i * channels:(i + 1) * channels] for i in range(3))
    q = query @ wq.T + bq
    k = key @ wk.T + bk
    v = key @ wv.T + bv
    attended = scaled_dot_product_attention(
        split_heads(q, heads), split_heads(k, heads), split_heads(v, heads), block)
    merged = attended.transpose(1, 0, 2).reshape(query.shape[0], channels)
    return merged @ out_proj_weight.T + out_proj_bias
