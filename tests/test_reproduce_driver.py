"""benchmarks/reproduce/: the committed child list is the one the driver draws,
the super-net units differ only where the study says they do, and the report
computes Table 1's numbers from the result files (checked here against scipy
on synthetic results, so a wrong join of scores to children, a wrong sign or a
half-finished ground-truth seed cannot slip through)."""

import json
import os
import random
import sys

import numpy as np
import pytest
from scipy.stats import kendalltau

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(REPO, "benchmarks", "reproduce")


@pytest.fixture(scope="module")
def mods():
    for p in (HERE, os.path.join(REPO, "benchmarks")):
        if p not in sys.path:
            sys.path.insert(0, p)
    import report
    import run
    import supernets

    return run, supernets, report


def test_committed_children_are_the_drawn_ones(mods):
    run, _, _ = mods
    children = run.read_children_file()
    assert children == run.table1_children()
    assert len(children) == run.TABLE1_CHILDREN == len(set(children)) >= 48
    for c in children:
        ops = c.split(",")
        assert len(ops) == run.DEPTH and set(ops) <= set(run.OPS)
    # uniform sampling: every operator appears, none dominates wildly (12 x 48 draws)
    counts = np.array([sum(c.split(",").count(o) for c in children) for o in run.OPS])
    assert counts.min() > 0.15 * counts.sum() and counts.max() < 0.35 * counts.sum()


def test_supernet_units_share_one_recipe(mods):
    _, sn, _ = mods
    units = sn.units()
    names = [u["name"] for u in units]
    assert len(names) == len(set(names))
    table1 = [u for u in units if u["kind"] == "table1"]
    assert {(u["method"], u["seed"]) for u in table1} == {
        (m, s) for m in sn.METHODS for s in sn.TABLE1_SEEDS}
    assert {u["updates"] for u in table1 + [u for u in units if u["kind"] == "ksweep"]} == {sn.UPDATES}
    assert sorted({u["k"] for u in units if u["kind"] == "ksweep"}) == [3, 6, 12]

    def flags(u):
        argv = sn.train_argv(u, "DATA", "SAVE")
        method = sn.METHOD_FLAGS[u["method"]]
        i = next(i for i in range(len(argv)) if argv[i:i + len(method)] == method)
        return argv[:i] + argv[i + len(method):]

    base = flags(table1[0])
    for u in table1:
        # identical argv outside the method's own flags, up to the seed
        a = flags(u)
        j = a.index("--seed")
        assert a[:j] + a[j + 2:] == base[:j] + base[j + 2:]
        assert a[j + 1] == str(u["seed"])
    spos = sn.train_argv(table1[0], "D", "S")
    assert spos[spos.index("--magic-align-lambda") + 1] == "0"
    at = next(u for u in table1 if u["method"] == "magic_at")
    assert sn.train_argv(at, "D", "S")[sn.train_argv(at, "D", "S").index("--magic-align-lambda") + 1] == "0.5"


def _synthetic(tmp_path, run, children, gt_seeds=(1, 2), partial_seed=3):
    rng = random.Random(5)
    truth = {c: rng.gauss(6.3, 0.05) for c in children}
    rows = []
    for s in gt_seeds:
        rows += [{"arch": c, "seed": s, "loss": truth[c] + rng.gauss(0, 0.02), "status": "ok",
                  "wall_s": 90.0} for c in children]
    # a half-finished seed must not enter the truth
    rows += [{"arch": c, "seed": partial_seed, "loss": 99.0, "status": "ok", "wall_s": 90.0}
             for c in children[:5]]
    sn_rows = []
    for m in ("spos", "magic_at"):
        for s in (1, 2):
            noise = 0.03 if m == "magic_at" else 0.08
            r = {"name": f"{m}-s{s}", "kind": "table1", "method": m, "k": 1, "seed": s,
                 "train_s": 10.0, "scores": {c: truth[c] + rng.gauss(0, noise) for c in children}}
            if m == "spos":
                r["finetune"] = {"steps": 3, "lr": 1e-4,
                                 "scores": {c: truth[c] + rng.gauss(0, 0.05) for c in children}}
            sn_rows.append(r)
    sn_rows.append({"name": "magic_t-k12-s1", "kind": "ksweep", "method": "magic_t", "k": 12,
                    "seed": 1, "train_s": 10.0, "scores": {c: rng.random() for c in children}})
    sn_rows.append({"name": "table6-spos", "kind": "similarity", "method": "spos", "k": 1,
                    "seed": 1, "train_s": 5.0, "similarity_by_m": {
                        "1": {"mean": 0.8, "std": 0.1, "n": 10}, "2": {"mean": 0.6, "std": 0.1, "n": 10}}})
    return truth, rows, sn_rows


def test_report_numbers_match_scipy(mods, tmp_path, monkeypatch):
    run, sn, report = mods
    res = tmp_path / "results"
    res.mkdir()
    monkeypatch.setattr(report, "RESULTS", str(res))
    monkeypatch.setattr(report, "SCORES", str(res / "scores"))
    monkeypatch.setattr(report, "RANK", str(res / "rank"))
    monkeypatch.setattr(report, "REPRODUCE_JSON", str(tmp_path / "reproduce.json"))
    monkeypatch.setattr(report, "BOOTSTRAP", 40)
    children = run.read_children_file()[:20]
    truth, gt_rows, sn_rows = _synthetic(tmp_path, run, children)
    report.write_jsonl(str(res / "ground-truth.jsonl"), gt_rows)
    report.write_jsonl(str(res / "supernets.jsonl"), sn_rows)
    sections = {}
    rc = report.main(children, run.DATA if os.path.exists(run.DATA) else _tiny_dict(tmp_path),
                     {"cpu": "x", "cpu_count": 2, "torch": "t"}, "cmd",
                     lambda stage, body: sections.update({stage: body}), sn.UPDATES)
    assert rc == 0
    rep = json.loads((tmp_path / "reproduce.json").read_text())
    assert rep["ground_truth_seeds"] == [1, 2] and rep["children"] == 20
    by = {(r["arch"], r["seed"]): r["loss"] for r in gt_rows}
    mean = [np.mean([by[(c, 1)], by[(c, 2)]]) for c in children]
    for m in ("spos", "magic_at"):
        want = [kendalltau([r["scores"][c] for c in children], mean).statistic
                for r in sn_rows if r.get("method") == m and r["kind"] == "table1"]
        assert rep["kendall_tau"][m] == pytest.approx(want, abs=1e-12)
    assert rep["kendall_tau"]["magic_t"] == [] and rep["kendall_tau"]["magic_a"] == []
    d = rep["paired_diff"]["magic_at"]
    assert d["mean"] == pytest.approx(np.mean(rep["kendall_tau"]["magic_at"])
                                      - np.mean(rep["kendall_tau"]["spos"]), abs=1e-12)
    assert d["lo"] <= d["mean"] <= d["hi"]
    assert set(rep["paired_diff"]) == {"magic_at"}
    gt_tau = kendalltau([by[(c, 1)] for c in children], [by[(c, 2)] for c in children]).statistic
    assert rep["ground_truth_seed_tau"]["value"] == pytest.approx(gt_tau, abs=1e-12)
    # trivial predictors: "convolutions (more is better)" scores -#conv
    conv = [-sum(o.startswith("conv") for o in c.split(",")) for c in children]
    assert rep["trivial_tau"]["convolutions (more is better)"] == pytest.approx(
        kendalltau(conv, mean).statistic, abs=1e-12)
    assert rep["magic_t_k"]["12"] and "1" not in rep["magic_t_k"]
    assert rep["finetune"]["spos"]["before"] == rep["kendall_tau"]["spos"]
    assert rep["similarity_vs_m"] == [{"m": 1, "mean": 0.8, "std": 0.1, "n": 10},
                                      {"m": 2, "mean": 0.6, "std": 0.1, "n": 10}]
    assert "| SPOS | 0.36 |" in sections["table1"] and "| MAGIC-AT | 0.57 |" in sections["table1"]
    assert (res / "table1.png").stat().st_size > 1000
    assert (res / "similarity.png").stat().st_size > 1000
    # the scores written for magic-rank are the rows' scores, child by child
    lines = [json.loads(x) for x in (res / "scores" / "spos-s1.jsonl").read_text().splitlines()]
    assert {x["arch"]: x["loss"] for x in lines} == sn_rows[0]["scores"]


def test_report_refuses_without_a_complete_seed(mods, tmp_path, monkeypatch):
    run, sn, report = mods
    children = run.read_children_file()[:6]
    rows = [{"arch": c, "seed": 1, "loss": 6.0, "status": "ok"} for c in children[:5]]
    assert report.complete_seeds(rows, children) == []
    assert report.build(children, rows, [], "unused", {}, "cmd") is None


def _tiny_dict(tmp_path):
    d = tmp_path / "bin"
    d.mkdir()
    (d / "dict.txt").write_text("".join(f"w{i} 1\n" for i in range(100)))
    return str(d)
