"""magic-ground-truth: resume, recipe check, bad input, determinism across --jobs,
divergence recorded. Units are tiny (4 layers x 32, a few updates) on the
``data_bin`` fixture; each costs one fairseq start in a subprocess."""

import json
import os

import pytest

from fairseq_magic.cli import ground_truth as gt
from fairseq_magic.core.space import MagicConfigError

CHILDREN = ["mha2d32,ffn,conv3,conv5", "conv3,ffn,conv5,ffn"]
TINY = ["--encoder-embed-dim", "32", "--updates", "4", "--warmup", "1",
        "--batch-size", "8", "--tokens-per-sample", "32", "--score-at", "2",
        "--valid-passes", "2", "--valid-batch-size", "16", "--threads", "1"]


def argv(data, tmp, out="gt.jsonl", children=CHILDREN, seeds=("1",), *extra):
    a = ["--data", data, "--out", str(tmp / out), "--workdir", str(tmp / "work"),
         "--seeds", *seeds, *TINY]
    for c in children:
        a += ["--arch", c]
    return a + list(extra)


def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def resumed(data_bin, tmp_path_factory):
    """Two units trained in two invocations: the first stops after one unit,
    then a torn line and a crashed unit's leftovers are planted, then the second
    invocation finishes."""
    tmp = tmp_path_factory.mktemp("gt_resume")
    out = tmp / "gt.jsonl"
    assert gt.main(argv(data_bin, tmp) + ["--max-units", "1"]) == 0
    first = rows(out)
    done_dir = tmp / "work" / gt.unit_dirname(CHILDREN[0], 1)
    stamp = os.stat(done_dir / "train.log").st_mtime_ns
    # What a crash leaves: the missing unit's half-made directory and, in the
    # worst case, a line cut inside its single write.
    crashed = tmp / "work" / gt.unit_dirname(CHILDREN[1], 1)
    crashed.mkdir()
    (crashed / "junk").write_text("left by a killed run")
    with open(out, "a") as f:
        f.write('{"arch": "' + CHILDREN[1])
    assert gt.main(argv(data_bin, tmp)) == 0
    return {"tmp": tmp, "out": out, "first": first, "stamp": stamp, "done_dir": done_dir,
            "crashed": crashed, "final": rows(out)}


def test_resume_trains_only_missing_units(resumed, data_bin, capsys):
    first, final = resumed["first"], resumed["final"]
    assert [r["arch"] for r in first] == [CHILDREN[0]]
    # the finished unit was not retrained: same line, its directory untouched
    assert final[0] == first[0]
    assert os.stat(resumed["done_dir"] / "train.log").st_mtime_ns == resumed["stamp"]
    # the torn line was dropped and the missing unit trained from a clean directory
    assert [(r["arch"], r["seed"]) for r in final] == [(CHILDREN[0], 1), (CHILDREN[1], 1)]
    assert not (resumed["crashed"] / "junk").exists()
    assert (resumed["crashed"] / "result.json").exists()
    for r in final:
        assert r["status"] == "ok" and r["updates"] == 4
        # a real loss on the fixed subset, below a uniform guess over the vocabulary
        assert 0 < r["loss"] < 12 and set(r["loss_at"]) == {"2"}
        assert r["scored_tokens"] > 0 and r["params"] > 0
    # nothing left to do: a third run trains nothing and changes nothing
    assert gt.main(argv(data_bin, resumed["tmp"])) == 0
    assert "0 to train" in capsys.readouterr().out
    assert rows(resumed["out"]) == final
    # checkpoints are deleted after scoring
    assert not list((resumed["done_dir"] / "ckpt").glob("*.pt"))


def test_jobs_two_gives_the_same_losses(resumed, data_bin):
    tmp = resumed["tmp"]
    assert gt.main(argv(data_bin, tmp, "jobs2.jsonl") + ["--jobs", "2",
                                                         "--workdir", str(tmp / "work2")]) == 0
    a = {r["arch"]: (r["loss"], r["loss_at"]) for r in resumed["final"]}
    b = {r["arch"]: (r["loss"], r["loss_at"]) for r in rows(tmp / "jobs2.jsonl")}
    assert a == b
    # and the two children really differ (the comparison is not vacuous)
    assert a[CHILDREN[0]] != a[CHILDREN[1]]


def test_other_recipe_refused(resumed, data_bin):
    tmp = resumed["tmp"]
    before = sorted(os.listdir(tmp / "work"))
    with pytest.raises(MagicConfigError, match=r"recipe .*updates 4 -> 5"):
        gt.main(argv(data_bin, tmp, "gt.jsonl", CHILDREN, ("1", "2")) + ["--updates", "5"])
    with pytest.raises(MagicConfigError, match="extra_fairseq_args"):
        gt.main(argv(data_bin, tmp) + ["--", "--adam-eps", "1e-8"])
    assert sorted(os.listdir(tmp / "work")) == before


def test_bad_input_refused_before_training(data_bin, tmp_path):
    with pytest.raises(MagicConfigError, match=r"child 'mha2d32,bogus7': unknown operator 'bogus7'"):
        gt.main(argv(data_bin, tmp_path, children=[CHILDREN[0], "mha2d32,bogus7"]))
    with pytest.raises(MagicConfigError, match="listed more than once"):
        gt.main(argv(data_bin, tmp_path, children=[CHILDREN[0], CHILDREN[0] + " "]))
    with pytest.raises(MagicConfigError, match="--score-at 4"):
        gt.main(argv(data_bin, tmp_path) + ["--score-at", "4"])
    with pytest.raises(MagicConfigError, match="--seed"):
        gt.main(argv(data_bin, tmp_path) + ["--", "--seed", "5"])
    bad = tmp_path / "children.txt"
    bad.write_text("# probes\n" + json.dumps({"arch": CHILDREN[0]}) + "\nconv4,ffn\n")
    with pytest.raises(MagicConfigError, match="child 'conv4,ffn'.*odd"):
        gt.main(["--data", data_bin, "--children", str(bad), "--out", str(tmp_path / "o.jsonl"),
                 "--workdir", str(tmp_path / "w")])
    assert not (tmp_path / "work").exists() and not (tmp_path / "w").exists()
    assert not (tmp_path / "gt.jsonl").exists()


def test_children_file_formats(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("# comment\n\nffn,conv3\n" + json.dumps({"arch": "mha2,ffn", "note": 1}) + "\n")
    assert gt.read_children(str(f)) == ["ffn,conv3", "mha2,ffn"]


def test_diverging_child_recorded_as_failed(data_bin, tmp_path):
    # An absurd learning rate without clipping drives the weights to Inf/NaN.
    a = argv(data_bin, tmp_path, children=[CHILDREN[1]]) + ["--lr", "1e30", "--clip-norm", "0"]
    assert gt.main(a) == 0
    (row,) = rows(tmp_path / "gt.jsonl")
    assert row["status"] == "failed" and row["loss"] is None
    assert "diverged" in row["reason"] or "non-finite" in row["reason"]
    # recorded means done: a rerun does not retrain it
    assert gt.main(a) == 0
    assert len(rows(tmp_path / "gt.jsonl")) == 1
