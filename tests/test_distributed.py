"""Two gloo ranks on CPU through fairseq_magic.cli.train_cpu_ddp (torchrun).

Launches (~13 s each on 2 cores), shared through a module fixture:
  probe20 launcher + a parameter probe, 20 updates, a checkpoint at 10
          -> (a), (b), and (c)'s reference
  resume  copy of probe20's save dir rewound to its update-10 checkpoint,
          resumed to 20 by the plain launcher -> (c)
The refusal of legacy_ddp / c10d without --find-unused-parameters runs
in-process through fairseq's own DDP wrappers (tests/test_task_in_process.py).
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import train_args

LAYER_PREFIX = "encoder.sentence_encoder.layers."
N_LAYERS = 4  # conftest.TINY_MODEL


def torchrun(script_or_module, args, nproc=2, timeout=300):
    """Launch ``nproc`` CPU ranks; ``script_or_module`` is ``-m NAME`` or a path."""
    env = dict(os.environ)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"})
    target = (["-m", script_or_module[3:]] if script_or_module.startswith("-m ")
              else [script_or_module])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(nproc), *target, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def launch(args, **kw):
    return torchrun("-m fairseq_magic.cli.train_cpu_ddp", args, **kw)


def check_ok(proc):
    assert proc.returncode == 0, (f"torchrun failed ({proc.returncode}):\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def path_logs(save_dir):
    return [read_jsonl(os.path.join(save_dir, f"paths.rank{r}.jsonl")) for r in (0, 1)]


def max_abs_diff(a, b):
    """Max |a - b| over every tensor of two nested dict/list structures."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype
        if a.numel() == 0:
            return 0.0
        return (a.double() - b.double()).abs().max().item()
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (set(a) ^ set(b))
        return max([max_abs_diff(a[k], b[k]) for k in a], default=0.0)
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b)
        return max([max_abs_diff(x, y) for x, y in zip(a, b)], default=0.0)
    assert a == b
    return 0.0


def candidate_of(name):
    """(layer, op) for a candidate's parameter, None for shared parameters."""
    if not name.startswith(LAYER_PREFIX):
        return None
    layer, kind, op = name[len(LAYER_PREFIX):].split(".")[:3]
    assert kind == "candidates", name
    return int(layer), op


# Runs inside each rank (torchrun starts it as a script). It wraps
# Trainer.train_step to record, after every update, a SHA-1 of every parameter,
# which parameters changed and which have no gradient, then hands over to the
# launcher's own cli_main (argv injection + CPU DDP shim). At the end each rank
# saves its full state_dict. Test-only: nothing in the product reads it.
PROBE = textwrap.dedent("""
    import hashlib, json, os, sys
    import torch
    from fairseq.trainer import Trainer
    from fairseq_magic.cli import train_cpu_ddp
    from fairseq_magic.model_utils import unwrap_model

    out_dir = sys.argv.pop(1)
    seen = {}
    original = Trainer.train_step

    def train_step(self, *args, **kwargs):
        bare = unwrap_model(self.model)  # trainer.model is the DDP wrapper
        named = list(bare.named_parameters())
        before = {n: p.detach().clone() for n, p in named}
        result = original(self, *args, **kwargs)
        rank = torch.distributed.get_rank()
        record = {
            "update": self.get_num_updates(), "rank": rank,
            "path": ",".join(bare.get_active_path()),
            "sha1": {n: hashlib.sha1(p.detach().numpy().tobytes()).hexdigest()
                     for n, p in named},
            "changed": [n for n, p in named if not torch.equal(p.detach(), before[n])],
            "grad_none": [n for n, p in named if p.grad is None],
        }
        with open(os.path.join(out_dir, f"probe.rank{rank}.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\\n")
        seen["trainer"] = self
        return result

    Trainer.train_step = train_step
    train_cpu_ddp.cli_main()
    bare = unwrap_model(seen["trainer"].model)
    torch.save({k: v.detach().clone() for k, v in bare.state_dict().items()},
               os.path.join(out_dir, f"final.rank{torch.distributed.get_rank()}.pt"))
""")


@pytest.fixture(scope="module")
def probe20_run(data_bin, tmp_path_factory):
    save = tmp_path_factory.mktemp("ddp_probe20")
    script = save / "probe.py"
    script.write_text(PROBE)
    proc = torchrun(str(script), [save, *train_args(
        data_bin, save, "--magic-path-log", save / "paths.jsonl",
        "--save-interval-updates", "10", updates=20)])
    check_ok(proc)
    return save, proc


@pytest.fixture(scope="module")
def probe20(probe20_run):
    return probe20_run[0]


# ---------------------------------------------------------------- (a)
def test_two_ranks_train_the_same_sampled_paths(probe20_run):
    save, proc = probe20_run
    logs = path_logs(save)
    for rank, log in enumerate(logs):
        assert [r["update"] for r in log] == list(range(1, 21))
        assert {r["rank"] for r in log} == {rank}
    paths0 = [r["path"] for r in logs[0]]
    assert paths0 == [r["path"] for r in logs[1]]
    assert len(set(paths0)) > 1, paths0  # sampling really happens
    assert all(len(p.split(",")) == N_LAYERS for p in paths0)
    # Both ranks feed every update: 2 x --batch-size 8 sentences (rank 0 logs).
    assert "num_updates=20" in proc.stderr + proc.stdout
    assert "bsz=16" in proc.stderr + proc.stdout
    assert os.path.isfile(save / "checkpoint_last.pt")


# ---------------------------------------------------------------- (b)
def test_ranks_hold_identical_weights_and_skip_unused_candidates(probe20):
    save = probe20
    probes = [read_jsonl(save / f"probe.rank{r}.jsonl") for r in (0, 1)]
    for rank, probe in enumerate(probes):
        assert [r["update"] for r in probe] == list(range(1, 21))
        assert {r["rank"] for r in probe} == {rank}

    # Every parameter bit-identical on both ranks after every update.
    for r0, r1 in zip(*probes):
        assert r0["path"] == r1["path"], r0["update"]
        assert r0["sha1"].keys() == r1["sha1"].keys()
        differing = [n for n in r0["sha1"] if r0["sha1"][n] != r1["sha1"][n]]
        assert differing == [], (r0["update"], differing)

    # The probe saw the same paths the task logged.
    logs = path_logs(save)
    assert [r["path"] for r in logs[0]] == [r["path"] for r in probes[0]]
    assert [r["path"] for r in logs[1]] == [r["path"] for r in probes[1]]

    # SPOS semantics under c10d + find_unused_parameters: at every update the
    # candidates off the path have no gradient and are bit-identical before and
    # after the step (no zero-filled grads, no Adam/weight-decay drift); the
    # candidates on it all have gradients and moved.
    for probe in probes:
        for rec in probe:
            path = rec["path"].split(",")
            changed, grad_none = set(rec["changed"]), set(rec["grad_none"])
            off = [n for n in rec["sha1"] if candidate_of(n) and
                   path[candidate_of(n)[0]] != candidate_of(n)[1]]
            on = [n for n in rec["sha1"] if candidate_of(n) and
                  path[candidate_of(n)[0]] == candidate_of(n)[1]]
            assert off and on
            assert not (changed & set(off)), (rec["update"], sorted(changed & set(off)))
            assert set(off) <= grad_none, rec["update"]
            assert not (grad_none & set(on)), (rec["update"], sorted(grad_none & set(on)))
            if rec["update"] == 1:
                # polynomial_decay warm-up starts at lr 0 (lr = lr * num_updates
                # / warmup_updates): the first step moves nothing at all.
                assert not changed, sorted(changed)[:5]
                continue
            for layer in range(N_LAYERS):
                moved = [n for n in on if candidate_of(n)[0] == layer and n in changed]
                assert moved, (rec["update"], layer)

    # Final full state_dicts (parameters and buffers) of the two ranks.
    sd0 = torch.load(save / "final.rank0.pt")
    sd1 = torch.load(save / "final.rank1.pt")
    assert max_abs_diff(sd0, sd1) == 0.0
    # ...and rank 0's checkpoint holds exactly those weights.
    ckpt = torch.load(save / "checkpoint_last.pt")
    assert max_abs_diff(ckpt["model"], sd0) == 0.0


# ---------------------------------------------------------------- (c)
def test_two_rank_resume_matches_uninterrupted_run(probe20, data_bin, tmp_path):
    # Rewind a copy of the probed run to its update-10 checkpoint; its path
    # logs still hold updates 11..20, which the resumed run must drop and redo.
    save = tmp_path / "resume"
    save.mkdir()
    shutil.copy(probe20 / "checkpoint_1_10.pt", save / "checkpoint_last.pt")
    for r in (0, 1):
        shutil.copy(probe20 / f"paths.rank{r}.jsonl", save / f"paths.rank{r}.jsonl")
    proc = launch(train_args(data_bin, save, "--magic-path-log", save / "paths.jsonl",
                             updates=20))
    check_ok(proc)
    out = proc.stderr + proc.stdout
    assert "Loaded checkpoint" in out and "(epoch 1 @ 10 updates)" in out

    # Plain torch.load: weights-only (torch >= 2.6 default) must accept it.
    resumed = torch.load(save / "checkpoint_last.pt")
    straight = torch.load(probe20 / "checkpoint_last.pt")
    assert resumed["optimizer_history"][-1]["num_updates"] == 20
    assert straight["optimizer_history"][-1]["num_updates"] == 20
    dw = max_abs_diff(resumed["model"], straight["model"])
    d_opt = max_abs_diff(resumed["last_optimizer_state"]["state"],
                         straight["last_optimizer_state"]["state"])
    print(f"2-rank resume vs uninterrupted: max|dW|={dw} max|d optimizer state|={d_opt}")
    assert dw == 0.0
    assert d_opt == 0.0

    resumed_logs, straight_logs = path_logs(save), path_logs(probe20)
    for rank in (0, 1):
        assert [r["update"] for r in resumed_logs[rank]] == list(range(1, 21))
        assert resumed_logs[rank] == straight_logs[rank]


# ------------------------------------------------- launcher units (no ranks)
def test_distributed_argv_defaults_and_conflicts():
    from fairseq_magic.cli.train_cpu_ddp import LauncherError, distributed_argv

    env = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": "29500"}
    argv = distributed_argv(["data", "--max-update", "3"], env)
    assert argv[:3] == ["data", "--max-update", "3"]
    tail = " ".join(argv[3:])
    for part in ("--cpu", "--distributed-backend gloo", "--distributed-init-method env://",
                 "--distributed-rank 1", "--distributed-world-size 2",
                 "--distributed-no-spawn", "--device-id 0",
                 "--ddp-backend c10d --find-unused-parameters"):
        assert part in tail, part

    kept = distributed_argv(["data", "--ddp-backend=legacy_ddp"], env)
    assert "--find-unused-parameters" not in kept
    assert kept.count("--ddp-backend") == 0 and "--ddp-backend=legacy_ddp" in kept

    assert distributed_argv(["d", "--distributed-world-size", "2"], env)  # agrees
    with pytest.raises(LauncherError, match="--distributed-world-size 4 conflicts"):
        distributed_argv(["d", "--distributed-world-size", "4"], env)
    with pytest.raises(LauncherError, match="torchrun"):
        distributed_argv(["d"], {"RANK": "0"})


def test_launcher_without_torchrun_env_explains_itself(monkeypatch, capsys):
    from fairseq_magic.cli.train_cpu_ddp import cli_main

    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(SystemExit) as exc:
        cli_main(["data-bin", "--task", "magic"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT" in err
    assert "torchrun --standalone --nproc_per_node 2" in err


def test_cpu_ddp_shim_keeps_a_real_ddp_subclass(monkeypatch, tmp_path):
    import torch.distributed as dist
    import torch.nn.parallel
    from torch.nn.parallel import DistributedDataParallel as DDP
    import fairseq.models.distributed_fairseq_model as dfm
    from fairseq_magic.cli.train_cpu_ddp import apply_cpu_ddp_shim

    # Undo the patch after the test: this pytest process is shared.
    monkeypatch.setattr(dfm, "DistributedDataParallel", dfm.DistributedDataParallel)
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store",
                            rank=0, world_size=1)
    try:
        # What fairseq's wrapper does fails on CPU without the shim...
        with pytest.raises(ValueError, match="device_ids and output_device arguments "
                           "only work with"):
            dfm.DistributedDataParallel(module=torch.nn.Linear(2, 2), device_ids=[0],
                                        output_device=0)
        cls = apply_cpu_ddp_shim()
        assert apply_cpu_ddp_shim() is cls and dfm.DistributedDataParallel is cls
        assert issubclass(cls, DDP) and cls is not DDP
        # ...and works with it, as a real DDP (isinstance checks still hold).
        m = dfm.DistributedDataParallel(module=torch.nn.Linear(2, 2), device_ids=[0],
                                        output_device=0, find_unused_parameters=True)
        assert isinstance(m, DDP) and m.device_ids is None and m.find_unused_parameters
        assert torch.nn.parallel.DistributedDataParallel is DDP  # torch untouched
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- MAGIC-AT
def test_two_ranks_agree_on_magic_at_paths_and_anchor(data_bin, tmp_path):
    # Each rank trains on different data and scores a different slice of the
    # anchor batches; only all-reduced sums make the ranks' anchor decisions
    # identical. A probe records, per rank, its own training losses, the
    # candidates it ranked, its partial validation sums and the scores it used.
    import math

    save = tmp_path / "at"
    save.mkdir()
    script = save / "probe_anchor.py"
    script.write_text(textwrap.dedent("""
        import json, os, sys
        import torch
        import fairseq_magic.evaluation as evaluation
        from fairseq_magic.cli import train_cpu_ddp
        from fairseq_magic.tasks.magic_task import MagicTask

        out_dir = sys.argv.pop(1)
        current = {}

        def record(**kw):
            rank = torch.distributed.get_rank()
            with open(os.path.join(out_dir, f"probe.rank{rank}.jsonl"), "a") as f:
                f.write(json.dumps(kw) + "\\n")

        def wrap(owner, name, make):
            setattr(owner, name, make(getattr(owner, name)))

        def partial(orig):  # score_arch imports it from the module at each call
            def child_loss_sums(model, arch, batches):
                total, count = orig(model, arch, batches)
                record(kind="partial", update=current["task"].current_update,
                       arch=",".join(arch), total=total, count=count)
                return total, count
            return child_loss_sums

        def score(orig):
            def score_arch(self, model, arch):
                current["task"] = self
                value = orig(self, model, arch)
                record(kind="score", update=self.current_update, arch=",".join(arch),
                       score=value)
                return value
            return score_arch

        def train(orig):
            def _record_train_loss(self, update_num, arch, log, ignore_grad):
                record(kind="train", update=update_num, loss=float(log["mlm_loss"]),
                       count=int(log["sample_size"]))
                return orig(self, update_num, arch, log, ignore_grad)
            return _record_train_loss

        def ranked(orig):
            def _ranked_anchor_candidates(self, model):
                out = orig(self, model)
                record(kind="ranked", update=self.current_update,
                       ranked=[[str(a), m, u] for a, m, u in out])
                return out
            return _ranked_anchor_candidates

        wrap(evaluation, "child_loss_sums", partial)
        wrap(MagicTask, "score_arch", score)
        wrap(MagicTask, "_record_train_loss", train)
        wrap(MagicTask, "_ranked_anchor_candidates", ranked)
        train_cpu_ddp.cli_main()
    """))
    proc = torchrun(str(script), [save, *train_args(
        data_bin, save, "--magic-path-log", save / "paths.jsonl",
        "--magic-method", "magic_at", "--magic-anchor-interval", "2",
        "--magic-anchor-candidates", "2", "--magic-anchor-valid-batches", "4",
        "--magic-anchor-valid-batch-size", "8", "--magic-align-warmup-epochs", "0",
        updates=12)])
    check_ok(proc)
    logs = path_logs(save)
    strip = [[(r["update"], r["path"], r["anchor"]) for r in log] for log in logs]
    assert strip[0] == strip[1] and len(strip[0]) == 12
    assert len({a for _, _, a in strip[0] if a}) >= 2, strip[0]  # the anchor moved
    out = proc.stdout + proc.stderr
    assert "align_loss" in out and "anchor_repl" in out
    probes = [read_jsonl(save / f"probe.rank{r}.jsonl") for r in (0, 1)]

    def kind(r, k):
        return [x for x in probes[r] if x["kind"] == k]

    # -- validation: per-rank partial sums differ, the all-reduced score is
    # their pooled mean, bit-identical on both ranks
    partials = [kind(r, "partial") for r in (0, 1)]
    scores = [kind(r, "score") for r in (0, 1)]
    assert len(scores[0]) >= 5 and scores[0] == scores[1]
    assert [(p["update"], p["arch"]) for p in partials[0]] == \
        [(s["update"], s["arch"]) for s in scores[0]] == \
        [(p["update"], p["arch"]) for p in partials[1]]
    local_disagree = 0
    for p0, p1, s in zip(*partials, scores[0]):
        assert p0["count"] > 0 and p1["count"] > 0
        assert p0["total"] / p0["count"] != p1["total"] / p1["count"]
        assert s["score"] == pytest.approx(
            (p0["total"] + p1["total"]) / (p0["count"] + p1["count"]) / math.log(2),
            rel=1e-12)
    # At each evaluation (candidates first, then the anchor; strictly better
    # replaces): the decision from the pooled scores is the one taken; from
    # each rank's own slice alone the ranks would have disagreed.
    by_update = {}
    for p0, p1 in zip(*partials):
        by_update.setdefault(p0["update"], []).append(
            (p0["arch"], p0["total"] / p0["count"], p1["total"] / p1["count"],
             (p0["total"] + p1["total"]) / (p0["count"] + p1["count"])))
    anchor_at = {r["update"] - 1: r["anchor"] for r in logs[0]}  # held during update u
    for update, rows in by_update.items():
        before = anchor_at.get(update - 1)
        cands = [r for r in rows if r[0] != before]
        held = [r for r in rows if r[0] == before]

        def decide(i):
            best = min(cands, key=lambda r: r[i]) if cands else None
            if held and (best is None or not best[i] < held[0][i]):
                return held[0][0]
            return best[0]

        assert anchor_at[update] == decide(3), (update, rows)
        local_disagree += decide(1) != decide(2)
    # without the all-reduce the ranks would have chosen different anchors
    assert local_disagree >= 1, by_update

    # -- training losses: each rank's own differ; the candidates both ranks
    # ranked come from the sums over both ranks (fairseq's all-reduced
    # logging outputs) and are identical
    trains = [kind(r, "train") for r in (0, 1)]
    assert [t["update"] for t in trains[0]] == [t["update"] for t in trains[1]] == \
        list(range(12))
    assert all(a["loss"] / a["count"] != b["loss"] / b["count"] for a, b in zip(*trains))
    ranked = [kind(r, "ranked") for r in (0, 1)]
    assert ranked[0] == ranked[1] and len(ranked[0]) == 5  # updates 2, 4, ..., 10
    pooled = {a["update"]: (a["loss"] + b["loss"]) / (a["count"] + b["count"]) / math.log(2)
              for a, b in zip(*trains)}
    for ev in ranked[0]:
        assert 1 <= len(ev["ranked"]) <= 2
        for _, mean, update in ev["ranked"]:
            assert mean == pytest.approx(pooled[update], rel=1e-12)
