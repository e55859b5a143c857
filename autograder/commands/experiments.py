"""The lecture's experiments, run on an implementation (a student's or the reference) as PNGs.

1. ``attention_heads.png``: attention weights of every head for one short sentence, from the
   implementation's MultiHeadAttention with seeded weights (toy embeddings: each word a fixed
   random vector plus sinusoidal positions).
2. ``sinusoidal.png``: the sinusoidal encoding table as an image, and the dot product
   ``PE[p] . PE[p + k]`` against the distance ``k``.
3. ``attention_scaling.png``: time and peak memory against sequence length for naive attention,
   ``scaled_dot_product_attention`` and the implementation's Triton kernel (interpreter sizes on
   a CPU, real sizes on a GPU).

The implementation's code runs in a worker process; only its outputs come back here.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from autograder.sandbox.client import WorkerClient
from autograder.authoring.config import Assignment

SENTENCE = "the cat sat on the mat because it was warm".split()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def attention_heads(student, out: Path, d_model: int = 32, num_heads: int = 4, seed: int = 0) -> Path:
    """Heatmap of each head's attention weights over SENTENCE (causal)."""
    g = torch.Generator().manual_seed(seed)
    vocab = {w: i for i, w in enumerate(dict.fromkeys(SENTENCE))}
    table = torch.randn(len(vocab), d_model, generator=g)
    x = table[torch.tensor([vocab[w] for w in SENTENCE])]
    x = x + student.posenc.sinusoidal_encoding(len(SENTENCE), d_model)
    torch.manual_seed(seed)
    mha = student.mha.MultiHeadAttention(d_model, num_heads)
    mha.eval()
    sd = mha.state_dict()
    L, h, dh = len(SENTENCE), num_heads, d_model // num_heads
    q = (x @ sd["q_proj.weight"].T + sd["q_proj.bias"]).view(L, h, dh).transpose(0, 1)
    k = (x @ sd["k_proj.weight"].T + sd["k_proj.bias"]).view(L, h, dh).transpose(0, 1)
    weights = student.attention.attention_weights(q, k, is_causal=True)
    plt = _plt()
    fig, axes = plt.subplots(1, num_heads, figsize=(3.2 * num_heads, 3.4))
    for i, ax in enumerate(axes):
        ax.imshow(weights[i].detach().numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"head {i}")
        ax.set_xticks(range(L), SENTENCE, rotation=90, fontsize=7)
        ax.set_yticks(range(L), SENTENCE, fontsize=7)
    fig.suptitle("Attention weights per head (causal, random weights)")
    fig.tight_layout()
    path = out / "attention_heads.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def sinusoidal(student, out: Path, max_len: int = 128, d_model: int = 64) -> Path:
    """The sinusoidal table and the dot product of two encodings against their distance."""
    pe = student.posenc.sinusoidal_encoding(max_len, d_model).double()
    base = max_len // 4
    dist = torch.arange(-base, max_len - base)
    dots = pe[base + dist] @ pe[base]
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    im = a.imshow(pe.T.numpy(), aspect="auto", cmap="RdBu", vmin=-1, vmax=1)
    a.set_xlabel("position")
    a.set_ylabel("dimension")
    a.set_title("Sinusoidal encoding")
    fig.colorbar(im, ax=a)
    b.plot(dist.numpy(), dots.numpy())
    b.set_xlabel(f"distance k from position {base}")
    b.set_ylabel("PE[p] . PE[p + k]")
    b.set_title("Dot product depends on distance")
    fig.tight_layout()
    path = out / "sinusoidal.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def attention_scaling(cfg: Assignment, root: Path, out: Path, sizes: list[int] | None = None) -> Path:
    """Time and peak memory vs N for naive attention, SDPA and the implementation's kernel."""
    from autograder.commands.bench_flash import run
    from autograder.sandbox.errors import StudentFacingError

    sizes = sizes or ([512, 1024, 2048, 4096, 8192] if torch.cuda.is_available() else [16, 32, 64])
    same = Path(root).resolve() == cfg.reference_root.resolve()
    rows, failures = run(cfg, None if same else Path(root), sizes, backward=False, repeats=2)
    if failures:  # the plot needs every implementation's figures
        raise StudentFacingError("; ".join(failures))
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for impl in dict.fromkeys(r.impl for r in rows):
        mine = [r for r in rows if r.impl == impl]
        a.plot([r.n for r in mine], [r.fwd_ms for r in mine], marker="o", label=impl)
    a.set_xscale("log", base=2)
    a.set_yscale("log")
    a.set_xlabel("sequence length N")
    a.set_ylabel("forward time (ms)")
    a.legend()
    a.set_title("Time")
    # Memory that must exist at the peak: naive holds the (B, H, N, N) scores; tiled kernels O(N).
    b_, h, d = 1, 2, 32
    ns = [r.n for r in rows if r.impl == "naive"]
    b.plot(ns, [4 * b_ * h * n * n / 2**20 for n in ns], marker="o", label="naive: N x N scores")
    b.plot(ns, [4 * b_ * h * n * (d + 1) / 2**20 for n in ns], marker="o", label="flash: O and lse")
    b.set_xscale("log", base=2)
    b.set_yscale("log")
    b.set_xlabel("sequence length N")
    b.set_ylabel("MiB (float32)")
    b.legend()
    b.set_title("Extra memory per call")
    fig.tight_layout()
    path = out / "attention_scaling.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_all(cfg: Assignment, root: Path, out: Path, *, scaling: bool = True,
            progress: Callable[[str], None] | None = None) -> list[Path]:
    """Every experiment on the implementation at ``root``; returns the PNGs written."""
    out.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    client = WorkerClient(Path(root), cfg.package, label="the implementation")
    paths = []
    try:
        student = client.root_ref()
        for name, fn in (("attention heads", lambda: attention_heads(student, out)),
                         ("sinusoidal encoding", lambda: sinusoidal(student, out))):
            if progress:
                progress(name)
            paths.append(fn())
    finally:
        client.close()
    if scaling:
        if progress:
            progress("attention scaling")
        paths.append(attention_scaling(cfg, Path(root), out))
    return paths
