"""Recording the reference's answers and replaying them without the reference's code."""
from __future__ import annotations

import sys

import pytest
import torch

from autograder.grading.golden import GoldenMismatch, Recorder, Replayer


@pytest.fixture
def toy_package(tmp_path, monkeypatch):
    pkg = tmp_path / "toypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "ops.py").write_text(
        "import torch\nSCALE = 3\n\ndef double(x):\n    return 2 * x\n\n"
        "class Lin(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.fc = torch.nn.Linear(2, 2)\n    def forward(self, x):\n        return self.fc(x)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import toypkg

    yield toypkg
    for name in [m for m in sys.modules if m.startswith("toypkg")]:
        del sys.modules[name]


def use(ref):
    """What a public test might do with the reference."""
    x = torch.arange(4.0).reshape(2, 2)
    a = ref.ops.double(x)
    torch.manual_seed(0)
    m = ref.ops.Lin().eval()
    sd = m.state_dict()
    return a, ref.ops.SCALE, sd, m(x), [n for n, _ in m.named_parameters()]


def test_record_then_replay_gives_the_same_values(toy_package, tmp_path):
    rec = Recorder()
    live = use(rec.proxy(toy_package, "t::a"))
    rec.save(tmp_path / "g.agf")
    del sys.modules["toypkg.ops"]  # the replay must not need the code
    replayed = use(Replayer(tmp_path / "g.agf").proxy("t::a", "toypkg"))
    assert torch.equal(live[0], replayed[0]) and live[1] == replayed[1] == 3
    assert all(torch.equal(live[2][k], replayed[2][k]) for k in live[2])
    assert torch.equal(live[3], replayed[3]) and replayed[4] == ["fc.weight", "fc.bias"]


def test_replay_detects_a_changed_test(toy_package, tmp_path):
    rec = Recorder()
    use(rec.proxy(toy_package, "t::a"))
    rec.save(tmp_path / "g.agf")
    rep = Replayer(tmp_path / "g.agf")
    with pytest.raises(GoldenMismatch, match="asked the reference for call"):
        rep.proxy("t::a", "toypkg").ops.Lin()
    with pytest.raises(GoldenMismatch, match="no recorded reference values"):
        rep.proxy("t::other", "toypkg")


def test_corrupt_recording_is_a_clear_error(tmp_path):
    (tmp_path / "g.agf").write_bytes(b"garbage")
    with pytest.raises(GoldenMismatch, match="cannot read"):
        Replayer(tmp_path / "g.agf")


def test_measurements_around_reference_code_replay(toy_package, tmp_path):
    from autograder.grading.golden import measured

    def count(ref):
        return int(ref.ops.double(torch.ones(3)).sum())

    rec = Recorder()
    assert measured(rec.proxy(toy_package, "t::m"), "count", count) == 6
    rec.save(tmp_path / "g.agf")
    assert measured(Replayer(tmp_path / "g.agf").proxy("t::m", "toypkg"), "count", count) == 6
    assert measured(toy_package, "count", count) == 6  # live: just runs


def test_oracle_values_replay_without_the_oracle_module(toy_package, tmp_path, monkeypatch):
    """Grader-side oracles are named by string, imported only when computed: the kit replays their values."""
    from autograder.grading.golden import oracle

    (tmp_path / "toy_oracles.py").write_text("import torch\n\ndef table(n, scale=1.0):\n"
                                             "    return torch.arange(n, dtype=torch.float64) * scale\n")
    rec = Recorder()
    live = oracle(rec.proxy(toy_package, "t::o"), "toy_oracles.table", 4, scale=0.5)
    assert torch.equal(live, torch.tensor([0.0, 0.5, 1.0, 1.5], dtype=torch.float64))
    assert torch.equal(oracle(toy_package, "toy_oracles.table", 4, scale=0.5), live)  # grading: just computes
    rec.save(tmp_path / "g.agf")
    (tmp_path / "toy_oracles.py").unlink()
    monkeypatch.delitem(sys.modules, "toy_oracles")
    assert torch.equal(oracle(Replayer(tmp_path / "g.agf").proxy("t::o", "toypkg"), "toy_oracles.table", 4), live)
    with pytest.raises(ValueError, match="module.function"):
        oracle(toy_package, "table", 4)
