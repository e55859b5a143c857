"""Hidden tests: the language model (model.py)."""
import pytest
from gradescope_utils.autograder_utils.decorators import weight

from autograder.testing import routine
from autograder.testing import assert_close, check_tensor
from block_helpers import check_state_dict_layout
from model_helpers import (LM_LAYOUT, POSITIONAL, check_loaded_weights, copy_task, describe, lm_pair, prefix_loss,
                           token_ids)

pytestmark = pytest.mark.part("model")


@weight(1)
def test_state_dict_layout_all_options(student, reference):
    """for every positional option, state_dict keys and shapes match exactly and no weights are tied"""
    for positional in POSITIONAL:
        args, kwargs = (30, 24, 3, 2, 10), {"positional": positional, "d_ff": 40}
        check_state_dict_layout(student.model.TransformerLM(*args, **kwargs),
                                reference.model.TransformerLM(*args, **kwargs), describe(args, kwargs), LM_LAYOUT)
        mine, ref, what = lm_pair(student, reference, *args, seed=6, perturb=True, **kwargs)
        check_loaded_weights(mine, ref, what)


@weight(0.5)
@pytest.mark.parametrize("positional", POSITIONAL)
def test_logits_match_across_configs(student, reference, assignment, positional):
    """logits match over sizes, post-LN, explicit d_ff, a single token and full-length sequences"""
    configs = [((37, 40, 5, 3, 12), {"d_ff": 24, "norm_first": False}, (3, 12)),
               ((29, 16, 2, 1, 20), {}, (1, 1)),
               ((29, 16, 2, 1, 20), {}, (4, 20))]
    for i, (args, kwargs, shape) in enumerate(configs):
        mine, ref, what = lm_pair(student, reference, *args, seed=7 + i, perturb=True, positional=positional,
                                  **kwargs)
        idx = token_ids(*shape, args[0], seed=10 + i)
        assert_close(mine(idx), ref(idx), f"{what} logits for idx of shape {shape}", assignment.tolerance("float32"))


@weight(0.5)
@pytest.mark.parametrize("positional", POSITIONAL)
def test_causal(student, reference, assignment, positional):
    """always causal: changing later tokens never changes the logits at earlier positions"""
    mine, _, what = lm_pair(student, reference, 40, 32, 4, 2, 16, seed=13, perturb=True, positional=positional)
    idx = token_ids(3, 16, 40, seed=14)
    a = check_tensor(mine(idx), f"{what} logits", shape=(3, 16, 40))
    for t in (1, 8, 15):
        changed = idx.clone()
        changed[:, t:] = (idx[:, t:] + 1 + t) % 40
        b = check_tensor(mine(changed), f"{what} logits", shape=(3, 16, 40))
        assert_close(b[:, :t], a[:, :t], f"{what}: logits at positions 0..{t - 1} after changing tokens {t}..15",
                     assignment.tolerance("float32"))


# Calibrated on one CPU thread (autograder.sandbox.routines.train_lm from the reference's initial weights, the held-out
# loss below). Sinusoidal: the reference's loss is 0.002-0.015 over 22 seeds (0.003 with the test's seed 0),
# a model without positional information stays at 1.6-2.0 (chance: ln 16 = 2.77); about 3 s of training.
# This schedule stays as it was: the shorter ones tried (lr 3e-3 to 2e-2, 150 to 250 steps) pass the
# reference as well but change fixture outcomes either way (bug_weight_tying learns late, after 160-250 steps
# at lr 1e-2 depending on the seed; bug_post_ln_swapped is at 0.010 after 260 steps here but in a loss spike,
# 0.64, at step 300, and it loses these points today). RoPE learns much faster, so it gets a shorter, hotter
# schedule: the reference reaches 0.0011-0.0021 over seeds 0-19 after 100 steps at lr 1e-2 (0.0013 with seed
# 0), as do alt_correct and alt_sdpa (seeds 0-5) and, at seed 0, every fixture that passed before (0.004 at
# most), while the model without positional information stays at 2.08-2.19 (seeds 0-9); about 1 s.
COPY = {"k": 12, "symbols": 16, "batch_size": 32, "threshold": 0.1,
        "schedule": {"sinusoidal": {"steps": 300, "lr": 3e-3}, "rope": {"steps": 100, "lr": 1e-2}},
        "reference_loss": {"sinusoidal": 0.003, "rope": 0.0013}}


@weight(2)
@pytest.mark.parametrize("positional", ["sinusoidal", "rope"])
def test_learns_copy_task(student, student_client, reference, positional):
    """it learns: trained in the worker on a copy task, its held-out loss (computed by the grader) is low"""
    k, symbols = COPY["k"], COPY["symbols"]
    vocab = symbols + 2
    mine, _, what = lm_pair(student, reference, vocab, 32, 4, 2, 2 * k + 2, seed=0, positional=positional)
    inputs, targets = copy_task(4096, k, symbols, seed=101)
    steps, lr = COPY["schedule"][positional]["steps"], COPY["schedule"][positional]["lr"]
    routine(student_client, "train_lm", mine, inputs, targets, steps=steps, lr=lr,
            batch_size=COPY["batch_size"], seed=0, timeout=60)  # its returned losses are not evidence
    mine.eval()
    held_out = copy_task(256, k, symbols, seed=999)
    loss = prefix_loss(mine, *held_out, vocab, what)
    if not loss < COPY["threshold"]:  # also catches NaN
        raise AssertionError(
            f"{what} did not learn to copy: after {steps} AdamW steps (lr {lr:g}, batch "
            f"{COPY['batch_size']}, starting from the reference's initial weights) on sequences "
            f"[BOS, a1..a{k}, SEP, a1..a{k}] of {symbols} symbols, its cross-entropy on held-out sequences, "
            f"predicting each copied token from its prefix, is {loss:.3g} nats; it must be below "
            f"{COPY['threshold']:g} (chance is 2.77, the reference reaches about "
            f"{COPY['reference_loss'][positional]:g}). Check that positions reach the attention, every block is "
            "causal and gradients reach every parameter."
        )
