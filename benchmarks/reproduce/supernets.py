"""Super-net units of the reproduction: train one super-net with fairseq-train,
score Table 1's children with it, and record one JSON line.

A unit is done iff its line is in ``results/supernets.jsonl``. An interrupted
unit resumes from its last checkpoint (fairseq's own resume, which this plugin
makes exact: sampler, anchor and RNG state are in the checkpoint), so at most
``SAVE_EVERY`` updates are redone.

Every super-net of Table 1 and of the k sweep trains under one recipe (the
ground truth's: 64 x 32-token samples, Adam, lr 1e-3, 100 warm-up updates,
polynomial decay, dropout 0.1, clip 1.0) for the same number of updates; the
methods differ only in the flags of ``METHOD_FLAGS``.
"""

import json
import os
import subprocess
import sys
import time
from argparse import Namespace

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RESULTS = os.path.join(HERE, "results")
SN_OUT = os.path.join(RESULTS, "supernets.jsonl")
SIM_DIR = os.path.join(RESULTS, "similarity")
USER_DIR = os.path.join(REPO, "fairseq_magic")

DEPTH = 12
UPDATES = 2000        # 2.5 x a ground-truth child's 800: each layer's operators see ~500 each
SAVE_EVERY = 250
FINETUNE_STEPS = 30   # Insight 2 of the "deeper insights" study, scaled to this budget
FINETUNE_LR = 1e-4
# Super-net scoring: 512 validation sentences, fixed masks (magic-rank's scorer).
SCORE_BATCHES, SCORE_BATCH_SIZE = 16, 32

# Alignment (MAGIC-A): lambda 0.5, blocks of 4 layers + the top one (layers 4, 8,
# 12 of 12), switched on after 3 epochs of plain MLM as the paper's warm start
# ("the first three epochs"; an epoch here is ~243 updates, so 3 of the run's
# ~8 epochs, against 3 of the paper's ~10); the anchor is validated every 100
# updates (2 candidates). A first run aligned from the first anchor (update
# 100, --magic-align-warmup-epochs 0) is kept as an ablation: METHOD_FLAGS'
# "*_nowarm" entries and the rows of kind "ablation_nowarm".
ALIGN = ["--magic-align-lambda", "0.5", "--magic-align-every", "4",
         "--magic-align-warmup-epochs", "3", "--magic-anchor-interval", "100"]
ALIGN_NOWARM = [f if f != "3" else "0" for f in ALIGN]
METHOD_FLAGS = {
    "spos": ["--magic-method", "spos", "--magic-align-lambda", "0"],
    "magic_t": ["--magic-method", "magic_t", "--magic-align-lambda", "0"],
    "magic_a": ["--magic-method", "magic_a", *ALIGN],
    "magic_at": ["--magic-method", "magic_at", *ALIGN],
    "magic_a_nowarm": ["--magic-method", "magic_a", *ALIGN_NOWARM],
    "magic_at_nowarm": ["--magic-method", "magic_at", *ALIGN_NOWARM],
    # Figure 2(b) / appendix A.2: SPOS paths aligned to the mean hidden states of
    # 4 random children (no anchor).
    "spos_avg": ["--magic-method", "spos", "--magic-align-lambda", "0.5",
                 "--magic-align-every", "4", "--magic-align-warmup-epochs", "1",
                 "--magic-align-target", "average", "--magic-align-avg-children", "4"],
}
METHODS = ["spos", "magic_t", "magic_a", "magic_at"]
TABLE1_SEEDS = [1, 2, 3]
K_SWEEP = [3, 6, 12]           # N/4, N/2, N; k = 1 is Table 1's magic_t
K_SEEDS = [1, 2]
SIM_HIDDEN = 96                # table6 needs hidden/2 divisible by 6 and 8
SIM_UPDATES = 1000
SIM_METHODS = ["spos", "spos_avg", "magic_a"]
SIM_M = [1, 2, 4]
SIM_SENTENCES = None           # magic-interference's default: 2,048 or the whole split (380 here)


def units():
    """Every super-net unit, in run order: Table 1 at seeds 1 and 2 (so a
    stopped run leaves whole seeds), the three small similarity super-nets,
    Table 1 at seed 3, then the k sweep."""
    def table1(seed):
        return [{"name": f"{m}-s{seed}", "kind": "table1", "method": m, "k": 1, "seed": seed,
                 "hidden": 64, "ops": "mha2d64,ffn,conv3,conv5", "updates": UPDATES,
                 "finetune": m in ("spos", "magic_at")} for m in METHODS]

    out = table1(1) + table1(2)
    for m in SIM_METHODS:
        out.append({"name": f"table6-{m}", "kind": "similarity", "method": m, "k": 1, "seed": 1,
                    "hidden": SIM_HIDDEN, "ops": "table6", "updates": SIM_UPDATES,
                    "finetune": False})
    out += table1(3)
    for seed in K_SEEDS:
        for k in K_SWEEP:
            out.append({"name": f"magic_t-k{k}-s{seed}", "kind": "ksweep", "method": "magic_t",
                        "k": k, "seed": seed, "hidden": 64, "ops": "mha2d64,ffn,conv3,conv5",
                        "updates": UPDATES, "finetune": False})
    return out


def read_done():
    done = {}
    if os.path.exists(SN_OUT):
        with open(SN_OUT) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    done[r["name"]] = r
    return done


def claim(u, workdir):
    """Claim a unit for this process (a lock file holding its pid); None when a
    live process holds it. A lock left by a dead process is taken over."""
    d = os.path.join(workdir, "supernets")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, u["name"] + ".lock")
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                with open(path) as f:
                    pid = int(f.read().strip() or 0)
                os.kill(pid, 0)
                return None
            except (ProcessLookupError, ValueError):
                os.unlink(path)
                continue
            except FileNotFoundError:
                continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return path
    return None


def method_flags(u):
    """The unit's method flags; the 1,000-update similarity super-nets warm
    start for 1 epoch (~24% of their run, as 3 of ~8 epochs for Table 1)."""
    flags = list(METHOD_FLAGS[u["method"]])
    if u["kind"] == "similarity" and "--magic-align-warmup-epochs" in flags:
        flags[flags.index("--magic-align-warmup-epochs") + 1] = "1"
    return flags


def train_argv(u, data, save_dir):
    return [
        data, "--user-dir", USER_DIR, "--task", "magic", "--arch", "magic_supernet",
        "--criterion", "magic_alignment", "--encoder-layers", str(DEPTH),
        "--encoder-embed-dim", str(u["hidden"]), "--magic-ops", u["ops"],
        "--magic-t-k", str(u["k"]),
        "--tokens-per-sample", "32", "--sample-break-mode", "complete",
        "--skip-invalid-size-inputs-valid-test", "--batch-size", "64",
        "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-6",
        "--weight-decay", "0.01", "--clip-norm", "1.0", "--lr", "1e-3",
        "--lr-scheduler", "polynomial_decay", "--warmup-updates", "100",
        "--total-num-update", str(u["updates"]), "--max-update", str(u["updates"]),
        "--dropout", "0.1", "--attention-dropout", "0.1", "--seed", str(u["seed"]),
        "--save-dir", save_dir, "--cpu", "--num-workers", "0", "--disable-validation",
        "--no-epoch-checkpoints", "--save-interval-updates", str(SAVE_EVERY),
        "--keep-interval-updates", "1", "--log-format", "simple", "--log-interval", "100",
        *method_flags(u),
    ]


def train(u, data, workdir):
    """Train (or resume) the unit's super-net; returns (checkpoint, seconds)."""
    save_dir = os.path.join(workdir, "supernets", u["name"])
    os.makedirs(save_dir, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    log = os.path.join(save_dir, "train.log")
    t = time.time()
    with open(log, "a") as f:
        rc = subprocess.run([sys.executable, "-m", "fairseq_cli.train",
                             *train_argv(u, data, save_dir)],
                            stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    ckpt = os.path.join(save_dir, "checkpoint_last.pt")
    with open(log) as f:
        tail = f.read()[-3000:]
    # fairseq sometimes aborts in a native thread's teardown after saving
    if rc != 0 and not ("done training in" in tail and os.path.exists(ckpt)):
        raise RuntimeError(f"fairseq-train for {u['name']} exited {rc}; see {log}:\n{tail}")
    return ckpt, time.time() - t


def score(ckpt, children, data, finetune_steps=0):
    """{spec: bits} with magic-rank's scorer (same batches for every child)."""
    from fairseq_magic.cli import rank

    args = Namespace(data=data, device="cpu", split="valid", max_batches=SCORE_BATCHES,
                     batch_size=SCORE_BATCH_SIZE, finetune_steps=finetune_steps,
                     finetune_lr=FINETUNE_LR, finetune_split="train", seed=0, no_progress=True)
    model, task = rank.check_checkpoint(ckpt, children, args)
    vals = rank.score_checkpoint(model, task, children, args, ckpt)
    return {c: float(v) for c, v in zip(children, np.asarray(vals))}


def anchor_summary(ckpt):
    """How the anchor ended (MAGIC-A/AT): its spec, last score and number of
    replacements, found wherever fairseq put the task's checkpoint dict."""
    import torch

    def find(obj, depth=0):
        if isinstance(obj, dict):
            a = obj.get("anchor")
            if isinstance(a, dict) and "replacements" in a:
                return a
            if depth < 4:
                for v in obj.values():
                    hit = find(v, depth + 1)
                    if hit is not None:
                        return hit
        return None

    st = torch.load(ckpt, map_location="cpu", weights_only=False)
    st.pop("model", None)
    st.pop("last_optimizer_state", None)
    a = find(st)
    return None if a is None or a.get("arch") is None else {
        "arch": a["arch"], "score": a.get("score"), "replacements": a.get("replacements")}


def interference(u, ckpt, data):
    from fairseq_magic.cli import interference as itf

    out = os.path.join(SIM_DIR, u["name"])
    rc = itf.main([ckpt, "--out", out, "--data", data, "--m", *map(str, SIM_M),
                   "--repeats", "10", "--seed", "0", "--no-progress",
                   *([] if SIM_SENTENCES is None else ["--sentences", str(SIM_SENTENCES)])])
    if rc not in (0, None):
        raise RuntimeError(f"magic-interference on {u['name']} exited {rc}")
    with open(os.path.join(out, "interference.json")) as f:
        return out, json.load(f)


def run_unit(u, children, data, workdir, load_avg):
    load0 = load_avg()
    ckpt, train_s = train(u, data, workdir)
    row = {"name": u["name"], "kind": u["kind"], "method": u["method"], "k": u["k"],
           "seed": u["seed"], "hidden": u["hidden"], "ops": u["ops"], "updates": u["updates"],
           "flags": method_flags(u), "train_s": round(train_s, 1),
           "load": [load0, load_avg()]}
    t = time.time()
    if u["kind"] == "similarity":
        out, res = interference(u, ckpt, data)
        row["interference_dir"] = os.path.relpath(out, HERE)
        row["similarity_by_m"] = {m: res["summary"]["by_m"][str(m)] for m in map(str, SIM_M)}
        row["heatmap"] = res["summary"].get("heatmap")
    else:
        row["scores"] = score(ckpt, children, data)
        if u["finetune"]:
            t2 = time.time()
            row["finetune"] = {"steps": FINETUNE_STEPS, "lr": FINETUNE_LR,
                               "scores": score(ckpt, children, data, FINETUNE_STEPS),
                               "seconds": round(time.time() - t2, 1)}
    row["anchor"] = anchor_summary(ckpt)
    row["analysis_s"] = round(time.time() - t, 1)
    line = json.dumps(row, sort_keys=True) + "\n"
    with open(SN_OUT, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
    return row
