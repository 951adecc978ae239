"""magic-ground-truth: train children standalone from scratch and record their losses.

    magic-ground-truth --data DATA_BIN (--children FILE | --arch SPEC ...)
        --seeds 1 2 3 --out gt.jsonl --workdir DIR [recipe flags]
        [--jobs J] [--threads T] [--device cpu|cuda] [-- extra fairseq-train args]

Each (child, seed) unit trains ``--arch magic_child --magic-arch SPEC`` with
fairseq (``--task masked_lm``) from scratch under one fixed recipe, in its own
process, then scores the final model on a FIXED validation subset and appends
one JSON line to ``--out``::

    {"arch": SPEC, "seed": S, "loss": X, "status": "ok", "loss_at": {...},
     "updates": U, "params": P, "train_s": ..., "updates_per_s": ...,
     "wall_s": ..., "load": ..., "recipe": HASH, ...}

``loss`` is the masked-LM loss in bits per masked token (lower is better). A
unit whose training diverges (NaN/Inf) gets ``"status": "failed"``, ``"loss":
null`` and the reason: it is recorded, not dropped.

Scoring. Every unit is scored on the same tokens with the same masks: the
``--valid-subset`` split is masked with ``--valid-seed`` (plus one more mask
seed per extra ``--valid-passes``), never with the unit's training seed, and
scored with ``fairseq_magic.evaluation`` (the code that scores super-net
children). fairseq's own validation loss would mask the split with each run's
training seed, so two seeds of one child would be scored on different masked
positions: noise a ground truth does not need. ``--score-at`` also scores
checkpoints saved at earlier updates of the same run (a loss-vs-budget curve;
the learning-rate schedule is the full run's, not a shorter run's).

Resume. A unit is done iff its line is in ``--out`` (written with one write
call, then flushed and fsynced). Re-running the same command trains only the
missing units; a unit that was interrupted is cleaned and retrained from
scratch. An ``--out`` written under a different recipe (any flag that changes
training or scoring, or different data) is refused: the recipe is hashed into
every line, and ``OUT.recipe.json`` keeps the recipe itself.

Parallelism. ``--jobs J`` runs J units at once, each with ``--threads``
(default: CPU cores / J) threads; with ``--device cuda`` the jobs share the
visible GPUs round-robin through CUDA_VISIBLE_DEVICES. Results do not depend on
J; they can depend on the thread count (float summation order) and the device.
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from . import run_main
from ..core.space import MagicConfigError, parse_arch_spec

PROG = "magic-ground-truth"
USER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE_VERSION = 1


# ---------------------------------------------------------------- arguments

def get_parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("units")
    g.add_argument("--data", required=True, help="fairseq data-bin (masked-LM, --only-source)")
    g.add_argument("--children", help="file of child specs: one per line, or JSON lines "
                   "with an \"arch\" field; blank lines and lines starting with # are skipped")
    g.add_argument("--arch", action="append", default=[], help="a child spec (repeatable)")
    g.add_argument("--seeds", type=int, nargs="+", default=[1], help="training seeds")
    g.add_argument("--out", required=True, help="ground-truth JSON lines file (appended)")
    g.add_argument("--workdir", required=True, help="one sub-directory per unit")
    r = p.add_argument_group("recipe (all of it is hashed into every line)")
    r.add_argument("--encoder-embed-dim", type=int, default=128, help="hidden size")
    r.add_argument("--updates", type=int, default=1000, help="training updates per unit")
    r.add_argument("--lr", type=float, default=5e-4, help="peak learning rate")
    r.add_argument("--warmup", type=int, default=100, help="linear warm-up updates")
    r.add_argument("--batch-size", type=int, default=64, help="sentences per update")
    r.add_argument("--tokens-per-sample", type=int, default=32, help="max tokens per sample")
    r.add_argument("--sample-break-mode", default="complete",
                   help="fairseq --sample-break-mode (complete: whole sentences packed up to "
                   "--tokens-per-sample; longer ones are skipped; fairseq's eos mode fails under numpy 2)")
    r.add_argument("--dropout", type=float, default=0.1, help="dropout")
    r.add_argument("--attention-dropout", type=float, default=0.1, help="attention dropout")
    r.add_argument("--weight-decay", type=float, default=0.01, help="Adam weight decay")
    r.add_argument("--adam-betas", default="(0.9,0.98)", help="Adam betas")
    r.add_argument("--clip-norm", type=float, default=1.0, help="gradient clipping norm")
    r.add_argument("--score-at", type=int, nargs="*", default=[],
                   help="also score the checkpoints of these earlier updates")
    r.add_argument("--valid-subset", default="valid", help="split every unit is scored on")
    r.add_argument("--valid-seed", type=int, default=1,
                   help="masking seed of the scoring subset (not the training seed)")
    r.add_argument("--valid-passes", type=int, default=4,
                   help="score the subset this many times with mask seeds valid-seed, "
                   "valid-seed+1, ...: more masked positions, same for every unit")
    r.add_argument("--valid-batch-size", type=int, default=64, help="sentences per scoring batch")
    x = p.add_argument_group("execution (not part of the recipe)")
    x.add_argument("--jobs", type=int, default=1, help="units trained at once")
    x.add_argument("--threads", type=int, default=0,
                   help="threads per unit (default: CPU cores / jobs, at least 1)")
    x.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where units train")
    x.add_argument("--keep-checkpoints", action="store_true",
                   help="keep each unit's final checkpoint (default: deleted after scoring)")
    x.add_argument("--max-units", type=int, default=0,
                   help="stop after training this many units (0 = all); rerun to continue")
    return p


def split_argv(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Our flags, and the fairseq-train flags after ``--`` (passed through)."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def read_children(path: str) -> List[str]:
    if not os.path.isfile(path):
        raise MagicConfigError(f"--children {path!r}: file not found")
    specs = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if text.startswith("{"):
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    raise MagicConfigError(f"--children {path}:{n}: bad JSON ({e})") from e
                if not isinstance(obj, dict) or not isinstance(obj.get("arch"), str):
                    raise MagicConfigError(
                        f"--children {path}:{n}: expected an object with a string \"arch\"")
                text = obj["arch"]
            specs.append(text)
    return specs


def validate(args, extra: List[str]) -> List[str]:
    """Every check that can fail, before any work starts. Returns the child specs."""
    specs = list(args.arch)
    if args.children:
        specs = read_children(args.children) + specs
    if not specs:
        raise MagicConfigError("no children: give --children FILE or --arch SPEC")
    canonical = []
    for s in specs:
        try:
            canonical.append(str(parse_arch_spec(s, args.encoder_embed_dim)))
        except MagicConfigError as e:
            raise MagicConfigError(f"child {s!r}: {e}") from e
    dup = sorted({c for c in canonical if canonical.count(c) > 1})
    if dup:
        raise MagicConfigError(f"child {dup[0]!r} is listed more than once")
    if len(set(args.seeds)) != len(args.seeds):
        raise MagicConfigError(f"--seeds {args.seeds}: seeds repeat")
    positive = {"--encoder-embed-dim": args.encoder_embed_dim, "--updates": args.updates,
                "--batch-size": args.batch_size, "--tokens-per-sample": args.tokens_per_sample,
                "--valid-passes": args.valid_passes, "--valid-batch-size": args.valid_batch_size,
                "--jobs": args.jobs}
    for flag, v in positive.items():
        if v < 1:
            raise MagicConfigError(f"{flag} {v}: expected >= 1")
    if args.threads < 0 or args.max_units < 0 or args.warmup < 0:
        raise MagicConfigError("--threads, --max-units and --warmup must be >= 0")
    if not args.lr > 0:
        raise MagicConfigError(f"--lr {args.lr}: expected > 0")
    bad = [u for u in args.score_at if not 0 < u < args.updates]
    if bad:
        raise MagicConfigError(
            f"--score-at {bad[0]}: expected an update count between 1 and --updates - 1 "
            f"({args.updates - 1})")
    if not os.path.isfile(os.path.join(args.data, "dict.txt")):
        raise MagicConfigError(f"--data {args.data!r}: no dict.txt (not a fairseq data-bin)")
    for split in ("train", args.valid_subset):
        if not os.path.isfile(os.path.join(args.data, split + ".bin")):
            raise MagicConfigError(f"--data {args.data!r}: split {split!r} not found")
    forbidden = {"--seed", "--save-dir", "--arch", "--magic-arch", "--max-update", "--task",
                 "--user-dir", "--cpu", "--device-id"}
    clash = [a for a in extra if a.split("=")[0] in forbidden]
    if clash:
        raise MagicConfigError(
            f"extra fairseq argument {clash[0]!r}: {PROG} sets it itself")
    if args.device == "cuda" and not gpu_list():
        raise MagicConfigError("--device cuda: no CUDA device is visible")
    return canonical


# ---------------------------------------------------------------- recipe

def data_fingerprint(data: str, valid_subset: str) -> dict:
    """Identifies the corpus by content, not path (the same data-bin copied
    elsewhere resumes; a re-made one with other text does not)."""
    h = hashlib.sha256()
    with open(os.path.join(data, "dict.txt"), "rb") as f:
        h.update(f.read())
    sizes = {}
    for split in sorted({"train", valid_subset}):
        for ext in ("bin", "idx"):
            p = os.path.join(data, f"{split}.{ext}")
            sizes[f"{split}.{ext}"] = os.path.getsize(p)
    with open(os.path.join(data, f"{valid_subset}.bin"), "rb") as f:
        h.update(f.read())
    return {"dict_and_valid_sha256": h.hexdigest()[:16], "sizes": sizes}


def recipe_of(args, extra: List[str]) -> dict:
    return {
        "version": RECIPE_VERSION,
        "data": data_fingerprint(args.data, args.valid_subset),
        "encoder_embed_dim": args.encoder_embed_dim, "updates": args.updates,
        "lr": args.lr, "warmup": args.warmup, "batch_size": args.batch_size,
        "tokens_per_sample": args.tokens_per_sample,
        "sample_break_mode": args.sample_break_mode, "dropout": args.dropout,
        "attention_dropout": args.attention_dropout, "weight_decay": args.weight_decay,
        "adam_betas": args.adam_betas, "clip_norm": args.clip_norm,
        "score_at": sorted(set(args.score_at)), "valid_subset": args.valid_subset,
        "valid_seed": args.valid_seed, "valid_passes": args.valid_passes,
        "valid_batch_size": args.valid_batch_size, "extra_fairseq_args": list(extra),
    }


def recipe_hash(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def fairseq_argv(args, extra: List[str], spec: str, seed: int, save_dir: str) -> List[str]:
    """The fairseq-train command line of one unit (also what the scorer parses)."""
    argv = [
        os.path.abspath(args.data), "--user-dir", USER_DIR, "--task", "masked_lm",
        "--criterion", "masked_lm", "--arch", "magic_child", "--magic-arch", spec,
        "--encoder-embed-dim", str(args.encoder_embed_dim),
        "--tokens-per-sample", str(args.tokens_per_sample),
        "--sample-break-mode", args.sample_break_mode,
        "--skip-invalid-size-inputs-valid-test",
        "--batch-size", str(args.batch_size), "--optimizer", "adam",
        "--adam-betas", args.adam_betas, "--adam-eps", "1e-6",
        "--weight-decay", str(args.weight_decay), "--clip-norm", str(args.clip_norm),
        "--lr", str(args.lr), "--lr-scheduler", "polynomial_decay",
        "--warmup-updates", str(args.warmup), "--total-num-update", str(args.updates),
        "--max-update", str(args.updates), "--dropout", str(args.dropout),
        "--attention-dropout", str(args.attention_dropout),
        "--seed", str(seed), "--save-dir", save_dir, "--num-workers", "0",
        "--disable-validation", "--no-epoch-checkpoints", "--no-save-optimizer-state",
        "--log-format", "simple", "--log-interval", "100",
    ]
    if args.score_at:
        argv += ["--save-interval-updates", str(math.gcd(*args.score_at))]
    if args.device == "cpu":
        argv.append("--cpu")
    return argv + list(extra)


# ---------------------------------------------------------------- out file

def read_out(path: str, want_hash: str, recipe: dict) -> Dict[Tuple[str, int], dict]:
    """Finished units of ``path``; refuses a file written under another recipe."""
    done = {}
    if not os.path.exists(path):
        return done
    with open(path, "rb") as f:
        data = f.read()
    if data and not data.endswith(b"\n"):
        # Only a crash inside the single write of a line can leave this; that
        # unit is not done, so drop the fragment and retrain it.
        cut = data.rfind(b"\n") + 1
        print(f"{PROG}: dropping an incomplete last line of {path}", file=sys.stderr)
        with open(path, "r+b") as f:
            f.truncate(cut)
            f.flush()
            os.fsync(f.fileno())
        data = data[:cut]
    for n, line in enumerate(data.decode().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise MagicConfigError(f"--out {path}:{n}: not a JSON line ({e})") from e
        if row.get("recipe") != want_hash:
            raise MagicConfigError(
                f"--out {path}: line {n} was written with recipe {row.get('recipe')!r}, "
                f"this run's recipe is {want_hash!r}{recipe_diff(path, recipe)}; "
                "use the same flags and data to resume, or another --out")
        done[(row["arch"], int(row["seed"]))] = row
    return done


def recipe_path(out: str) -> str:
    return out + ".recipe.json"


def recipe_diff(out: str, recipe: dict) -> str:
    try:
        with open(recipe_path(out)) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return ""
    keys = sorted(k for k in set(old) | set(recipe) if old.get(k) != recipe.get(k))
    return " (differs in: " + ", ".join(
        f"{k} {old.get(k)!r} -> {recipe.get(k)!r}" for k in keys) + ")" if keys else ""


def write_recipe(out: str, recipe: dict, rhash: str) -> None:
    path = recipe_path(out)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({**recipe, "hash": rhash}, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def append_line(path: str, row: dict) -> None:
    """One line, one write call, then fsync: a line is either whole or absent."""
    data = (json.dumps(row, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- running units

def gpu_list() -> List[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def unit_dirname(spec: str, seed: int) -> str:
    return f"u{hashlib.sha1(spec.encode()).hexdigest()[:12]}-s{seed}"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class Unit:
    def __init__(self, spec, seed, udir, proc, log, started):
        self.spec, self.seed, self.udir = spec, seed, udir
        self.proc, self.log, self.started = proc, log, started


def launch(args, extra, spec, seed, slot, threads, gpus) -> Unit:
    udir = os.path.join(args.workdir, unit_dirname(spec, seed))
    if os.path.exists(udir):
        shutil.rmtree(udir)  # an interrupted earlier attempt: retrain from scratch
    os.makedirs(udir)
    job = {
        "spec": spec, "seed": seed,
        "train_argv": fairseq_argv(args, extra, spec, seed, os.path.join(udir, "ckpt")),
        "score_at": sorted(set(args.score_at)), "updates": args.updates,
        "valid_subset": args.valid_subset, "valid_seed": args.valid_seed,
        "valid_passes": args.valid_passes, "valid_batch_size": args.valid_batch_size,
        "device": args.device, "keep_checkpoints": args.keep_checkpoints,
        "result": os.path.join(udir, "result.json"),
    }
    with open(os.path.join(udir, "unit.json"), "w") as f:
        json.dump(job, f, indent=2)
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "PYTHONHASHSEED": "0"})
    if args.device == "cuda":
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    log = open(os.path.join(udir, "train.log"), "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fairseq_magic.cli.ground_truth", "_unit",
         os.path.join(udir, "unit.json")],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return Unit(spec, seed, udir, proc, log, time.time())


def stop_all(running: List[Unit]) -> None:
    for u in running:
        try:
            os.killpg(u.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for u in running:
        try:
            u.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(u.proc.pid, signal.SIGKILL)
            u.proc.wait()
        u.log.close()


def log_tail(udir: str, n: int = 3000) -> str:
    try:
        with open(os.path.join(udir, "train.log")) as f:
            return f.read()[-n:]
    except OSError:
        return ""


def finish(u: Unit, rhash: str, args) -> Optional[dict]:
    """The out-file row of a finished unit, or None when it crashed (not a divergence)."""
    u.log.close()
    try:
        with open(os.path.join(u.udir, "result.json")) as f:
            res = json.load(f)
    except (OSError, ValueError):
        return None
    row = {"arch": u.spec, "seed": u.seed, "recipe": rhash, "device": args.device,
           "wall_s": round(time.time() - u.started, 2)}
    row.update(res)
    return row


def fmt_row(row: dict, i: int, total: int) -> str:
    head = f"[{i}/{total}] seed {row['seed']} {row['arch']}"
    if row["status"] != "ok":
        return f"{head}: FAILED ({row['reason']}) after {row['wall_s']:.0f}s"
    at = "".join(f" @{k}={v:.3f}" for k, v in sorted(row["loss_at"].items(), key=lambda kv: int(kv[0])))
    return (f"{head}: loss {row['loss']:.3f} bits{at}; {row['updates_per_s']:.2f} upd/s, "
            f"{row['wall_s']:.0f}s wall, load {row['load']:.2f}")


def run(args, extra: List[str]) -> int:
    specs = validate(args, extra)
    recipe = recipe_of(args, extra)
    rhash = recipe_hash(recipe)
    done = read_out(args.out, rhash, recipe)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    os.makedirs(args.workdir, exist_ok=True)
    write_recipe(args.out, recipe, rhash)
    units = [(c, s) for s in args.seeds for c in specs if (c, s) not in done]
    if args.max_units:
        units = units[:args.max_units]
    total = len(units)
    threads = args.threads or max(1, cpu_count() // args.jobs)
    gpus = gpu_list() if args.device == "cuda" else []
    print(f"{PROG}: recipe {rhash}; {len(done)} unit(s) already done, {total} to train "
          f"with {args.jobs} job(s) x {threads} thread(s) on {args.device}", flush=True)
    pending = list(units)
    running: List[Unit] = []
    # Units run in their own sessions (so a unit can be stopped as a group):
    # a SIGTERM to us must stop them too, or an orphan would keep writing into
    # a directory the next run cleans.
    previous = None
    if threading_main():
        previous = signal.signal(signal.SIGTERM, _sigterm)
    free_slots = list(range(args.jobs))
    slot_of = {}
    finished = 0
    try:
        while pending or running:
            while pending and free_slots:
                spec, seed = pending.pop(0)
                slot = free_slots.pop(0)
                u = launch(args, extra, spec, seed, slot, threads, gpus)
                slot_of[id(u)] = slot
                running.append(u)
            time.sleep(0.2)
            for u in [u for u in running if u.proc.poll() is not None]:
                running.remove(u)
                free_slots.append(slot_of.pop(id(u)))
                row = finish(u, rhash, args)
                if row is None:
                    stop_all(running)
                    running = []
                    print(f"{PROG}: error: unit seed {u.seed} {u.spec} crashed "
                          f"(exit {u.proc.returncode}); log {u.udir}/train.log:\n"
                          f"{log_tail(u.udir)}", file=sys.stderr)
                    return 1
                append_line(args.out, row)
                finished += 1
                print(fmt_row(row, finished, total), flush=True)
    except KeyboardInterrupt:
        stop_all(running)
        print(f"{PROG}: interrupted; {finished} unit(s) written; rerun to continue",
              file=sys.stderr)
        return 130
    except BaseException:
        stop_all(running)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _sigterm(signum, frame):
    raise KeyboardInterrupt


# ---------------------------------------------------------------- one unit (child process)

def _atomic_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def _with_seed(argv: List[str], seed: int) -> List[str]:
    argv = list(argv)
    argv[argv.index("--seed") + 1] = str(seed)
    return argv


def _scoring_batches(job):
    """The fixed scoring subset: the same tokens and masks for every unit."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    from ..evaluation import fixed_batches

    batches, cfg = [], None
    for p in range(job["valid_passes"]):
        parser = options.get_training_parser()
        a = options.parse_args_and_arch(
            parser, _with_seed(job["train_argv"], job["valid_seed"] + p))
        cfg = convert_namespace_to_omegaconf(a)
        task = tasks.setup_task(cfg.task)
        batches += fixed_batches(task, job["valid_subset"], max_batches=10 ** 9,
                                 batch_size=job["valid_batch_size"], device=job["device"])
    return task, cfg, batches


def _score(job, checkpoints: Dict[int, str]) -> Tuple[Dict[int, float], int, int]:
    import torch
    from fairseq import checkpoint_utils

    from ..evaluation import child_loss_sums

    task, cfg, batches = _scoring_batches(job)
    model = task.build_model(cfg.model)
    params = sum(p.numel() for p in model.parameters())
    if job["device"] == "cuda":
        model.cuda()
    losses, count = {}, 0
    for upd, path in sorted(checkpoints.items()):
        state = checkpoint_utils.load_checkpoint_to_cpu(path)
        model.load_state_dict(state["model"], strict=True)
        total, count = child_loss_sums(model, job["spec"], batches)
        losses[upd] = total / max(count, 1) / math.log(2)
        del state
        if job["device"] == "cuda":
            torch.cuda.empty_cache()
    return losses, params, count


def _remove_checkpoints(save_dir: str, keep: Optional[str]) -> None:
    import glob

    for path in glob.glob(os.path.join(save_dir, "*.pt")):
        if path != keep:
            os.remove(path)


def unit_main(job_path: str) -> int:
    """Train one child with fairseq in this process, score it, write result.json."""
    import glob

    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.distributed import utils as distributed_utils
    import fairseq_cli.train as fairseq_train

    with open(job_path) as f:
        job = json.load(f)
    parser = options.get_training_parser()
    cfg = convert_namespace_to_omegaconf(
        options.parse_args_and_arch(parser, job["train_argv"]))
    save_dir = cfg.checkpoint.save_dir
    t0 = time.time()
    try:
        distributed_utils.call_main(cfg, fairseq_train.main)
    except FloatingPointError as e:
        _remove_checkpoints(save_dir, keep=None)
        _atomic_json(job["result"], {
            "status": "failed", "reason": f"training diverged: {e}", "loss": None,
            "loss_at": {}, "updates": None, "train_s": round(time.time() - t0, 2),
            "load": round(os.getloadavg()[0], 2)})
        return 0
    train_s = time.time() - t0
    last = os.path.join(save_dir, "checkpoint_last.pt")
    checkpoints = {job["updates"]: last}
    for upd in job["score_at"]:
        found = glob.glob(os.path.join(save_dir, f"checkpoint_*_{upd}.pt"))
        if len(found) != 1:
            raise RuntimeError(f"no single checkpoint of update {upd} in {save_dir}: {found}")
        checkpoints[upd] = found[0]
    losses, params, count = _score(job, checkpoints)
    bad = {u: v for u, v in losses.items() if not math.isfinite(v)}
    result = {"status": "ok", "loss": losses[job["updates"]],
              "loss_at": {str(u): v for u, v in sorted(losses.items()) if u != job["updates"]},
              "updates": job["updates"], "params": params, "scored_tokens": count,
              "train_s": round(train_s, 2), "updates_per_s": round(job["updates"] / train_s, 3),
              "load": round(os.getloadavg()[0], 2)}
    if bad:
        result.update(status="failed", loss=None,
                      reason=f"non-finite validation loss at update(s) {sorted(bad)}")
    _remove_checkpoints(save_dir, keep=last if job["keep_checkpoints"] else None)
    _atomic_json(job["result"], result)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["_unit"]:
        return unit_main(argv[1])
    ours, extra = split_argv(argv)
    args = get_parser().parse_args(ours)
    return run(args, extra)


def cli_main():
    run_main(main, PROG)


if __name__ == "__main__":
    cli_main()
