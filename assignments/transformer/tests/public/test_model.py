"""Public tests: the language model (model.py)."""
import pytest
from gradescope_utils.autograder_utils.decorators import weight

from autograder.testing import assert_close, check_tensor
from block_helpers import check_state_dict_layout
from model_helpers import LM_LAYOUT, POSITIONAL, check_loaded_weights, describe, lm_pair, token_ids

pytestmark = pytest.mark.part("model")


@weight(1)
def test_state_dict_layout(student, reference):
    """state_dict keys and shapes match the reference's exactly, and lm_head is not tied to token_emb"""
    args, kwargs = (50, 32, 4, 2, 16), {"positional": "learned"}
    check_state_dict_layout(student.model.TransformerLM(*args, **kwargs),
                            reference.model.TransformerLM(*args, **kwargs), describe(args, kwargs), LM_LAYOUT)
    mine, ref, what = lm_pair(student, reference, *args, seed=1, **kwargs)
    check_loaded_weights(mine, ref, what)


@weight(1)
@pytest.mark.parametrize("positional", POSITIONAL)
def test_logits_match_reference(student, reference, assignment, positional):
    """with the reference's weights loaded (strict=True), the logits match"""
    mine, ref, what = lm_pair(student, reference, 40, 32, 4, 2, 16, seed=2, positional=positional)
    idx = token_ids(2, 11, 40, seed=3)
    assert_close(mine(idx), ref(idx), f"{what} logits for idx of shape (2, 11)", assignment.tolerance("float32"))


@weight(1)
def test_causal(student, reference, assignment):
    """always causal: changing later tokens never changes the logits at earlier positions"""
    mine, _, what = lm_pair(student, reference, 40, 32, 4, 2, 16, seed=4, positional="learned")
    idx = token_ids(2, 12, 40, seed=5)
    changed = idx.clone()
    changed[:, 7:] = (idx[:, 7:] + 1) % 40
    a = check_tensor(mine(idx), f"{what} logits", shape=(2, 12, 40))
    b = check_tensor(mine(changed), f"{what} logits", shape=(2, 12, 40))
    assert_close(b[:, :7], a[:, :7], f"{what}: logits at positions 0..6 after changing tokens 7..11",
                 assignment.tolerance("float32"))
