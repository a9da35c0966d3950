"""Helpers shared by the model tests (importable by Bazel's test targets: tests/*/__init__.py)."""

import numpy as np


def hf_logits(model, ids, mask):
    """A transformers causal LM's fp32 logits [B, T, V] as numpy, with alignax's positions for
    the mask (so left padding counts positions from each row's first real token)."""
    import jax.numpy as jnp
    import torch

    from alignax.models.transformer import positions_from_mask

    pos = np.asarray(positions_from_mask(jnp.asarray(mask)))
    with torch.no_grad():
        out = model(torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)),
                    position_ids=torch.tensor(pos, dtype=torch.long)).logits
    return out.float().numpy()
