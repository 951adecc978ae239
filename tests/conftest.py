"""Shared fixtures: a tiny fairseq data-bin made from text generated here."""

import contextlib
import collections
import json
import os
import random
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(REPO, "fairseq_magic")

# Small enough that a CPU update takes milliseconds, big enough that every
# operator kind (attention heads of 16, FFN, conv) is exercised.
TINY_MODEL = [
    "--encoder-layers", "4", "--encoder-embed-dim", "32",
    "--magic-ops", "mha2d32,ffn,conv3,conv5",
]


def make_text(path, n_lines, seed):
    """Sentences from a toy grammar: enough structure for the MLM loss to fall."""
    rng = random.Random(seed)
    subj = ["the king", "a man", "the people", "his son", "the lord", "my servant"]
    verb = ["spake unto", "went to", "saw", "blessed", "smote", "gave bread to"]
    obj = ["the city", "israel", "the priest", "her daughter", "the house", "them"]
    with open(path, "w") as f:
        for i in range(n_lines):
            words = [rng.choice(subj), rng.choice(verb), rng.choice(obj)]
            if rng.random() < 0.5:
                words += ["and", rng.choice(verb), rng.choice(obj)]
            f.write(" ".join(words) + " .\n")
            if i % 20 == 19:
                f.write("\n")


def fairseq_preprocess(*argv):
    """fairseq-preprocess ARGV in this process, with fairseq's log left as it is
    (tests read training logs later in the same process)."""
    from fairseq_magic.cli.glue import fairseq_preprocess as preprocess

    preprocess(*argv, quiet=False)


def preprocess(text_dir, dest):
    fairseq_preprocess("--only-source", "--trainpref", os.path.join(text_dir, "train.txt"),
                       "--validpref", os.path.join(text_dir, "valid.txt"),
                       "--destdir", dest, "--workers", "1")


@pytest.fixture(autouse=True)
def _hydra_version_base_restored():
    """A test that composes configs with hydra's own API (``version_base=...``)
    sets hydra's process-wide version base; fairseq's config conversion (its
    ``hydra.experimental.initialize``) then raises ImportError in every later
    in-process test. Put it back after each test."""
    from hydra.version import VersionBase

    base = VersionBase.instance().getbase()
    yield
    VersionBase.instance().version_base = base


@pytest.fixture(scope="session")
def data_bin(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    make_text(root / "train.txt", 1200, 0)
    make_text(root / "valid.txt", 100, 1)
    dest = str(root / "data-bin")
    preprocess(str(root), dest)
    return dest


def train_args(data, save_dir, *extra, updates=10, arch="magic_supernet", model=TINY_MODEL):
    """A complete fairseq-train argument list for the tiny model on CPU.
    ``model``: the model-size flags (pass ``()`` to keep a preset's own)."""
    return [
        data, "--user-dir", USER_DIR, "--task", "magic", "--arch", arch,
        "--criterion", "magic_alignment", *model,
        "--tokens-per-sample", "32", "--sample-break-mode", "none",
        "--batch-size", "8", "--optimizer", "adam", "--adam-betas", "(0.9,0.999)",
        "--weight-decay", "0.01", "--lr", "1e-3", "--lr-scheduler", "polynomial_decay",
        "--warmup-updates", "2", "--total-num-update", "100", "--max-update", str(updates),
        "--save-dir", str(save_dir), "--cpu", "--num-workers", "0", "--seed", "3",
        "--log-format", "simple", "--log-interval", "1", "--no-epoch-checkpoints",
        "--disable-validation", "--save-interval-updates", "1000",
        *extra,
    ]


def run_train(args, env=None, check=True, timeout=600):
    """Run fairseq-train in a subprocess (a fresh process: for runs that must
    show the real command's behaviour; ``train_in_process`` is faster)."""
    e = dict(os.environ)
    e.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"})
    e.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "fairseq_cli.train", *args],
                          capture_output=True, text=True, env=e, timeout=timeout)
    # Seen rarely: the run finished and saved, then the interpreter aborted at
    # exit in a native thread's teardown (fairseq/torch, not this plugin).
    teardown_abort = (proc.returncode in (-6, 134) and "done training in" in proc.stdout + proc.stderr
                      and "terminate called without an active exception" in proc.stderr)
    if check and proc.returncode != 0 and not teardown_abort:
        raise AssertionError(f"fairseq-train failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


class TrainResult:
    """What run_train returns: the exit status and the captured output."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@contextlib.contextmanager
def fairseq_run_in_process():
    """Run fairseq's command-line code in this process: yields a StringIO that
    collects its log (fairseq logs through ``logging``, progress lines
    included, in fairseq-train's format) and stdout. fairseq-train reseeds the
    global RNGs and some scripts set sys.argv: both are restored afterwards."""
    import io
    import logging

    import numpy as np
    import torch

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(name)s | "
                                           "%(message)s"))
    root = logging.getLogger()
    # Code run earlier in this process may have quietened fairseq's loggers
    # (the benchmarks set them to WARNING): let INFO through while it runs.
    names = ("fairseq", "fairseq_cli", "fairseq_magic", "train", "train_inner", "valid")
    loggers = [root] + [logging.getLogger(n) for n in names] + [
        lg for n, lg in logging.root.manager.loggerDict.items()
        if isinstance(lg, logging.Logger) and n.split(".")[0] in names]
    saved = [(lg, lg.level, lg.disabled, lg.propagate) for lg in loggers]
    disabled = logging.root.manager.disable
    logging.disable(logging.NOTSET)
    for lg in loggers[1:]:
        lg.setLevel(logging.NOTSET)
        lg.disabled, lg.propagate = False, True
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    argv, py_state, np_state = list(sys.argv), random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(out):
            yield out
    finally:
        root.removeHandler(handler)
        for lg, level, off, propagate in saved:
            lg.setLevel(level)
            lg.disabled, lg.propagate = off, propagate
        logging.disable(disabled)
        sys.argv[:] = argv
        random.setstate(py_state)
        np.random.set_state(np_state)


def train_in_process(args, check=True):
    """fairseq-train ARGS in this process (no interpreter start, no fairseq
    import: seconds saved per run). ``stdout`` holds its log; an exception is a
    non-zero ``returncode`` with the traceback in ``stderr``."""
    import traceback

    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.distributed import utils as distributed_utils
    from fairseq_cli import train as fairseq_train

    code, err = 0, ""
    with fairseq_run_in_process() as out:
        try:
            parsed = options.parse_args_and_arch(options.get_training_parser(),
                                                 [str(a) for a in args])
            distributed_utils.call_main(convert_namespace_to_omegaconf(parsed),
                                        fairseq_train.main)
        except (Exception, SystemExit):
            code, err = 1, traceback.format_exc()
    if check and code:
        raise AssertionError(f"fairseq-train failed in-process:\n{out.getvalue()[-3000:]}\n"
                             f"{err[-6000:]}")
    return TrainResult(code, out.getvalue(), err)


def training_cfg(data, *extra, arch="magic_supernet", model=TINY_MODEL):
    """fairseq-train's full config for ``train_args(data, ..., *extra)``."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser, train_args(data, "/nonexistent-unused", *extra, arch=arch, model=model))
    return convert_namespace_to_omegaconf(args)


def build_in_process(data, *extra, arch="magic_supernet", model=TINY_MODEL, cfg=None):
    """Build (task, model, criterion) exactly as fairseq-train would, in-process.
    A bad flag raises here (MagicConfigError) where fairseq-train would exit."""
    import torch
    from fairseq import tasks

    cfg = cfg if cfg is not None else training_cfg(data, *extra, arch=arch, model=model)
    task = tasks.setup_task(cfg.task)
    # Initial weights from --seed, as fairseq-train draws them, without
    # changing the test process's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.common.seed)
        net = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    return task, net, criterion


def fairseq_optimizer(cfg, model):
    """The optimizer fairseq-train builds from ``cfg`` (Adam here), at lr cfg.lr[0]."""
    from fairseq import optim

    return optim.build_optimizer(cfg.optimizer, [p for p in model.parameters()
                                                 if p.requires_grad])


def train_update(task, model, criterion, optimizer, sample, update_num):
    """One update as fairseq's Trainer runs it: zero_grad, the task's train_step
    (forward + backward), the task's optimizer_step. ``update_num`` is 0-based
    (fairseq's count of finished updates). Returns the logging output."""
    optimizer.zero_grad()
    _, _, log = task.train_step(sample, model, criterion, optimizer, update_num)
    task.optimizer_step(optimizer, model, update_num)
    return log


def reference_loss_bits(model, spec, batches):
    """MLM loss (bits per masked token) of child ``spec`` over ``batches``,
    computed here independently of fairseq_magic.evaluation: eval mode, logits
    of EVERY position (no masked-token projection), log-softmax in float64,
    masked positions picked afterwards."""
    import math

    import torch

    pad = model.encoder.dictionary.pad()
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for sample in batches:
            tokens, target = sample["net_input"]["src_tokens"], sample["target"]
            x, _ = model.encoder.sentence_encoder(tokens, path=str(spec).split(","))
            logits = model.encoder.lm_head(x)
            masked = target.ne(pad)
            logp = torch.log_softmax(logits.double(), dim=-1)[masked]
            total -= logp.gather(-1, target[masked].unsqueeze(-1)).sum().item()
            count += int(masked.sum())
    model.train(was_training)
    return total / count / math.log(2)


class CliResult(collections.namedtuple("CliResult", "returncode stdout stderr")):
    """What a console script did: unpacks as (exit code, stdout, stderr)."""

    @property
    def json(self):
        return json.loads(self.stdout)


def cli_in_process(module, prog, *argv):
    """Run a console script's ``cli_main`` in this process (a subprocess spends
    seconds importing fairseq): a CliResult (exit code, stdout, stderr)."""
    import contextlib
    import importlib
    import io

    cli = importlib.import_module(module)
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = [prog, *map(str, argv)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.cli_main()
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = saved
    return CliResult(code, out.getvalue(), err.getvalue())


def run_as_console_script(module, prog, *argv):
    """What the installed console script ``prog`` and ``python -m module`` run,
    in this process: the entry point must be ``module:cli_main``, and the
    module runs as ``__main__``. Returns (exit code, stdout, stderr)."""
    import io
    import runpy
    import warnings
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get(prog) == f"{module}:cli_main", scripts.get(prog)
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = [prog, *map(str, argv)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings():
            # runpy notes the module was imported before: the tests did, not the tool
            warnings.filterwarnings("ignore", "'.*' found in sys.modules", RuntimeWarning)
            runpy.run_module(module, run_name="__main__")
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = saved
    return code, out.getvalue(), err.getvalue()


def masked_batch(task, n=4, seed=0):
    """A real masked-LM batch from the task's valid split."""
    from fairseq_magic.evaluation import fixed_batches

    return fixed_batches(task, "valid", max_batches=1, batch_size=n)[0]


@pytest.fixture(scope="session")
def trained_supernet(data_bin, tmp_path_factory):
    """Path of a tiny SPOS super-net checkpoint trained for 5 updates, shared by
    every test that only READS it (scoring, search, export, analysis). A test
    that writes next to it or changes it must copy it first."""
    d = tmp_path_factory.mktemp("trained_supernet")
    train_in_process(train_args(data_bin, d, updates=5))
    return str(d / "checkpoint_last.pt")


class Scripted:
    """A scorer for the anchor rules: scorer(arch) -> table[spec] (else
    ``default``; no default: KeyError). Tests edit ``table`` between calls to
    simulate training moving the shared weights. Records every call."""

    def __init__(self, table=None, default=None):
        self.table = dict(table or {})
        self.default = default
        self.calls = []

    def __call__(self, arch):
        self.calls.append(str(arch))
        if str(arch) in self.table:
            return self.table[str(arch)]
        if self.default is None:
            raise KeyError(str(arch))
        return self.default
