"""Knowledge distillation (paper section 5.4): the loss against hand-computed
values, the pre-training criterion (magic_kd) on a child and on the super-net's
path with alignment, the frozen teacher kept out of the student's training and
checkpoint, exact resume, the fine-tuning criteria (GLUE through magic-glue,
SQuAD spans) and the bad teachers / values that must fail before training."""

import copy
import hashlib
import json
import math
import os
import re

import pytest
import torch
import torch.nn.functional as F

from conftest import (build_in_process, cli_in_process, fairseq_optimizer, masked_batch,
                      train_args, train_in_process, train_update, training_cfg)
from test_glue import child_export, write, write_sst2  # noqa: F401  (child_export: a fixture)
from fairseq_magic.core.distill import (check_kd_params, distill_kl, kd_loss,
                                        regression_kd_loss)
from fairseq_magic.core.space import MagicConfigError

TEACHER_SPEC = "conv3,ffn,mha2d32,ffn"
STUDENT = ["--magic-arch", "conv3,ffn", "--encoder-embed-dim", "32"]
AT = ["--magic-method", "magic_at", "--magic-anchor-interval", "3",
      "--magic-anchor-valid-batches", "2", "--magic-align-warmup-epochs", "0"]


def child_args(data, save, spec, *extra, updates=10):
    """fairseq-train of a magic_child (hidden 32) under --task masked_lm."""
    return train_args(data, save, "--task", "masked_lm", *extra, updates=updates,
                      arch="magic_child", model=["--magic-arch", spec, "--encoder-embed-dim", "32"])


def kd_flags(teacher, alpha=0.5, temperature=2.0):
    return ["--criterion", "magic_kd", "--kd-teacher", str(teacher), "--kd-alpha", str(alpha),
            "--kd-temperature", str(temperature)]


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def teachers(data_bin, tmp_path_factory):
    """Two masked-LM teachers over the data-bin's dictionary: a magic_child
    (4 layers) and a fairseq RoBERTa (--arch roberta, 2 layers)."""
    root = tmp_path_factory.mktemp("kd_teachers")
    train_in_process(child_args(data_bin, root / "child", TEACHER_SPEC,
                                "--criterion", "masked_lm", updates=10))
    roberta = train_args(data_bin, root / "roberta", "--task", "masked_lm", "--criterion",
                         "masked_lm", updates=5, arch="roberta", model=[
                             "--encoder-layers", "2", "--encoder-embed-dim", "32",
                             "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2",
                             "--max-positions", "32"])
    train_in_process(roberta)
    return {"child": str(root / "child" / "checkpoint_last.pt"),
            "roberta": str(root / "roberta" / "checkpoint_last.pt")}


# ---------------------------------------------------------------- the loss

def _softmax(xs, t):
    m = max(x / t for x in xs)
    e = [math.exp(x / t - m) for x in xs]
    return [v / sum(e) for v in e]


def test_kd_loss_equals_hand_computed_values():
    s = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0]]
    t = [[0.0, 1.0, 3.0], [1.0, 1.0, 0.0], [5.0, 0.0, 0.0]]
    y = [1, 2, -100]  # the last row is ignored (padding)
    alpha, temp = 0.3, 2.0
    hard, soft = [], []
    for i in range(2):
        ps, pt = _softmax(s[i], 1.0), _softmax(t[i], 1.0)
        hard.append(-math.log(ps[y[i]]))
        qs, qt = _softmax(s[i], temp), _softmax(t[i], temp)
        soft.append(temp ** 2 * sum(b * math.log(b / a) for a, b in zip(qs, qt)))
    S, Tt, Y = torch.tensor(s), torch.tensor(t), torch.tensor(y)
    out = kd_loss(S, Tt, Y, alpha, temp, ignore_index=-100, reduction="sum")
    assert float(out.hard) == pytest.approx(sum(hard), rel=1e-6)
    assert float(out.soft) == pytest.approx(sum(soft), rel=1e-6)
    assert float(out.loss) == pytest.approx((1 - alpha) * sum(hard) + alpha * sum(soft), rel=1e-6)
    mean = kd_loss(S, Tt, Y, alpha, temp, ignore_index=-100, reduction="mean")
    assert float(mean.loss) == pytest.approx(float(out.loss) / 2, rel=1e-6)  # 2 rows counted
    per_row = distill_kl(S, Tt, temp)
    assert per_row[:2].tolist() == pytest.approx(soft, rel=1e-6)
    assert float(per_row[2]) > 0  # a row kd_loss ignores is still a distance here
    # T = 1: the plain KL; a student equal to its teacher: 0
    assert float(distill_kl(Tt, Tt, 1.0).abs().max()) < 1e-6
    # alpha 0 is exactly the cross-entropy, whatever the teacher
    plain = F.cross_entropy(S, Y, ignore_index=-100, reduction="sum")
    nan_teacher = torch.full_like(Tt, float("nan"))
    assert torch.equal(kd_loss(S, nan_teacher, Y, 0.0, temp, -100, reduction="sum").loss, plain)
    # alpha 1: the teacher's term alone
    assert float(kd_loss(S, Tt, Y, 1.0, temp, -100, reduction="sum").loss) == \
        pytest.approx(sum(soft), rel=1e-6)


def test_masked_classes_and_regression_by_hand():
    s = torch.tensor([[0.5, 1.0, -2.0, 4.0]], requires_grad=True)
    t = torch.tensor([[2.0, 0.0, 9.0, -1.0]])
    mask = torch.tensor([[True, True, False, True]])  # class 2 cannot be chosen
    temp = 1.5
    keep = [0, 1, 3]
    qs = _softmax([s[0, i].item() for i in keep], temp)
    qt = _softmax([t[0, i].item() for i in keep], temp)
    want = temp ** 2 * sum(b * math.log(b / a) for a, b in zip(qs, qt))
    out = kd_loss(s, t, torch.tensor([3]), 0.5, temp, mask=mask, reduction="sum")
    assert float(out.soft) == pytest.approx(want, rel=1e-6)
    assert float(out.hard) == pytest.approx(-math.log(_softmax([0.5, 1.0, 4.0], 1)[2]), rel=1e-6)
    out.loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad[0, 2] == 0  # -inf masking leaks no NaN
    r = regression_kd_loss(torch.tensor([0.5, 2.0]), torch.tensor([1.0, 1.0]),
                           torch.tensor([0.0, 4.0]), 0.25, reduction="sum")
    # hard: 0.25 + 4 ; soft: 0.25 + 1
    assert (float(r.hard), float(r.soft)) == (4.25, 1.25)
    assert float(r.loss) == pytest.approx(0.75 * 4.25 + 0.25 * 1.25)


@pytest.mark.parametrize("alpha,temp,needle", [
    (-0.1, 1.0, "--kd-alpha -0.1: expected a value in [0, 1]"),
    (1.5, 1.0, "--kd-alpha 1.5"),
    (float("nan"), 1.0, "--kd-alpha nan"),
    (0.5, 0.0, "--kd-temperature 0.0: expected a finite value > 0"),
    (0.5, -2.0, "--kd-temperature -2.0"),
])
def test_bad_alpha_and_temperature(alpha, temp, needle):
    with pytest.raises(MagicConfigError) as e:
        check_kd_params(alpha, temp)
    assert needle in str(e.value)


# ---------------------------------------------------------------- pre-training

def test_criterion_is_the_kd_formula_and_plain_mlm_at_alpha_0(data_bin, teachers):
    from fairseq import checkpoint_utils

    from fairseq_magic.evaluation import import_plugin

    extra = ["--task", "masked_lm", *kd_flags(teachers["child"], 0.3, 2.0)]
    task, model, crit = build_in_process(data_bin, *extra, arch="magic_child", model=STUDENT)
    sample = masked_batch(task, n=8)
    model.eval()
    loss, n, log = crit(model, sample)
    # the teacher as fairseq itself loads a checkpoint, every position projected
    import_plugin()
    (teacher,), _, _ = checkpoint_utils.load_model_ensemble_and_task([teachers["child"]])
    pad = task.source_dictionary.pad()
    masked = sample["target"].ne(pad)
    with torch.no_grad():
        s = model(**sample["net_input"])[0][masked].double()
        t = teacher.eval()(**sample["net_input"])[0][masked].double()
    y = sample["target"][masked]
    kl = 4.0 * F.kl_div(F.log_softmax(s / 2, -1), F.log_softmax(t / 2, -1), log_target=True,
                        reduction="sum")
    ce = F.cross_entropy(s, y, reduction="sum")
    assert n == int(masked.sum()) > 0
    assert float(log["mlm_loss"]) == pytest.approx(float(ce), rel=1e-5)
    assert float(log["kd_loss"]) == pytest.approx(float(kl), rel=1e-4)
    assert float(loss) == pytest.approx(0.7 * float(ce) + 0.3 * float(kl), rel=1e-5)
    assert float(log["teacher_loss"]) == pytest.approx(
        float(F.cross_entropy(t, y, reduction="sum")), rel=1e-5)
    # alpha 0: exactly what the plain criterion computes on the same model
    cfg0 = training_cfg(data_bin, *extra, "--kd-alpha", "0", arch="magic_child", model=STUDENT)
    plain = training_cfg(data_bin, "--task", "masked_lm", arch="magic_child", model=STUDENT)
    loss0, _, _ = task.build_criterion(cfg0.criterion)(model, sample)
    loss_plain, _, _ = task.build_criterion(plain.criterion)(model, sample)
    assert torch.equal(loss0, loss_plain)


def test_teacher_stays_frozen_while_the_student_trains(data_bin, teachers):
    extra = ["--task", "masked_lm", *kd_flags(teachers["child"])]
    task, model, crit = build_in_process(data_bin, *extra, arch="magic_child", model=STUDENT)
    optimizer = fairseq_optimizer(training_cfg(data_bin, *extra, arch="magic_child",
                                               model=STUDENT), model)
    teacher = crit.teacher.model
    assert list(crit.parameters()) == []  # nothing for fairseq to optimise, wrap or save
    assert all(not p.requires_grad for p in teacher.parameters()) and not teacher.training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.random.fork_rng(devices=[]):
        for i in range(3):
            train_update(task, model, crit, optimizer, masked_batch(task, n=8, seed=i), i)
    stored = torch.load(teachers["child"], weights_only=False)["model"]
    now = teacher.state_dict()
    assert set(now) == set(stored)
    assert all(torch.equal(now[k], stored[k]) for k in stored)  # bit-identical
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_student_checkpoint_holds_no_teacher(data_bin, teachers, tmp_path):
    path = teachers["roberta"]  # a fairseq RoBERTa teacher for a magic_child student
    digest = sha(path)
    run = train_in_process(child_args(data_bin, tmp_path, "conv3,ffn", *kd_flags(path),
                                      updates=3))
    assert "kd_loss=" in run.stdout and "teacher_loss=" in run.stdout
    state = torch.load(tmp_path / "checkpoint_last.pt", weights_only=False)
    _, student, _ = build_in_process(data_bin, "--task", "masked_lm", arch="magic_child",
                                     model=STUDENT)
    assert set(state["model"]) == set(student.state_dict())
    assert state["criterion"] is None  # fairseq saves a criterion's state only with parameters
    groups = state["last_optimizer_state"]["param_groups"]
    assert sum(len(g["params"]) for g in groups) == len(list(student.parameters()))
    assert state["cfg"]["criterion"]["kd_teacher"] == path  # the teacher's path, only
    assert sha(path) == digest


def test_resumed_kd_run_on_the_supernet_equals_the_uninterrupted_one(data_bin, teachers,
                                                                     tmp_path):
    """magic_kd on the super-net's sampled path with MAGIC-AT: the alignment
    term still applies, and stop-at-4 + resume-to-8 equals 8 updates straight."""
    flags = [*AT, *kd_flags(teachers["child"])]
    full, split = tmp_path / "full", tmp_path / "split"
    out = train_in_process(train_args(data_bin, full, *flags, updates=8)).stdout
    train_in_process(train_args(data_bin, split, *flags, updates=4))
    train_in_process(train_args(data_bin, split, *flags, updates=8))
    a, b = torch.load(full / "checkpoint_last.pt"), torch.load(split / "checkpoint_last.pt")
    assert max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"]) == 0.0
    assert a["extra_state"]["MagicTask"]["sampler"] == b["extra_state"]["MagicTask"]["sampler"]
    last = [ln for ln in out.splitlines() if "num_updates=8" in ln and "train_inner" in ln][0]
    vals = dict(re.findall(r"(\w+)=([-\d.e]+)", last))
    assert float(vals["kd_loss"]) > 0 and float(vals["align_loss"]) > 0
    # the logged loss is (1 - 0.5) mlm + 0.5 kd + 0.5 align (align per token, not in bits)
    assert float(vals["loss"]) == pytest.approx(
        0.5 * float(vals["mlm_loss"]) + 0.5 * float(vals["kd_loss"])
        + 0.5 * float(vals["align_loss"]) / math.log(2), abs=2e-3)


def _copy_teacher(src, folder, edit=None):
    os.makedirs(folder, exist_ok=True)
    state = torch.load(src, weights_only=False)
    if edit:
        edit(state)
    torch.save(state, os.path.join(folder, "model.pt"))
    return os.path.join(folder, "model.pt")


def test_bad_teachers_fail_before_training(data_bin, teachers, trained_supernet, tmp_path):
    def error(*extra, tokens=None):
        more = ["--tokens-per-sample", str(tokens)] if tokens else []
        with pytest.raises(MagicConfigError) as e:
            build_in_process(data_bin, "--task", "masked_lm", *extra, *more,
                             arch="magic_child", model=STUDENT)
        return str(e.value)

    missing = str(tmp_path / "none.pt")
    assert f"--kd-teacher {missing!r} does not exist" in error(*kd_flags(missing))
    assert "needs --kd-teacher CHECKPOINT" in error("--criterion", "magic_kd")
    assert "--kd-temperature -1.0" in error(*kd_flags(teachers["child"], 0.5, -1))
    assert "--kd-alpha 1.2" in error(*kd_flags(teachers["child"], 1.2, 1.0))
    # the same number of symbols, one of them different (dict.txt beside the checkpoint)
    renamed = _copy_teacher(teachers["child"], tmp_path / "renamed")
    lines = open(os.path.join(data_bin, "dict.txt")).read().splitlines()
    lines[5] = "zzz-not-in-the-student 1"
    (tmp_path / "renamed" / "dict.txt").write_text("\n".join(lines) + "\n")
    msg = error(*kd_flags(renamed))
    assert f"--kd-teacher {renamed!r}" in msg and "at symbol 9" in msg \
        and "'zzz-not-in-the-student' (teacher)" in msg

    def shrink_vocab(state):
        rows = state["model"]["encoder.sentence_encoder.embed_tokens.weight"].shape[0]
        for k, v in list(state["model"].items()):
            if v.dim() and v.shape[0] == rows:
                state["model"][k] = v[:-8].clone()

    smaller = _copy_teacher(teachers["child"], tmp_path / "smaller", shrink_vocab)
    (tmp_path / "smaller" / "dict.txt").write_text("\n".join(lines[:-8]) + "\n")
    vocab = len(lines) + 5  # 4 specials and <mask>
    msg = error(*kd_flags(smaller))
    assert f"has a vocabulary of {vocab - 8} symbols, the student's dictionary" in msg \
        and f"{vocab}: expected the same dictionary" in msg
    msg = error(*kd_flags(trained_supernet))
    assert "is a magic_supernet" in msg and "magic-export" in msg
    msg = error(*kd_flags(teachers["child"]), tokens=64)
    assert "takes at most 32 tokens, the student's inputs up to 64" in msg


def test_compress_kd_tiny_config_trains(data_bin, teachers, tmp_path):
    from test_configs import _hydra_train

    _hydra_train("compress_kd_tiny", tmp_path, f"task.data={data_bin}",
                 "model.magic_arch='conv3,ffn'", f"criterion.kd_teacher={teachers['child']}",
                 "dataset.batch_size=8", "optimization.max_update=2",
                 "lr_scheduler.warmup_updates=1", "lr_scheduler.total_num_update=2")
    state = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=False)
    assert state["cfg"]["criterion"]["_name"] == "magic_kd" and state["criterion"] is None
    assert state["optimizer_history"][-1]["num_updates"] == 2


# ---------------------------------------------------------------- fine-tuning

def test_glue_fine_tuning_distillation(child_export, tmp_path):  # noqa: F811
    from fairseq import checkpoint_utils, options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    from fairseq_magic.evaluation import fixed_batches, import_plugin

    _, export = child_export
    data = tmp_path / "glue"
    write(str(data / "SST-2" / "train.tsv"), write_sst2(str(tmp_path / "raw-train"), 21, 48),
          ["sentence", "label"])
    write(str(data / "SST-2" / "dev.tsv"), write_sst2(str(tmp_path / "raw-dev"), 22, 16),
          ["sentence", "label"])
    common = ["--batch-size", "16", "--epochs", "1", "--log-interval", "1", "--cpu"]
    t_out, s_out = tmp_path / "teacher", tmp_path / "student"

    def glue_cli(*argv):
        return cli_in_process("fairseq_magic.cli.glue", "magic-glue", *argv)

    # bad distillation input fails before anything trains or is written
    res = glue_cli("SST-2", export, data, s_out, "--kd-teacher", t_out, *common)
    assert res.returncode == 2 and "--kd-teacher" in res.stderr and str(t_out) in res.stderr
    assert not s_out.exists()
    res = glue_cli("SST-2", export, data, t_out, *common)  # the teacher: fine-tuned plainly
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    teacher_ckpt = t_out / "SST-2" / "checkpoints" / "checkpoint_best.pt"
    res = glue_cli("SST-2", export, data, s_out, "--kd-teacher", t_out, "--kd-alpha", "1.5",
                   *common)
    assert res.returncode == 2 and "--kd-alpha 1.5" in res.stderr and not s_out.exists()
    res = glue_cli("SST-2", export, data, s_out, "--kd-teacher", t_out, "--kd-alpha", "0.4",
                   "--kd-temperature", "2", *common)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    result = json.loads((s_out / "SST-2-kd" / "result.json").read_text())
    assert result["key"] == "SST-2/kd" and result["kd"]["teacher"] == str(teacher_ckpt)
    cmd = result["command"]
    assert cmd[cmd.index("--criterion") + 1] == "sentence_prediction_kd"
    assert cmd[cmd.index("--kd-teacher") + 1] == str(teacher_ckpt)
    log = (s_out / "SST-2-kd" / "train.log").read_text()
    assert "kd_loss" in log and "teacher_accuracy" in log and "num_updates 3" in log
    state = torch.load(s_out / "SST-2-kd" / "checkpoints" / "checkpoint_best.pt",
                       weights_only=False)
    assert state["criterion"] is None
    assert not any(k.startswith("teacher") for k in state["model"])
    assert "| this child (kd) |" in (s_out / "results.md").read_text()

    # the criterion of that very command, on a dev batch, against the formula
    import_plugin()
    args = options.parse_args_and_arch(options.get_training_parser(), cmd[3:])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    with torch.random.fork_rng(devices=[]):
        model = task.build_model(cfg.model).eval()
    crit = task.build_criterion(cfg.criterion)
    (teacher,), _, _ = checkpoint_utils.load_model_ensemble_and_task([str(teacher_ckpt)])
    sample = fixed_batches(task, "valid", 1, 16)[0]
    loss, n, out = crit(model, sample)
    head = "sentence_classification_head"
    with torch.no_grad():
        s = model(**sample["net_input"], features_only=True,
                  classification_head_name=head)[0].double()
        t = teacher.eval()(**sample["net_input"], features_only=True,
                           classification_head_name=head)[0].double()
    y = model.get_targets(sample, [s]).view(-1)
    ce = F.cross_entropy(s, y, reduction="sum")
    kl = 4.0 * F.kl_div(F.log_softmax(s / 2, -1), F.log_softmax(t / 2, -1), log_target=True,
                        reduction="sum")
    assert n == 16 and float(out["kd_loss"]) == pytest.approx(float(kl), rel=1e-4, abs=1e-7)
    assert float(loss) == pytest.approx(0.6 * float(ce) + 0.4 * float(kl), rel=1e-5)
    assert int(out["teacher_ncorrect"]) == int((t.argmax(1) == y).sum())


def test_squad_span_distillation(data_bin, teachers, tmp_path):
    """squad_span_kd: start and end distributions restricted to the positions
    an answer may use; alpha 0 is squad_span's loss exactly."""
    from fairseq_magic.criterions.magic_kd import SquadSpanKDConfig, SquadSpanKDCriterion
    from fairseq_magic.criterions.squad_span import SquadSpanCriterion, answer_mask
    from fairseq_magic.tasks.squad_task import (MagicSquadConfig, MagicSquadTask,
                                                SquadSpanHead, span_logits)

    (tmp_path / "bin" / "input0").mkdir(parents=True)
    (tmp_path / "bin" / "input0" / "dict.txt").write_text(
        open(os.path.join(data_bin, "dict.txt")).read())
    task = MagicSquadTask.setup_task(MagicSquadConfig(data=str(tmp_path / "bin"),
                                                      max_positions=32, seed=1))

    def add_span_head(state):
        torch.manual_seed(0)
        for k, v in SquadSpanHead(32).state_dict().items():
            state["model"]["span_head." + k] = v

    with pytest.raises(MagicConfigError, match="has no SQuAD span head"):
        SquadSpanKDCriterion(SquadSpanKDConfig(kd_teacher=teachers["child"]), task)
    path = _copy_teacher(teachers["child"], tmp_path / "squad_teacher", add_span_head)
    crit = SquadSpanKDCriterion(
        SquadSpanKDConfig(kd_teacher=path, kd_alpha=0.4, kd_temperature=2.0), task)
    student = copy.deepcopy(crit.teacher.model)  # the teacher's shape, other weights
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
            p.requires_grad_(True)
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, len(task.source_dictionary) - 1, (3, 16), generator=g)
    src[:, 0] = task.source_dictionary.bos()
    sample = {"net_input": {"src_tokens": src}, "ntokens": 48,
              "context_start": torch.tensor([5, 6, 4]), "context_end": torch.tensor([14, 16, 10]),
              "start_positions": torch.tensor([7, 0, 5]), "end_positions": torch.tensor([9, 0, 8])}
    student.train()
    loss, n, out = crit(student, sample)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)
    student.eval()
    loss, n, out = crit(student, sample)
    mask = answer_mask(sample["context_start"], sample["context_end"], 16)
    with torch.no_grad():
        s = span_logits(student, src).double()
        t = span_logits(crit.teacher.model, src).double()
    hard = soft = 0.0
    for i, gold in enumerate((sample["start_positions"], sample["end_positions"])):
        for b in range(3):
            keep = mask[b]
            ls = F.log_softmax(s[b, keep, i], -1)
            lt2, ls2 = F.log_softmax(t[b, keep, i] / 2, -1), F.log_softmax(s[b, keep, i] / 2, -1)
            hard -= 0.5 * float(ls[int(keep[:gold[b]].sum())])  # gold's index among kept
            soft += 0.5 * 4.0 * float((lt2.exp() * (lt2 - ls2)).sum())
    assert n == 3 and float(out["span_loss"]) == pytest.approx(hard, rel=1e-5)
    assert float(out["kd_loss"]) == pytest.approx(soft, rel=1e-4)
    assert float(loss) == pytest.approx(0.6 * hard + 0.4 * soft, rel=1e-5)
    crit0 = SquadSpanKDCriterion(SquadSpanKDConfig(kd_teacher=path, kd_alpha=0.0), task)
    assert torch.equal(crit0(student, sample)[0], SquadSpanCriterion(task)(student, sample)[0])


# ---------------------------------------------------------------- benchmark

def test_kd_overhead_benchmark_runs_and_records_its_bound(data_bin, tmp_path):
    """benchmarks/kd_overhead.py at toy sizes: the record holds the ratio and
    the target 1 + teacher forward / (3 x student forward) + 0.1 from the cost
    model (the timing itself is not judged here)."""
    from benchmarks import kd_overhead
    from fairseq_magic.core.cost import child_cost

    out = tmp_path / "k.json"
    rc = kd_overhead.main(["--data", data_bin, "--teacher-arch", "conv3,ffn,conv5",
                           "--teacher-hidden", "32", "--student-arch", "conv3",
                           "--student-hidden", "32", "--batch-size", "4", "--batches", "2",
                           "--rounds", "2", "--updates-per-round", "1", "--warmup", "1",
                           "--json-out", str(out), "--results-md", str(tmp_path / "k.md")])
    res = json.loads(out.read_text())["kd_overhead"]
    assert rc == 0 and res["same_initial_student"] and res["updates_timed_per_model"] == 2
    vocab = res["vocab"]
    t = child_cost(["conv3", "ffn", "conv5"], 32, vocab, 34, seq_len=32)["flops"]
    s = child_cost(["conv3"], 32, vocab, 34, seq_len=32)["flops"]
    assert res["target"] == pytest.approx(1 + t / (3 * s) + 0.1, abs=1e-4)
    assert res["kd_over_plain"] == pytest.approx(
        res["median_update_ms"]["kd"] / res["median_update_ms"]["plain"])
    assert res["teacher"]["params"] == \
        child_cost(["conv3", "ffn", "conv5"], 32, vocab, 34)["params"]
    assert "kd_overhead:begin" in (tmp_path / "k.md").read_text()
