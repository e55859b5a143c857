"""Routines the harness runs inside the worker, next to student objects (e.g. training loops).

They run in the untrusted process, so what they return is information, not evidence: a suite
that grades learning evaluates the trained model itself (its own loss on its own data).
"""
from __future__ import annotations

from typing import Any, Callable

import torch


def train_lm(model: Any, inputs: torch.Tensor, targets: torch.Tensor, *, steps: int, lr: float = 3e-3,
             batch_size: int = 32, seed: int = 0, weight_decay: float = 0.0) -> list[float]:
    """Train ``model`` (idx (B, L) -> logits (B, L, V)) with AdamW on cross-entropy; returns losses.

    ``targets`` uses -100 for positions that do not count. Deterministic for a given seed.
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    for _ in range(steps):
        batch = torch.randint(0, inputs.shape[0], (batch_size,), generator=g)
        logits = model(inputs[batch])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets[batch].reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    model.eval()
    return losses


REGISTRY: dict[str, Callable[..., Any]] = {"train_lm": train_lm}
