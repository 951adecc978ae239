"""magic-pipeline: super-net -> search -> export -> re-train -> GLUE, from one config file.

    magic-pipeline CONFIG.yaml [--dry-run] [--verbose]

Runs five stages, each one command of this plugin or fairseq, in order:

  supernet  fairseq-train --task magic --arch magic_supernet   -> OUT/supernet/checkpoint_last.pt
  search    magic-search (evolution or random, under the bounds) -> OUT/search/search.json
  export    magic-export of the search's best child (or the anchor, or a given spec) -> OUT/export/
  retrain   fairseq-train --task masked_lm --arch magic_child, from the export's weights
            (or from scratch) -> OUT/retrain/checkpoint_last.pt, packaged as OUT/retrain/model/
            (model.pt, dict.txt, spm.model: what magic-glue takes)
  glue      magic-glue for each listed task on the user's GLUE-format folder -> OUT/glue/
            (skipped when glue.tasks is empty)

CONFIG is YAML (or JSON, by its .json suffix); every key, its default and its
meaning are listed below and in configs/pipeline/tiny.yaml. Relative paths are
relative to the current directory. The whole config is checked before anything
runs: an unknown key, a value of the wrong type or range, a data path without
its files or a GLUE folder without the task's files fail with one message
naming the value (exit 2), and nothing is written.

Each stage leaves OUT/STAGE.stage.json: the hash of its inputs (its command
lines, which hold every config value it uses, the fingerprint of its input data
and the hash of the stage before it) and the id of the upstream run it used.
A rerun skips a stage whose marker is complete and whose hash and upstream run
match; a stage that was interrupted resumes (fairseq-train from its
checkpoint_last.pt, magic-search from its state); a stage whose inputs changed
starts afresh, and so does every stage after it. The output of each stage's
commands goes to OUT/STAGE.log; the console shows the progress lines.
``--dry-run`` prints what each stage would do (run or skip) and its commands,
and touches nothing.
"""

import argparse
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import run_main
from ..core import glue as glue_core
from ..core.space import MagicConfigError, expand_op_set, parse_arch_spec

USER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("supernet", "search", "export", "retrain", "glue")
METHODS = ("spos", "magic_t", "magic_a", "magic_at")
BREAK_MODES = ("none", "complete", "complete_doc", "eos")

# ---------------------------------------------------------------- config schema


@dataclass(frozen=True)
class Key:
    """One config key: its type, default (None = null), and what it means."""
    name: str
    kind: str          # int, float, str, bool, list, size (5e6, 450k, 5M)
    default: Any
    help: str
    choices: Tuple = ()
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    above: Optional[float] = None   # strictly greater than
    nullable: bool = False
    required: bool = False


SCHEMA: Dict[str, List[Key]] = {
    "": [
        Key("out", "str", "outputs/pipeline", "folder every stage writes into (OUT)"),
        Key("data", "str", None, "fairseq data-bin of the pre-training corpus (dict.txt, "
            "train.*, valid.*), e.g. the data-bin of scripts/prepare_corpus.py",
            required=True),
        Key("spm", "str", None, "sentencepiece model the data was encoded with (copied into "
            "the export; magic-glue encodes GLUE text with it); null = spm.model beside "
            "the data-bin, as scripts/prepare_corpus.py lays it out", nullable=True),
        Key("seed", "int", 1, "seed of every stage (training, search, fine-tuning)",
            minimum=0),
        Key("device", "str", "cpu", "cpu or cuda", choices=("cpu", "cuda")),
        Key("tokens_per_sample", "int", 32, "tokens per pre-training sample (super-net and "
            "re-training; also the exported child's position table, so GLUE inputs are "
            "truncated to it)", minimum=4),
        Key("sample_break_mode", "str", "complete", "how fairseq cuts samples: 'complete' "
            "packs whole sentences up to tokens_per_sample (longer ones are skipped)",
            choices=BREAK_MODES),
    ],
    "supernet": [
        Key("layers", "int", 12, "layers N of the super-net's chain", minimum=1),
        Key("hidden", "int", 64, "hidden size of every operator", minimum=8),
        Key("ops", "str", "mha2d64,ffn,conv3,conv5", "candidate operators of every layer "
            "(--magic-ops: a list or an alias such as 'paper')"),
        Key("method", "str", "magic_at", "super-net training method (--magic-method)",
            choices=METHODS),
        Key("t_k", "int", 1, "magic_t / magic_at: layers changed per update (1..layers)",
            minimum=1),
        Key("updates", "int", 600, "training updates", minimum=1),
        Key("lr", "float", 1e-3, "peak learning rate (Adam 0.9/0.98, polynomial decay)",
            above=0),
        Key("warmup", "int", 100, "warm-up updates", minimum=0),
        Key("batch_size", "int", 64, "samples per update", minimum=1),
        Key("dropout", "float", 0.1, "dropout and attention dropout", minimum=0, maximum=0.99),
        Key("anchor_interval", "int", 50, "magic_a / magic_at: updates between anchor "
            "evaluations (--magic-anchor-interval)", minimum=1),
        Key("align_lambda", "float", 0.5, "magic_a / magic_at: weight of the alignment loss",
            minimum=0),
        Key("align_every", "int", 4, "magic_a / magic_at: layers per alignment block",
            minimum=1),
        Key("save_interval", "int", 200, "updates between checkpoints and validations "
            "(an interrupted run resumes from the last one)", minimum=1),
        Key("extra", "list", [], "more fairseq-train flags, appended verbatim"),
    ],
    "search": [
        Key("strategy", "str", "evolution", "evolution (SPOS) or random",
            choices=("evolution", "random")),
        Key("population", "int", 16, "evolution: children per generation", minimum=1),
        Key("parents", "int", 4, "evolution: parents kept per generation", minimum=1),
        Key("mutation_num", "int", 8, "evolution: children made by mutation", minimum=0),
        Key("crossover_num", "int", 8, "evolution: children made by crossover", minimum=0),
        Key("generations", "int", 4, "evolution: generations", minimum=1),
        Key("samples", "int", 64, "random: children scored", minimum=1),
        Key("min_params", "size", None, "lower bound on a child's parameters (e.g. 300k)",
            nullable=True),
        Key("max_params", "size", None, "upper bound on a child's parameters (e.g. 450k, 5M)",
            nullable=True),
        Key("min_flops", "size", None, "lower bound on FLOPs at 128 tokens", nullable=True),
        Key("max_flops", "size", None, "upper bound on FLOPs at 128 tokens (e.g. 2.9G)",
            nullable=True),
        Key("max_batches", "int", 8, "validation batches a child is scored on", minimum=1),
        Key("batch_size", "int", 32, "samples per scoring batch", minimum=1),
        Key("extra", "list", [], "more magic-search flags, appended verbatim"),
    ],
    "export": [
        Key("arch", "str", "best", "the child to export: 'best' (the search's top child), "
            "'anchor' (the MAGIC-A anchor stored in the super-net) or a spec"),
    ],
    "retrain": [
        Key("init", "str", "export", "'export': continue from the exported weights; "
            "'scratch': the same child from random weights", choices=("export", "scratch")),
        Key("updates", "int", 150, "training updates (fairseq masked_lm)", minimum=1),
        Key("lr", "float", 5e-4, "peak learning rate", above=0),
        Key("warmup", "int", 20, "warm-up updates", minimum=0),
        Key("batch_size", "int", 64, "samples per update", minimum=1),
        Key("dropout", "float", 0.1, "dropout and attention dropout", minimum=0, maximum=0.99),
        Key("extra", "list", [], "more fairseq-train flags, appended verbatim"),
    ],
    "glue": [
        Key("tasks", "list", [], "GLUE tasks to fine-tune and score, in order (MNLI QQP QNLI "
            "SST-2 CoLA STS-B MRPC RTE, or 'all'); empty = no glue stage"),
        Key("data", "str", None, "GLUE folder: one sub-folder per task with the official "
            "train.tsv and dev.tsv (MNLI: dev_matched.tsv, dev_mismatched.tsv)",
            nullable=True),
        Key("lr", "float", None, "peak learning rate (null = RoBERTa's per task)",
            above=0, nullable=True),
        Key("batch_size", "int", None, "sentences per update (null = RoBERTa's per task)",
            minimum=1, nullable=True),
        Key("epochs", "int", None, "epochs (null = 10)", minimum=1, nullable=True),
        Key("max_update", "int", None, "total updates (null = from the epochs)", minimum=1,
            nullable=True),
        Key("max_train_examples", "int", None, "subsample each train set to this many",
            minimum=1, nullable=True),
        Key("max_dev_examples", "int", None, "subsample each dev set to this many",
            minimum=1, nullable=True),
        Key("extra", "list", [], "more magic-glue flags, appended verbatim (GLUE_ARGS in the "
            "environment is ignored: the config is the only source)"),
    ],
}


def parse_size(text) -> int:
    """A count such as 450000, 4.5e5, 450k, 5M or 2.9G."""
    if isinstance(text, bool):
        raise ValueError(text)
    if isinstance(text, (int, float)):
        v = float(text)
    else:
        t = str(text).strip().lower().replace("_", "").replace(",", "")
        mult = {"k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}.get(t[-1:])
        v = float(t[:-1]) * mult if mult else float(t)
    if not math.isfinite(v) or v < 0:
        raise ValueError(text)
    return int(round(v))


def _where(section, key):
    return f"{section}.{key}" if section else key


def _coerce(section: str, key: Key, value):
    name = _where(section, key.name)
    if value is None:
        if key.nullable or (key.default is None and not key.required):
            return None
        raise MagicConfigError(f"{name}: null given, expected a {key.kind} ({key.help})")
    try:
        if key.kind == "int":
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or float(value) != int(value):
                raise ValueError
            value = int(value)
        elif key.kind == "float":
            if isinstance(value, bool):
                raise ValueError
            value = float(value)  # YAML reads 1e-3 as a string
            if not math.isfinite(value):
                raise ValueError
        elif key.kind == "str":
            if not isinstance(value, str) or not value.strip():
                raise ValueError
        elif key.kind == "list":
            if isinstance(value, str):
                value = shlex.split(value)
            if not isinstance(value, list) or not all(
                    isinstance(v, (str, int, float)) and not isinstance(v, bool)
                    for v in value):
                raise ValueError
            value = [str(v) for v in value]
        elif key.kind == "size":
            value = parse_size(value)
        elif key.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError
    except (TypeError, ValueError):
        expect = {"int": "an integer", "float": "a number", "str": "a non-empty string",
                  "list": "a list of strings (or one shell-quoted string)",
                  "size": "a count such as 450000, 450k, 5M or 2.9G",
                  "bool": "true or false"}[key.kind]
        raise MagicConfigError(f"{name}: {value!r} is not {expect} ({key.help})") from None
    if key.choices and value not in key.choices:
        raise MagicConfigError(f"{name}: {value!r}, expected one of {list(key.choices)}")
    if key.minimum is not None and value < key.minimum:
        raise MagicConfigError(f"{name}: {value!r}, expected >= {key.minimum:g}")
    if key.above is not None and value <= key.above:
        raise MagicConfigError(f"{name}: {value!r}, expected > {key.above:g}")
    if key.maximum is not None and value > key.maximum:
        raise MagicConfigError(f"{name}: {value!r}, expected <= {key.maximum:g}")
    return value


def read_config_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise MagicConfigError(f"config {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        if path.endswith(".json"):
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - any parse error: one message naming the file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MagicConfigError(f"config {path!r} is not valid "
                               f"{'JSON' if path.endswith('.json') else 'YAML'}: {first}") \
            from None
    if not isinstance(raw, dict):
        raise MagicConfigError(f"config {path!r}: expected a mapping of keys, got "
                               f"{type(raw).__name__}")
    return raw


def normalise(raw: dict) -> dict:
    """The config with every key checked and every default filled in:
    ``{"out": ..., ..., "supernet": {...}, "search": {...}, ...}``."""
    top = {k.name: k for k in SCHEMA[""]}
    sections = [s for s in SCHEMA if s]
    for name in raw:
        if name not in top and name not in sections:
            raise MagicConfigError(
                f"unknown key {name!r}: expected one of {sorted(list(top) + sections)}")
    cfg = {}
    for k in SCHEMA[""]:
        if k.required and raw.get(k.name) is None:
            raise MagicConfigError(f"{k.name}: missing ({k.help})")
        cfg[k.name] = _coerce("", k, raw.get(k.name, k.default))
    for s in sections:
        given = raw.get(s) or {}
        if not isinstance(given, dict):
            raise MagicConfigError(f"{s}: expected a mapping of keys, got {given!r}")
        keys = {k.name: k for k in SCHEMA[s]}
        for name in given:
            if name not in keys:
                raise MagicConfigError(
                    f"unknown key {s}.{name}: expected one of {sorted(keys)}")
        cfg[s] = {k.name: _coerce(s, k, given.get(k.name, k.default)) for k in SCHEMA[s]}
    _check_relations(cfg)
    return cfg


def _check_relations(cfg: dict) -> None:
    """What a single key's type cannot say."""
    sn = cfg["supernet"]
    try:
        ops = expand_op_set(sn["ops"], sn["hidden"])
    except MagicConfigError as e:
        raise MagicConfigError(f"supernet.ops: {e}") from None
    if sn["t_k"] > sn["layers"]:
        raise MagicConfigError(f"supernet.t_k: {sn['t_k']}, expected <= supernet.layers "
                               f"({sn['layers']})")
    if sn["warmup"] >= sn["updates"]:
        raise MagicConfigError(f"supernet.warmup: {sn['warmup']}, expected < "
                               f"supernet.updates ({sn['updates']})")
    rt = cfg["retrain"]
    if rt["warmup"] >= rt["updates"]:
        raise MagicConfigError(f"retrain.warmup: {rt['warmup']}, expected < "
                               f"retrain.updates ({rt['updates']})")
    se = cfg["search"]
    for lo, hi in (("min_params", "max_params"), ("min_flops", "max_flops")):
        if se[lo] is not None and se[hi] is not None and se[lo] > se[hi]:
            raise MagicConfigError(f"search.{lo}: {se[lo]} is above search.{hi} {se[hi]}")
    if se["strategy"] == "evolution" and se["parents"] > se["population"]:
        raise MagicConfigError(f"search.parents: {se['parents']}, expected <= "
                               f"search.population ({se['population']})")
    arch = cfg["export"]["arch"]
    if arch not in ("best", "anchor"):
        try:
            spec = parse_arch_spec(arch, sn["hidden"])
        except MagicConfigError as e:
            raise MagicConfigError(f"export.arch: {e}") from None
        bad = [o for o in spec if o not in ops]
        if len(spec) != sn["layers"] or bad:
            raise MagicConfigError(
                f"export.arch: {arch!r} is not a child of the super-net ({sn['layers']} "
                f"layers of {','.join(ops)}): expected 'best', 'anchor' or such a spec")
    if arch == "anchor" and sn["method"] not in ("magic_a", "magic_at"):
        raise MagicConfigError(f"export.arch: 'anchor', but supernet.method "
                               f"{sn['method']!r} keeps no anchor (magic_a or magic_at do)")
    gl = cfg["glue"]
    tasks = []
    for t in gl["tasks"]:
        if t == "all":
            tasks += [n for n in glue_core.TASK_ORDER if n not in tasks]
            continue
        try:
            tasks.append(glue_core.get_task(t).name)
        except MagicConfigError as e:
            raise MagicConfigError(f"glue.tasks: {e}") from None
    gl["tasks"] = list(dict.fromkeys(tasks))
    if gl["tasks"] and gl["data"] is None:
        raise MagicConfigError(f"glue.data: missing, needed by glue.tasks {gl['tasks']} "
                               "(the folder holding one sub-folder per task)")


def check_paths(cfg: dict) -> None:
    """Every input the stages read exists, before any stage runs."""
    data = cfg["data"]
    if not os.path.isdir(data):
        raise MagicConfigError(f"data: {data!r} does not exist (expected a fairseq data-bin; "
                               "make one with scripts/prepare_corpus.py --out DIR)")
    for f in ("dict.txt", "train.bin", "train.idx", "valid.bin", "valid.idx"):
        if not os.path.isfile(os.path.join(data, f)):
            raise MagicConfigError(f"data: {data!r} has no {f} (expected a fairseq data-bin "
                                   "with train and valid splits)")
    if cfg["out"] and os.path.exists(cfg["out"]) and not os.path.isdir(cfg["out"]):
        raise MagicConfigError(f"out: {cfg['out']!r} exists and is not a folder")
    spm = cfg["spm"]
    if spm is not None and not os.path.isfile(spm):
        raise MagicConfigError(f"spm: {spm!r} does not exist (expected the sentencepiece "
                               "model the data was encoded with)")
    if spm is None:
        cfg["spm"] = find_spm(data)
    gl = cfg["glue"]
    if gl["tasks"]:
        if cfg["spm"] is None:
            raise MagicConfigError(
                f"spm: no sentencepiece model given or found beside data {data!r} "
                "(spm.model): glue.tasks needs one to encode the GLUE text")
        if not os.path.isdir(gl["data"]):
            raise MagicConfigError(f"glue.data: {gl['data']!r} does not exist (expected a "
                                   "folder with one sub-folder per GLUE task)")
        for name in gl["tasks"]:
            task = glue_core.get_task(name)
            for fname in ("train.tsv",) + task.dev_files:
                try:
                    glue_core.check_header(task, os.path.join(gl["data"], name, fname))
                except MagicConfigError as e:
                    raise MagicConfigError(f"glue.data: {e}") from None


def find_spm(data: str) -> Optional[str]:
    for folder in (data, os.path.dirname(os.path.normpath(data)) or "."):
        for name in ("spm.model", "sentencepiece.bpe.model"):
            p = os.path.join(folder, name)
            if os.path.isfile(p):
                return p
    return None


def load_config(path: str, paths: bool = True) -> dict:
    cfg = normalise(read_config_file(path))
    if paths:
        check_paths(cfg)
    return cfg


def schema_text() -> str:
    """Every key with its default and meaning (the --help epilog)."""
    lines = ["config keys (default; meaning):"]
    for section, keys in SCHEMA.items():
        if section:
            lines.append(f"  {section}:")
        for k in keys:
            d = "null" if k.default is None else json.dumps(k.default)
            req = "required" if k.required else d
            pad = "    " if section else "  "
            lines.append(f"{pad}{k.name} ({req}): {k.help}"
                         + (f" [{', '.join(map(str, k.choices))}]" if k.choices else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------- fingerprints

_FILE_SHA: Dict[tuple, str] = {}


def _file_sha(path: str) -> str:
    """sha256 of a file, computed once per (path, size, mtime) in this process
    (the stages are planned more than once; GLUE files can be large)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_SHA:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _FILE_SHA[key] = h.hexdigest()
    return _FILE_SHA[key]


def data_fingerprint(data: str) -> dict:
    """The corpus by content (dict.txt and valid split) and size (train)."""
    sha = {f: _file_sha(os.path.join(data, f))[:16] for f in ("dict.txt", "valid.bin")}
    sizes = {f: os.path.getsize(os.path.join(data, f))
             for f in ("train.bin", "train.idx", "valid.bin", "valid.idx")}
    return {"sha256": sha, "sizes": sizes}


def files_fingerprint(paths: List[str]) -> str:
    return digest([[os.path.basename(p), _file_sha(p)] for p in paths])


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- stages

@dataclass
class Command:
    prog: str            # what a user types (fairseq-train, magic-search, ...)
    module: str          # what runs: python -m MODULE
    argv: List[str]

    def shell(self) -> str:
        return " ".join(shlex.quote(a) for a in [self.prog, *self.argv])


class Stage:
    """One stage: its commands, outputs and marker."""

    def __init__(self, name, out, commands, outputs, inputs, prepare=None, finish=None,
                 resume_argv=None, notes=()):
        self.name = name
        self.dir = os.path.join(out, name)
        self.marker = os.path.join(out, f"{name}.stage.json")
        self.log = os.path.join(out, f"{name}.log")
        self.commands: List[Command] = commands
        self.outputs: List[str] = outputs
        self.inputs = inputs              # fingerprints and values not in the commands
        self.prepare = prepare            # resuming -> extra argv (e.g. --resume) or None
        self.finish = finish              # after the commands (packaging)
        self.resume_argv = resume_argv or []
        self.notes = list(notes)

    def hash(self, upstream_hash: str) -> str:
        return digest({"stage": self.name, "upstream": upstream_hash, "inputs": self.inputs,
                       "commands": [[c.prog, *c.argv] for c in self.commands]})

    def read_marker(self) -> Optional[dict]:
        try:
            with open(self.marker) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def write_marker(self, record: dict) -> None:
        tmp = self.marker + ".tmp"
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, self.marker)

    def complete(self) -> bool:
        return all(os.path.exists(p) for p in self.outputs)


BEST = "SEARCH_BEST"  # placeholder (dry run): the search's top child, unknown yet


def found_spec(cfg: dict) -> Optional[str]:
    """The child the export stage takes: a spec, or None while unknown (before
    the search ran, or the anchor before the super-net trained)."""
    arch = cfg["export"]["arch"]
    out = cfg["out"]
    if arch == "best":
        path = os.path.join(out, "search", "search.json")
        try:
            with open(path) as f:
                return json.load(f)["top_k"][0]["spec"]
        except (OSError, ValueError, KeyError, IndexError):
            return None
    if arch == "anchor":
        path = os.path.join(out, "export", "export.json")
        try:
            with open(path) as f:
                return json.load(f)["arch"]
        except (OSError, ValueError, KeyError):
            return None
    return arch


def build_stages(cfg: dict, spec: Optional[str] = None) -> List[Stage]:
    """The five stages' commands. ``spec``: the exported child, when known
    (the re-training and GLUE commands name it); a placeholder otherwise."""
    out, data, seed = cfg["out"], cfg["data"], cfg["seed"]
    cpu = ["--cpu"] if cfg["device"] == "cpu" else []
    samples = ["--tokens-per-sample", str(cfg["tokens_per_sample"]),
               "--sample-break-mode", cfg["sample_break_mode"],
               "--skip-invalid-size-inputs-valid-test"]
    sn, se, ex, rt, gl = (cfg[s] for s in ("supernet", "search", "export", "retrain", "glue"))
    d = {s: os.path.join(out, s) for s in STAGES}
    ckpt = os.path.join(d["supernet"], "checkpoint_last.pt")

    def adam(section):
        return ["--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-6",
                "--weight-decay", "0.01", "--clip-norm", "1.0",
                "--lr", repr(section["lr"]), "--lr-scheduler", "polynomial_decay",
                "--warmup-updates", str(section["warmup"]),
                "--total-num-update", str(section["updates"]),
                "--max-update", str(section["updates"]),
                "--dropout", repr(section["dropout"]),
                "--attention-dropout", repr(section["dropout"]),
                "--batch-size", str(section["batch_size"])]

    common = [*cpu, "--num-workers", "0", "--seed", str(seed), "--log-format", "simple",
              "--log-interval", "25", "--no-epoch-checkpoints"]
    anchor = []
    if sn["method"] in ("magic_a", "magic_at"):
        anchor = ["--magic-anchor-interval", str(sn["anchor_interval"]),
                  "--magic-align-lambda", repr(sn["align_lambda"]),
                  "--magic-align-every", str(sn["align_every"]),
                  "--magic-align-warmup-epochs", "0"]
    train_sn = Command("fairseq-train", "fairseq_cli.train", [
        data, "--user-dir", USER_DIR, "--task", "magic", "--arch", "magic_supernet",
        "--criterion", "magic_alignment", "--encoder-layers", str(sn["layers"]),
        "--encoder-embed-dim", str(sn["hidden"]), "--magic-ops", sn["ops"],
        "--magic-method", sn["method"], "--magic-t-k", str(sn["t_k"]), *anchor,
        "--magic-path-log", os.path.join(d["supernet"], "paths.jsonl"),
        *samples, *adam(sn), *common,
        "--validate-interval-updates", str(sn["save_interval"]),
        "--save-interval-updates", str(sn["save_interval"]), "--keep-interval-updates", "1",
        "--save-dir", d["supernet"], *sn["extra"]])

    if se["strategy"] == "evolution":
        strat = ["--population", str(se["population"]), "--parents", str(se["parents"]),
                 "--mutation-num", str(se["mutation_num"]),
                 "--crossover-num", str(se["crossover_num"]),
                 "--generations", str(se["generations"])]
    else:
        strat = ["--samples", str(se["samples"])]
    bounds = []
    for k in ("min_params", "max_params", "min_flops", "max_flops"):
        if se[k] is not None:
            bounds += [f"--{k.replace('_', '-')}", str(se[k])]
    search = Command("magic-search", "fairseq_magic.cli.search", [
        ckpt, "--out", d["search"], "--strategy", se["strategy"], *strat, *bounds,
        "--max-batches", str(se["max_batches"]), "--batch-size", str(se["batch_size"]),
        "--seed", str(seed), "--device", cfg["device"], "--top-k", "5", "--no-progress",
        *se["extra"]])

    arch = {"best": spec or BEST, "anchor": "anchor"}.get(ex["arch"], ex["arch"])
    spm = ["--spm", cfg["spm"]] if cfg["spm"] else []
    export = Command("magic-export", "fairseq_magic.cli.export", [
        ckpt, "--arch", arch, "--out", d["export"], "--force", *spm])

    child = spec or (ex["arch"] if ex["arch"] not in ("best", "anchor") else None)
    child_ops = ",".join(dict.fromkeys(child.split(","))) if child else BEST + "_OPS"
    init = (["--finetune-from-model", os.path.join(d["export"], "model.pt")]
            if rt["init"] == "export" else [])
    retrain = Command("fairseq-train", "fairseq_cli.train", [
        data, "--user-dir", USER_DIR, "--task", "masked_lm", "--criterion", "masked_lm",
        "--arch", "magic_child", "--magic-arch", child or BEST,
        "--encoder-embed-dim", str(sn["hidden"]), "--magic-ops", child_ops,
        "--max-positions", str(cfg["tokens_per_sample"]), *samples, *adam(rt), *common,
        "--validate-interval-updates", str(rt["updates"]), "--save-dir", d["retrain"],
        *init, *rt["extra"]])
    model_dir = os.path.join(d["retrain"], "model")

    def package():
        """OUT/retrain/model/: the re-trained child as magic-glue takes it."""
        tmp = model_dir + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        shutil.copyfile(os.path.join(d["retrain"], "checkpoint_last.pt"),
                        os.path.join(tmp, "model.pt"))
        shutil.copyfile(os.path.join(d["export"], "dict.txt"), os.path.join(tmp, "dict.txt"))
        src = os.path.join(d["export"], "spm.model")
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(tmp, "spm.model"))
        shutil.rmtree(model_dir, ignore_errors=True)
        os.replace(tmp, model_dir)

    glue_flags = []
    for k, flag in (("lr", "--lr"), ("batch_size", "--batch-size"), ("epochs", "--epochs"),
                    ("max_update", "--max-update"),
                    ("max_train_examples", "--max-train-examples"),
                    ("max_dev_examples", "--max-dev-examples")):
        if gl[k] is not None:
            glue_flags += [flag, repr(gl[k]) if isinstance(gl[k], float) else str(gl[k])]
    glue_cmds = [Command("magic-glue", "fairseq_magic.cli.glue", [
        t, model_dir, gl["data"], d["glue"], *glue_flags, "--seed", str(seed), *cpu,
        *spm, *gl["extra"]]) for t in gl["tasks"]]

    fp_data = data_fingerprint(data) if os.path.isdir(data) else None
    spm_fp = files_fingerprint([cfg["spm"]]) if cfg["spm"] else None
    glue_files = []
    for t in gl["tasks"]:
        task = glue_core.get_task(t)
        glue_files += [os.path.join(gl["data"], t, f) for f in ("train.tsv",) + task.dev_files]
    glue_fp = (files_fingerprint(glue_files)
               if glue_files and all(os.path.isfile(p) for p in glue_files) else None)

    def search_resume():
        return ["--resume"] if os.path.isfile(os.path.join(d["search"], "search_state.json")) \
            else []

    return [
        Stage("supernet", out, [train_sn], [ckpt], {"data": fp_data},
              notes=[f"resumes from {ckpt} when interrupted"]),
        Stage("search", out, [search], [os.path.join(d["search"], "search.json")], {},
              prepare=search_resume),
        Stage("export", out, [export], [os.path.join(d["export"], "model.pt")],
              {"spm": spm_fp}),
        Stage("retrain", out, [retrain], [os.path.join(model_dir, "model.pt")], {},
              finish=package,
              notes=[f"then copies checkpoint_last.pt, the export's dict.txt and spm.model "
                     f"to {model_dir}/ (what magic-glue takes)"]),
        Stage("glue", out, glue_cmds,
              [os.path.join(d["glue"], t, "result.json") for t in gl["tasks"]],
              {"glue_data": glue_fp, "spm": spm_fp}),
    ]


# ---------------------------------------------------------------- running

PROGRESS = re.compile(r" \| (train_inner|train|valid) \| |anchor evaluation at update|"
                      r"done training in|Loaded checkpoint|generation \d+: best")
# what is log, not a result: fairseq's timestamped lines, python logging's
# default format, warnings
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \| |(INFO|WARNING|DEBUG):)")
NOISE = re.compile(r"Warning|warn\(|deprecat|tensorboardX|^See |^\s*$|super\(\).__init__|"
                   r"with torch.cuda.amp|self.delegate")


def shown(cmd: Command, line: str) -> bool:
    """Console lines: fairseq-train's progress only (its log holds the model
    and config dumps); of our tools, what they print as results."""
    if PROGRESS.search(line):
        return True
    if cmd.prog == "fairseq-train":
        return False
    return not LOG_LINE.match(line) and not NOISE.search(line)


def run_command(cmd: Command, log_path: str, verbose: bool, extra: List[str]) -> str:
    """Run ``cmd`` (python -m MODULE ARGV), its output appended to ``log_path``;
    progress lines (and the tools' own result lines) echoed. Returns the output."""
    env = dict(os.environ)
    env.pop("GLUE_ARGS", None)  # the config is magic-glue's only source of flags
    env["PYTHONUNBUFFERED"] = "1"
    argv = [sys.executable, "-m", cmd.module, *cmd.argv, *extra]
    print("$ " + " ".join(shlex.quote(a) for a in [cmd.prog, *cmd.argv, *extra]), flush=True)
    lines = []
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {cmd.shell()} {' '.join(extra)}\n")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env)
        for line in proc.stdout:
            log.write(line)
            lines.append(line)
            if verbose or shown(cmd, line):
                print("  " + line.rstrip(), flush=True)
        rc = proc.wait()
    text = "".join(lines)
    # Seen rarely: fairseq-train finished and saved, then the interpreter aborted
    # in a native thread's teardown; the checkpoint is whole, so the run counts.
    if rc != 0 and not (cmd.prog == "fairseq-train" and "done training in" in text):
        tail = "".join(lines[-15:])
        raise RuntimeError(f"{cmd.prog} exited {rc}; full output in {log_path}:\n{tail}")
    return text


def checkpoint_updates(path: str) -> int:
    """Updates a fairseq checkpoint was saved at (0 when unreadable)."""
    try:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=False)
        return int(state["optimizer_history"][-1]["num_updates"])
    except Exception:  # noqa: BLE001 - any unreadable file: start that stage again
        return 0


def plan(cfg: dict):
    """[(stage, action, hash, upstream_run)]: action is 'skip', 'resume' or 'run'
    as far as the markers on disk say; a stage after one that runs always runs."""
    stages = build_stages(cfg, found_spec(cfg))
    out = []
    upstream_hash, upstream_run, rerun = "", None, False
    for st in stages:
        h = st.hash(upstream_hash)
        m = st.read_marker()
        same = m is not None and m.get("hash") == h and m.get("upstream_run") == upstream_run
        if not rerun and same and m.get("status") == "done" and st.complete():
            action = "skip"
            upstream_run = m.get("run_id")
        else:
            action = "resume" if (not rerun and same and m.get("status") == "running") else "run"
            rerun = True
            upstream_run = f"<new run of {st.name}>"
        out.append((st, action, h, upstream_run))
        upstream_hash = h
    if any(a != "skip" for st, a, _, _ in out[:2]) and cfg["export"]["arch"] == "best":
        # a search that runs again finds its child anew: show the placeholder
        for (st, a, h, r), fresh in zip(list(out), build_stages(cfg, None)):
            st.commands = fresh.commands
    return out


def execute(cfg: dict, verbose: bool = False) -> None:
    os.makedirs(cfg["out"], exist_ok=True)
    upstream_hash, upstream_run = "", None
    for i, name in enumerate(STAGES):
        # commands that name the child are built once the search has run
        st = build_stages(cfg, found_spec(cfg))[i]
        h = st.hash(upstream_hash)
        m = st.read_marker()
        same = m is not None and m.get("hash") == h and m.get("upstream_run") == upstream_run
        head = f"== stage {i + 1}/{len(STAGES)} {name}"
        if name == "glue" and not st.commands:
            print(f"{head}: no glue.tasks configured, skipped", flush=True)
            break
        if same and m.get("status") == "done" and st.complete():
            print(f"{head}: done already ({st.marker}), skipped", flush=True)
            upstream_hash, upstream_run = h, m.get("run_id")
            continue
        resume = same and m.get("status") == "running"
        if not resume:
            shutil.rmtree(st.dir, ignore_errors=True)
            if os.path.exists(st.log):
                os.remove(st.log)
        print(f"{head}: {'resuming' if resume else 'running'} (log: {st.log})", flush=True)
        t0 = time.time()
        st.write_marker({"stage": name, "hash": h, "upstream_run": upstream_run,
                         "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                         "commands": [c.shell() for c in st.commands]})
        for cmd in st.commands:
            ckpt = os.path.join(st.dir, "checkpoint_last.pt")
            if cmd.prog == "fairseq-train" and resume and os.path.isfile(ckpt):
                # fairseq resumed at max-update trains one update more: the run
                # finished before the marker was written
                wanted = cfg[name]["updates"]
                if checkpoint_updates(ckpt) >= wanted:
                    print(f"  {ckpt} holds all {wanted} updates: not trained again",
                          flush=True)
                    continue
            extra = st.prepare() if (st.prepare and resume) else []
            if cmd.prog == "magic-export":
                os.makedirs(os.path.dirname(st.dir), exist_ok=True)
            run_command(cmd, st.log, verbose, extra)
        if st.finish:
            st.finish()
        if not st.complete():
            missing = [p for p in st.outputs if not os.path.exists(p)]
            raise RuntimeError(f"stage {name} ran but left no {', '.join(missing)}; "
                               f"see {st.log}")
        run_id = uuid.uuid4().hex[:12]
        st.write_marker({"stage": name, "hash": h, "upstream_run": upstream_run,
                         "run_id": run_id, "status": "done",
                         "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0)),
                         "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                         "seconds": round(time.time() - t0, 1),
                         "commands": [c.shell() for c in st.commands]})
        print(f"{head}: done in {time.time() - t0:.0f} s", flush=True)
        upstream_hash, upstream_run = h, run_id
    summarise(cfg)


def summarise(cfg: dict) -> None:
    out = cfg["out"]
    spec = found_spec(cfg)
    try:
        with open(os.path.join(out, "export", "export.json")) as f:
            exp = json.load(f)
        print(f"child: {exp['arch']} ({exp['params']:,} parameters, {exp['flops']:.3g} "
              f"FLOPs at {exp['flops_seq_len']} tokens)")
    except (OSError, ValueError, KeyError):
        if spec:
            print(f"child: {spec}")
    path = os.path.join(out, "glue", "results.md")
    if os.path.isfile(path):
        print(f"GLUE results: {path}")
        with open(path) as f:
            rows = [ln for ln in f if ln.startswith("| this child")]
        for ln in rows:
            print("  " + ln.rstrip())


def dry_run(cfg: dict) -> None:
    for i, (st, action, h, _) in enumerate(plan(cfg)):
        head = f"== stage {i + 1}/{len(STAGES)} {st.name}"
        if st.name == "glue" and not st.commands:
            print(f"{head}: no glue.tasks configured, would be skipped")
            continue
        what = {"skip": f"done already ({st.marker}): would be skipped",
                "resume": "interrupted: would resume", "run": "would run"}[action]
        print(f"{head}: {what} (inputs {h})")
        for c in st.commands:
            print("  " + c.shell())
        if any(BEST in a for c in st.commands for a in c.argv):
            print(f"  # {BEST}: the top child of the search (its search.json), known once it ran")
        for n in st.notes:
            print("  # " + n)


def get_parser():
    p = argparse.ArgumentParser(prog="magic-pipeline", description=__doc__,
                                epilog=schema_text(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="the pipeline's config (YAML, or JSON by its suffix)")
    p.add_argument("--dry-run", action="store_true",
                   help="print each stage's commands and whether it would run; run nothing")
    p.add_argument("--verbose", action="store_true",
                   help="echo every line the stages print (default: progress lines)")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    cfg = load_config(args.config)
    if args.dry_run:
        dry_run(cfg)
        return 0
    execute(cfg, args.verbose)
    return 0


def cli_main():
    try:
        run_main(main, "magic-pipeline")
    except RuntimeError as e:
        print(f"magic-pipeline: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        # the stage's marker still says "running": the next run resumes it
        print("magic-pipeline: interrupted; run the same command again to resume",
              file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli_main()
