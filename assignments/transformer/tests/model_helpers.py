"""Grader-side helpers for the model suites: reference/student TransformerLM pairs and a copy task."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from autograder.testing import check_tensor
from block_helpers import load_reference, perturb_norms, state_dict_of

POSITIONAL = ("sinusoidal", "learned", "rope", "alibi")
LM_LAYOUT = ("token_emb (nn.Embedding), pos (LearnedPositionalEmbedding for 'learned', no parameters otherwise), "
             "blocks (nn.ModuleList of TransformerBlock), norm_f (nn.LayerNorm), lm_head (Linear without bias, "
             "not tied to token_emb)")


def describe(args: tuple, kwargs: dict) -> str:
    return "TransformerLM(" + ", ".join([str(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]) + ")"


def lm_pair(student, reference, *args, seed: int, perturb: bool = False, **kwargs):
    """The reference TransformerLM(*args, **kwargs) with seeded weights (eval mode) and the student's
    holding the same weights; perturb=True (hidden suites only) gives the LayerNorms random weights."""
    torch.manual_seed(seed)
    ref = reference.model.TransformerLM(*args, **kwargs)
    if perturb:
        perturb_norms(ref, seed)
    ref.eval()
    what = describe(args, kwargs)
    mine = load_reference(student.model.TransformerLM(*args, **kwargs), ref, what, LM_LAYOUT)
    return mine, ref, what


def check_loaded_weights(mine, ref, what: str) -> None:
    """After loading the reference's weights, reading them back gives the same values (no tying)."""
    sd = state_dict_of(mine, what)
    ref_sd = ref.state_dict()
    for name, want in ref_sd.items():
        got = sd.get(name)
        if got is None or not torch.equal(got, want):
            shared = [o for o, v in ref_sd.items() if o != name and got is not None and torch.equal(got, v)]
            raise AssertionError(
                f"{what}: after load_state_dict(reference weights, strict=True), your state_dict()[{name!r}] "
                "does not hold the values loaded into it"
                + (f": it holds those loaded into {shared[0]!r}, so the two share one tensor. The contract "
                   "says no weight tying: lm_head must have its own weight." if shared else ".")
            )


def token_ids(b: int, n: int, vocab: int, seed: int) -> torch.Tensor:
    return torch.randint(0, vocab, (b, n), generator=torch.Generator().manual_seed(seed))


def copy_task(n: int, k: int, symbols: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences [BOS, a1..ak, SEP, a1..ak] as (inputs, next-token targets); only the copy counts (-100 elsewhere).

    Tokens 0..symbols-1 are content, BOS = symbols, SEP = symbols + 1.
    """
    a = token_ids(n, k, symbols, seed)
    seq = torch.cat([torch.full((n, 1), symbols), a, torch.full((n, 1), symbols + 1), a], dim=1)
    inputs, targets = seq[:, :-1].clone(), seq[:, 1:].clone()
    targets[:, :k + 1] = -100
    return inputs, targets


def prefix_loss(mine, inputs: torch.Tensor, targets: torch.Tensor, vocab: int, what: str) -> float:
    """Mean cross-entropy (computed here) of the predictions at the positions with a target, each made
    from the prefix that ends there: nothing after the predicted position is ever fed to the model."""
    b, n = inputs.shape
    total, count = 0.0, 0
    for p in range(n):
        keep = targets[:, p] != -100
        if not keep.any():
            continue
        logits = check_tensor(mine(inputs[:, :p + 1]), f"{what} logits for a batch of shape {(b, p + 1)}",
                              shape=(b, p + 1, vocab), dtype=torch.float32)
        total += float(F.cross_entropy(logits[:, p][keep].double(), targets[keep, p], reduction="sum"))
        count += int(keep.sum())
    return total / count
