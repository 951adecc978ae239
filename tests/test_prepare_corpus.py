"""Tests for scripts/prepare_corpus.py, run as a subprocess like `make demo` does."""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_corpus.py"
SPLITS = ("train", "valid", "test")
WORDS = ("the quick brown fox jumps over lazy dog river stone light dark "
         "king queen ship sails north wind rain falls upon green hill and "
         "old man sings softly while children laugh near bright water").split()


def cmd(*args):
    return [sys.executable, str(SCRIPT), "--workers", "1", *map(str, args)]


def run(*args):
    return subprocess.run(cmd(*args), capture_output=True, text=True)


def make_text(path, n_docs=40, seed=0):
    """Made-up prose: n_docs documents of 5-12 short lines, blank-line separated."""
    rng = random.Random(seed)
    docs = []
    for i in range(n_docs):
        lines = [f"Tale {i} begins here."]
        for _ in range(rng.randint(4, 11)):
            words = rng.choices(WORDS, k=rng.randint(3, 12))
            lines.append(" ".join(words).capitalize() + rng.choice(".!?"))
        docs.append(lines)
    path.write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
    return docs


def read_docs(path):
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and "\n\n\n" not in text
    return [tuple(block.split("\n")) for block in text.rstrip("\n").split("\n\n")]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Build all corpora the tests inspect, concurrently: each run pays ~5 s of
    fairseq/torch import, so running them one after another would dominate."""
    root = tmp_path_factory.mktemp("corpora")
    text = root / "tales.txt"
    docs = make_text(text)
    common = ("--input", text, "--vocab-size", 200, "--valid-docs", 4, "--test-docs", 0.1)
    jobs = {
        "a": cmd(*common, "--seed", 1, "--out", root / "a"),
        "b": cmd(*common, "--seed", 1, "--out", root / "b"),
        "c": cmd(*common, "--seed", 2, "--out", root / "c"),
        "kjv": cmd("--max-docs", 30, "--vocab-size", 200, "--out", root / "kjv"),
    }
    procs = {k: subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, c in jobs.items()}
    results = {}
    for k, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"{k} failed:\n{out}\n{err}"
        results[k] = out
    return {"root": root, "text": text, "docs": docs, "stdout": results}


def meta(out):
    return json.loads((out / "corpus.json").read_text())


@pytest.mark.parametrize("name", ["a", "kjv"])
def test_layout_and_summary(built, name):
    out = built["root"] / name
    for rel in ["spm.model", "spm.vocab", "corpus.json", "data-bin/dict.txt"]:
        assert (out / rel).is_file(), rel
    for s in SPLITS:
        for rel in [f"raw/{s}.txt", f"bpe/{s}.bpe", f"data-bin/{s}.bin", f"data-bin/{s}.idx"]:
            assert (out / rel).is_file(), rel
    assert str(out / "data-bin") in built["stdout"][name]
    # No temporary build directories are left next to the output.
    assert sorted(p.name for p in built["root"].iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("name", ["a", "kjv"])
def test_binarized_splits_match_corpus_json(built, name):
    from fairseq.data import Dictionary, data_utils

    out = built["root"] / name
    m = meta(out)
    d = Dictionary.load(str(out / "data-bin" / "dict.txt"))
    assert len(d) == m["dict_size"]
    assert m["vocab_size"] <= m["vocab_size_requested"] == 200
    for s in SPLITS:
        st = m["splits"][s]
        ds = data_utils.load_indexed_dataset(str(out / "data-bin" / s), d)
        assert ds is not None, s
        # fairseq makes one item per line, the blank document separators
        # included; each item ends with </s>.
        bpe_lines = (out / "bpe" / f"{s}.bpe").read_text(encoding="utf-8").split("\n")[:-1]
        assert len(ds) == len(bpe_lines) == st["items"] == st["lines"] + st["documents"] - 1
        sizes = [len(ds[i]) for i in range(len(ds))]
        assert sum(sizes) == st["tokens"] + st["items"]
        # Size-1 items (just </s>) are exactly the document breaks that
        # --sample-break-mode complete_doc looks for.
        assert sizes.count(1) == st["documents"] - 1
        assert all(x[-1].item() == d.eos() for x in (ds[0], ds[len(ds) - 1]))
        if s == "train":  # every train piece is in the dict, so it round-trips
            assert d.string(ds[0]) == bpe_lines[0]
            assert d.unk() not in ds[0].tolist()


def test_splits_are_disjoint_documents_covering_input(built):
    out = built["root"] / "a"
    split_docs = {s: read_docs(out / "raw" / f"{s}.txt") for s in SPLITS}
    assert [len(split_docs[s]) for s in SPLITS] == [32, 4, 4]
    all_docs = [doc for s in SPLITS for doc in split_docs[s]]
    assert len(set(all_docs)) == len(all_docs)
    assert sorted(all_docs) == sorted(tuple(doc) for doc in built["docs"])
    m = meta(out)
    assert {s: m["splits"][s]["documents"] for s in SPLITS} == {"train": 32, "valid": 4, "test": 4}


def test_kjv_documents_are_chapters(built):
    out = built["root"] / "kjv"
    m = meta(out)
    assert m["source"].endswith("kjv.jsonl") and m["max_docs"] == 30
    docs = {s: read_docs(out / "raw" / f"{s}.txt") for s in SPLITS}
    assert sum(len(v) for v in docs.values()) == 30
    assert not set(docs["train"]) & (set(docs["valid"]) | set(docs["test"]))
    # Genesis 1 has 31 verses; the first 30 chapters are all in Genesis.
    genesis1 = [d for v in docs.values() for d in v if d[0].startswith("In the beginning God")]
    assert len(genesis1) == 1 and len(genesis1[0]) == 31


def test_same_seed_is_deterministic_other_seed_differs(built):
    root = built["root"]
    for rel in [f"raw/{s}.txt" for s in SPLITS] + ["spm.model", "data-bin/dict.txt"]:
        assert (root / "a" / rel).read_bytes() == (root / "b" / rel).read_bytes(), rel
    assert any((root / "a" / "raw" / f"{s}.txt").read_bytes()
               != (root / "c" / "raw" / f"{s}.txt").read_bytes() for s in ("valid", "test"))


def test_second_run_without_force_is_a_noop(built, tmp_path):
    out = built["root"] / "a"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    # It exits before importing sentencepiece, fairseq or torch: here importing
    # any of them fails.
    poison = tmp_path / "poison"
    for name in ("sentencepiece", "fairseq", "torch"):
        (poison / name).mkdir(parents=True)
        (poison / name / "__init__.py").write_text(f"raise ImportError('imported {name}')\n")
    r = subprocess.run(cmd("--input", built["text"], "--vocab-size", 200, "--seed", 9,
                           "--out", out), capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(poison)))
    assert r.returncode == 0, r.stderr
    assert "already prepared" in r.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    # the poison works: a run that has to build fails on it
    r = subprocess.run(cmd("--input", built["text"], "--vocab-size", 200,
                           "--out", tmp_path / "fresh"), capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(poison)))
    assert r.returncode != 0 and "imported sentencepiece" in r.stderr, r.stderr[-2000:]


def test_missing_input_file(tmp_path):
    out = tmp_path / "out"
    r = run("--input", tmp_path / "no_such_corpus.txt", "--out", out)
    assert r.returncode == 2
    assert "no_such_corpus.txt" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_too_few_documents(tmp_path):
    text = tmp_path / "one_doc.txt"
    text.write_text("a single document\nwith two lines\n")
    r = run("--input", text, "--out", tmp_path / "out")
    assert r.returncode == 2
    assert "1 document" in r.stderr and "need at least 3" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one_doc.txt"]


def test_vocab_too_small(tmp_path):
    text = tmp_path / "t.txt"
    make_text(text, n_docs=5)
    r = run("--input", text, "--vocab-size", 10, "--out", tmp_path / "out")
    assert r.returncode == 2
    assert "--vocab-size 10" in r.stderr and ">= 50" in r.stderr
    assert not (tmp_path / "out").exists()
