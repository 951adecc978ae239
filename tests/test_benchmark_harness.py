"""benchmarks/harness.py: the interleaved-round runner calls what it is given in
the documented order and counts, its statistics and ratios are those of the
samples it returns, and the verdict/header helpers format what the scripts'
tables and --check rely on. No timing is asserted: only bookkeeping."""

import gc
import os
import statistics
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks import harness  # noqa: E402


def test_interleaved_order_counts_and_hooks():
    log = []

    def step(name):
        def fn(i):
            log.append((name, i, gc.isenabled()))
            return f"{name}{i}"
        return fn

    seen, between = [], []
    t = harness.time_interleaved(
        {"a": step("a"), "b": step("b")}, rounds=3, per_round=2, warmup=1,
        after=lambda name, i, value, timed: seen.append((name, i, value, timed)),
        after_warmup=lambda: log.append("warm"),
        between_rounds=lambda r: between.append((r, len(log))))
    order = [x if x == "warm" else x[:2] for x in log]
    assert order == [("a", 0), ("b", 0), "warm",
                     ("a", 1), ("a", 2), ("b", 1), ("b", 2),   # round 0: a, b
                     ("b", 3), ("b", 4), ("a", 3), ("a", 4),   # round 1: b, a
                     ("a", 5), ("a", 6), ("b", 5), ("b", 6)]   # round 2: a, b
    # the collector is off inside timed rounds, on again afterwards
    assert all(not x[2] for x in log[3:]) and gc.isenabled()
    assert between == [(0, 7), (1, 11), (2, 15)]
    assert [s for s in seen if not s[3]] == [("a", 0, "a0", False), ("b", 0, "b0", False)]
    assert t.values == {"a": [f"a{i}" for i in range(1, 7)],
                        "b": [f"b{i}" for i in range(1, 7)]}
    assert t.names == ("a", "b") and t.timed_per_name == 6
    for n in t.names:
        assert len(t.seconds[n]) == 6 and len(t.round_means[n]) == 3
        assert t.round_means[n][1] == pytest.approx(statistics.fmean(t.seconds[n][2:4]))


def test_three_names_cycle_through_every_order():
    firsts = []
    harness.time_interleaved(
        {n: (lambda i, n=n: firsts.append(n)) for n in "xyz"}, rounds=6, pause_gc=False)
    rounds = [tuple(firsts[3 * r:3 * r + 3]) for r in range(6)]
    assert sorted(rounds) == sorted(harness.round_orders("xyz")) and len(set(rounds)) == 6


def test_statistics_and_ratios_are_those_of_the_samples():
    t = harness.Timing(("a", "b"), {"a": [1.0, 4.0, 2.0, 9.0], "b": [2.0, 2.0, 1.0, 3.0]},
                       {"a": [2.5, 5.5], "b": [2.0, 2.0]}, {"a": [], "b": []})
    assert t.ms("median") == {"a": 3000.0, "b": 2000.0}
    assert t.ms("mean") == {"a": 4000.0, "b": 2000.0}
    assert t.ms("min") == {"a": 1000.0, "b": 1000.0}
    assert t.ratio("a", "b") == 1.5 and t.ratio("a", "b", "mean") == 2.0
    assert t.round_ratios("a", "b") == [1.25, 2.75]
    assert t.call_ratios("a", "b") == [0.5, 2.0, 2.0, 3.0]
    assert t.rounded_ms("round_means") == {"a": [2500.0, 5500.0], "b": [2000.0, 2000.0]}
    assert t.quartiles_ms()["b"] == [1250.0, 2000.0, 2750.0]
    with pytest.raises(ValueError, match="statistic 'max'"):
        t.stat("a", "max")


def test_bad_round_settings_are_one_clear_error():
    with pytest.raises(ValueError, match="rounds 0"):
        harness.time_interleaved({"a": lambda i: None}, rounds=0)
    with pytest.raises(ValueError, match="nothing to time"):
        harness.time_interleaved({}, rounds=1)


def test_clocked_times_real_calls_and_restores():
    class Task:
        def score(self, x):
            return 2 * x

    task, record = Task(), []
    with harness.clocked(task, "score", record):
        assert task.score(3) == 6 and task.score(4) == 8
    assert len(record) == 2 and "score" not in vars(task) and task.score(5) == 10


def test_ratio_verdict_row_and_check_exit():
    r = harness.Ratio(1.0512, 1.05)
    assert not r.passed and r.record() == {"target": 1.05, "pass": False}
    assert r.row("median (`x`)") == "| median (`x`) | 1.051 | <= 1.05 (FAIL) |"
    ok = harness.Ratio(0.04, 0.05)
    assert ok.row("f", ".4f") == "| f | 0.0400 | <= 0.05 (PASS) |"
    assert harness.check_exit(True, [ok.passed, r.passed]) == 1
    assert harness.check_exit(False, [r.passed]) == 0
    assert harness.check_exit(True, [ok.passed]) == 0


def test_header_lines():
    m = {"cpu": "CPU X", "cpu_count": 2, "torch": "2.0", "python": "3.11"}
    line = harness.machine_line(m, 1, {"before": 0.5, "after": 1.25}, "cpu")
    assert line == ("CPU X, 2 CPUs (torch threads 1), 1-min load average 0.50 before / "
                    "1.25 after; device `cpu`; torch 2.0, Python 3.11")
    assert harness.machine_line(m, note="shared") == \
        "CPU X, 2 CPUs, shared; torch 2.0, Python 3.11"
    assert harness.header_lines("python b.py", "D", "M", "(kept)") == [
        "- Command: `python b.py` (kept)", "- Date: D", "- Machine: M"]
    assert harness.command_line(os.path.join(REPO, "benchmarks", "b.py"), ["--x", "a b"]) == \
        "python benchmarks/b.py --x 'a b'"
    assert harness.md_section("<!-- b -->", "<!-- e -->", "t", ["x"]) == \
        "<!-- b -->\n## t\n\nx\n<!-- e -->\n"
    assert harness.load_note({"before": 0.5, "after": 1.0}, 1) is None
    assert "3.00" in harness.load_note({"before": 0.5, "after": 3.0}, 1, 2)


def test_memory_helpers_count_storages_once():
    import torch

    w = torch.zeros(10, 4)  # 160 bytes
    assert harness.tensor_bytes([w, w[2:5], w.t(), None]) == 160  # views share w's storage
    assert harness.tensor_bytes([w, torch.zeros(3, dtype=torch.float64)]) == 160 + 24

    lin = torch.nn.Linear(4, 6)
    x = torch.randn(5, 4, requires_grad=True)
    with harness.saved_activations(lin) as rec:
        y = torch.relu(lin(x))  # saves x (80 bytes) for the matmul, y (120) for relu
    # the weight is saved too but is a parameter: not an activation
    assert rec["bytes"] == 80 + 120
    y.sum().backward()

    opt = torch.optim.Adam(lin.parameters())
    assert harness.optimizer_state_bytes(opt) == 0  # nothing trained yet
    opt.step()
    n = sum(p.numel() for p in lin.parameters())
    # exp_avg + exp_avg_sq per parameter, plus a scalar step each
    assert harness.optimizer_state_bytes(opt) >= 2 * 4 * n
    # the kernel updates the peak lazily: it can trail the current value by pages
    assert harness.peak_rss_bytes() > 0 and harness.current_rss_bytes() > 0
