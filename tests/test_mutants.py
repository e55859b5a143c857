"""Small bugs planted in the reference, one at a time: each must lose points in the public suite of its
part (so selfcheck's prediction sees it), as well as in the whole grading.

The fixture submissions are realistic buggy solutions written out in full; these mutants are one-line
slips of the kind a student makes once the structure is right (a mask combined by OR, the wrong LayerNorm,
an off-by-one at the cache's capacity, positions ignored). A new public test earns its place by catching one of them.
"""
from __future__ import annotations

import shutil

import pytest

from conftest import FAST_LIMITS, make_export

pytestmark = pytest.mark.slow

# name -> (part, file in the package, text of the reference, what replaces it)
MUTANTS = {
    "mask_or_causal": ("attention", "attention.py",
                       "allowed = causal if allowed is None else allowed & causal",
                       "allowed = causal if allowed is None else allowed | causal"),
    "mask_dropped_when_causal": ("attention", "attention.py",
                                 "allowed = causal if allowed is None else allowed & causal", "allowed = causal"),
    "scale_by_length": ("attention", "attention.py", "/ math.sqrt(q.shape[-1])", "/ math.sqrt(k.shape[-2])"),
    "softmax_over_queries": ("attention", "attention.py", "return softmax(scores, dim=-1)",
                             "return softmax(scores, dim=-2)"),
    "keys_from_q_proj": ("mha", "mha.py", "k = self.k_proj(x).view(b, lq, h, d).transpose(1, 2)",
                         "k = self.q_proj(x).view(b, lq, h, d).transpose(1, 2)"),
    "scale_by_d_model": ("mha", "mha.py", "scores = q @ k.transpose(-2, -1) / math.sqrt(d)",
                         "scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_model)"),
    "update_returns_new_only": ("kv_cache", "kv_cache.py",
                                "return self.k[layer, :, :, :end], self.v[layer, :, :, :end]", "return k_new, v_new"),
    "reset_forgets_nothing": ("kv_cache", "kv_cache.py", "self._lengths = [0] * len(self._lengths)", "pass"),
    "capacity_off_by_one": ("kv_cache", "kv_cache.py", "if end > self.max_seq_len:", "if end >= self.max_seq_len:"),
    "ffn_after_norm1": ("block", "block.py", "return x + self.dropout(self.ffn(self.norm2(x)))",
                        "return x + self.dropout(self.ffn(self.norm1(x)))"),
    "no_attention_residual": ("block", "block.py", "x = x + attend(self.norm1(x))", "x = attend(self.norm1(x))"),
    "explicit_positions_ignored": ("posenc", "posenc.py", "    return positions.to(x.device)",
                                   "    return torch.arange(x.shape[-2], device=x.device)"),
    "learned_ignores_positions": ("posenc", "posenc.py", "return x + self.weight[positions].to(x.dtype)",
                                  "return x + self.weight[: x.shape[-2]].to(x.dtype)"),
}


@pytest.fixture(scope="module")
def mutants_graded(cfg, tmp_path_factory):
    from autograder.commands.batch import grade_export

    work = tmp_path_factory.mktemp("mutants")
    roots = {}
    for name, (_, file, old, new) in MUTANTS.items():
        root = work / "roots" / name
        shutil.copytree(cfg.reference_root / cfg.package, root / cfg.package, ignore=shutil.ignore_patterns("__pycache__"))
        path = root / cfg.package / file
        source = path.read_text()
        assert source.count(old) == 1, f"mutant {name}: {old!r} is not once in the reference's {file}"
        path.write_text(source.replace(old, new))
        roots[name] = root
    parts = sorted({part for part, *_ in MUTANTS.values()})
    results = grade_export(cfg, make_export(work, roots), work / "out", workers=2, parts=parts,
                           time_limits=FAST_LIMITS)
    return {name: results[f"submission_{name}"] for name in roots}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_public_and_hidden_suites_see_the_mutant(mutants_graded, name):
    part = MUTANTS[name][0]
    lost = {"public": 0.0, "hidden": 0.0}
    for t in mutants_graded[name].tests:
        if t.extra_data["part"] == part and t.max_score:
            lost[t.extra_data["suite"]] += t.max_score - (t.score or 0)
    assert lost["public"] > 0, f"{name}: no public {part} test fails, so selfcheck predicts full marks ({lost})"
    assert lost["hidden"] > 0, f"{name}: no hidden {part} test fails ({lost})"
    others = {p: v for p, v in mutants_graded[name].extra_data["parts"].items()
              if p != part and v["tests"] and v["score"] < v["max_score"]}
    # a slip in one part may only cost points in parts that build on it (block uses mha uses attention)
    assert set(others) <= {"attention": {"mha", "block", "model", "kv_cache"}, "mha": {"block", "model", "kv_cache"},
                           "block": {"model", "kv_cache"}, "kv_cache": set(),
                           "posenc": {"mha", "block", "model", "kv_cache"}}[part], others
