"""``--task magic``: masked-LM pre-training of a super-net, one sampled path per update.

Like fairseq's translation_moe example, the task owns the per-update logic in
``train_step``: it asks the sampler for the update's child, activates it on the
(unwrapped) model and then runs the ordinary forward/backward. The sampler's
state travels in the checkpoint through ``get_checkpoint_dict`` so a resumed
run continues exactly as if uninterrupted.
"""

import json
import logging
import math
import os
import random
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq.logging import metrics
from fairseq.tasks import register_task
from fairseq.tasks.masked_lm import MaskedLMConfig, MaskedLMTask

from ..core.anchor import (ANCHOR_POLICIES, DEFAULT_CANDIDATES, AnchorState,
                           CandidateBuffer, best_scored, build_anchor_policy)
from ..core.samplers import SAMPLERS, build_sampler, random_arch
from ..core.shrinking import ProgressiveShrinking
from ..core.space import Arch, MagicConfigError, SearchSpace
from ..model_utils import unwrap_model

# One flag per method (paper section 4): which sampler and which anchor rule.
# --magic-sampler / --magic-anchor override the method's choice.
METHODS = {
    "spos": ("spos", "none"),
    "magic_t": ("magic_t", "none"),
    "magic_a": ("spos", "best"),
    "magic_at": ("magic_t", "best"),
}

logger = logging.getLogger(__name__)


@dataclass
class MagicTaskConfig(MaskedLMConfig):
    magic_method: str = field(
        default="spos", metadata={"help": "super-net training method: spos, magic_t "
                                  "(paths differ by K ops), magic_a (anchor alignment), "
                                  "magic_at (both)"})
    magic_sampler: Optional[str] = field(
        default=None, metadata={"help": "override the method's path sampler: "
                                f"{', '.join(sorted(SAMPLERS))}"})
    magic_t_k: int = field(
        default=1, metadata={"help": "magic_t: operators changed per update (1 <= K <= N)"})
    magic_anchor: Optional[str] = field(
        default=None, metadata={"help": "override the method's anchor rule: none, "
                                "best (paper: replace when a child validates better), "
                                "top_p (section 5.2, Figure 3b: keep the anchor in the top p+-r%)"})
    magic_anchor_interval: int = field(
        default=100, metadata={"help": "best: every N updates validate the most "
                               "promising children trained since the last evaluation "
                               "(--magic-anchor-candidates) against the rescored anchor"})
    magic_anchor_candidates: int = field(
        default=DEFAULT_CANDIDATES, metadata={
            "help": "best: children validated at each evaluation, the C with the lowest "
                    "training MLM loss since the last one (every trained child competes); "
                    "costs C + 1 scorings of the anchor subset per interval (the anchor "
                    "is rescored): at the defaults C=2 is about 4% of training time "
                    "(benchmarks/step_overhead.py), each extra candidate about 1.5% more"})
    magic_anchor_valid_batches: int = field(
        default=4, metadata={"help": "batches of the fixed held-out subset that score "
                             "children for the anchor"})
    magic_anchor_valid_batch_size: int = field(
        default=32, metadata={"help": "sentences per anchor-scoring batch"})
    magic_anchor_valid_subset: str = field(
        default="valid", metadata={"help": "data split the anchor is scored on"})
    magic_anchor_top_p: float = field(
        default=10.0, metadata={"help": "top_p: the anchor is the child at the top p%"})
    magic_anchor_band: float = field(
        default=10.0, metadata={"help": "top_p: keep the anchor while it ranks within "
                                "the top (p +- r)%"})
    magic_anchor_population: int = field(
        default=20, metadata={"help": "top_p: random children scored at each epoch end"})
    magic_shrink: bool = field(
        default=False, metadata={"help": "progressive shrinking (paper section 5.1, from "
                                 "NAS-BERT): at each epoch end remove the worst-rated "
                                 "(layer, operator) candidates until one child remains; "
                                 "leave off when analysing rank correlation"})
    magic_shrink_per_epoch: int = field(
        default=5, metadata={"help": "candidates removed at each epoch end"})
    magic_shrink_children: int = field(
        default=50, metadata={"help": "children scored to rate the candidates"})
    magic_max_params: int = field(
        default=0, metadata={"help": "shrinking keeps a child with at most this many "
                             "parameters in the space (0 = no bound)"})
    magic_max_flops: float = field(
        default=0, metadata={"help": "shrinking keeps a child with at most this many "
                             "FLOPs (128 tokens) in the space (0 = no bound)"})
    magic_interference_interval: int = field(
        default=0, metadata={"help": "every N updates, log the cosine similarity of "
                             "consecutive updates' gradients on the operators both "
                             "paths share (the cos(theta) of section 4's MAGIC-T argument); 0 = off"})
    magic_path_log: Optional[str] = field(
        default=None, metadata={"help": "write one JSON line per update "
                                "({update, rank, path}) to this file; with several "
                                "ranks each writes FILE's stem + '.rank<R>' + suffix"})
    magic_valid_arch: Optional[str] = field(
        default=None, metadata={"help": "child to validate on (spec); default: the "
                                "child of the most recent update"})
    magic_sentences_per_update: int = field(
        default=0, metadata={"help": "sentences per update to hold at any world size "
                             "(paper: 1024): sets --update-freq to this / (--batch-size "
                             "x world size) and fails if that is not a whole number; "
                             "0 = use --update-freq as given"})


class PathLog:
    """Per-rank JSON-lines record of the child trained at each update."""

    def __init__(self, path: str, rank: int, world_size: int):
        if world_size > 1:
            stem, ext = os.path.splitext(path)
            path = f"{stem}.rank{rank}{ext}"
        self.path = path
        self.rank = rank
        self._started = False

    def write(self, record: dict) -> None:
        if not self._started:
            self._truncate_after(record["update"] - 1)
            self._started = True
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _truncate_after(self, last_kept: int) -> None:
        # A run resumed from an older checkpoint retrains updates it already
        # logged; drop those lines so the log matches what the weights saw.
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        kept = []
        if os.path.exists(self.path):
            with open(self.path) as f:
                kept = [ln for ln in f if ln.strip() and json.loads(ln)["update"] <= last_kept]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, self.path)


@register_task("magic", dataclass=MagicTaskConfig)
class MagicTask(MaskedLMTask):
    cfg: MagicTaskConfig

    def __init__(self, cfg: MagicTaskConfig, dictionary=None):
        super().__init__(cfg, dictionary)
        self.sampler = None
        self.search_space = None
        self.sampler_name, self.anchor_name = resolve_method(cfg)
        self.anchor_policy = build_anchor_policy(
            self.anchor_name, interval=cfg.magic_anchor_interval,
            candidates=cfg.magic_anchor_candidates, p=cfg.magic_anchor_top_p,
            r=cfg.magic_anchor_band,
            population=cfg.magic_anchor_population) if self.anchor_name != "none" else None
        self.anchor = AnchorState()
        self.anchor_candidates = CandidateBuffer()  # best: children since the last evaluation
        self._loss_update = None  # update whose loss awaits the trainer's all-ranks sums
        self.epoch = 1
        self.current_update = 0
        self._pending_state = None
        self._path_log = None
        self._anchor_batches = None
        self._prev_grads = None
        self._checked_training_setup = False
        self._last_step_update = None
        self._model = None
        self.shrinker = (ProgressiveShrinking(cfg.magic_shrink_per_epoch,
                                              cfg.magic_shrink_children)
                         if cfg.magic_shrink else None)
        self.shrink_history = []  # [{"epoch", "removed": [[layer, op, rating]], "size"}]

    @classmethod
    def setup_task(cls, cfg: MagicTaskConfig, **kwargs):
        resolve_method(cfg)  # bad names fail here, before any data is read
        for name in ("magic_anchor_valid_batches", "magic_anchor_valid_batch_size"):
            if getattr(cfg, name) < 1:
                raise MagicConfigError(
                    f"--{name.replace('_', '-')} {getattr(cfg, name)}: expected >= 1")
        if cfg.magic_interference_interval < 0:
            raise MagicConfigError(
                f"--magic-interference-interval {cfg.magic_interference_interval}: "
                "expected >= 0 (0 = off)")
        configure_sentences_per_update(cfg)
        paths = [p for p in str(cfg.data).split(os.pathsep) if p]
        if not paths or not os.path.isfile(os.path.join(paths[0], "dict.txt")):
            raise MagicConfigError(
                f"data directory {cfg.data!r} has no dict.txt: expected a fairseq "
                "data-bin (make one with scripts/prepare_corpus.py --out DIR, then "
                "pass DIR/data-bin)")
        return super().setup_task(cfg, **kwargs)

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        space = getattr(model, "search_space", None)
        if space is not None and space.size() > 1:
            self._model = model
            self.search_space = space
            if self.shrinker is not None:
                self.shrinker.constraint_fn = lambda sp: constraint_violation(
                    model, sp, self.cfg.magic_max_params, self.cfg.magic_max_flops)
                problem = self.shrinker.constraint_fn(space)
                if problem:
                    raise MagicConfigError(problem)
            options = {"k": self.cfg.magic_t_k} if self.sampler_name == "magic_t" else {}
            self.sampler = build_sampler(self.sampler_name, space, self.cfg.seed, **options)
            if self._pending_state is not None:
                self.set_checkpoint_dict(self._pending_state)
                self._pending_state = None
        if self.cfg.magic_valid_arch and space is not None:
            space.parse(self.cfg.magic_valid_arch)  # fail before training starts
        return model

    # ---- training ----
    def _activate(self, model, update_num: int):
        if self.sampler is None:
            return None
        arch = self.sampler.path_for_update(update_num)
        unwrap_model(model).set_active_path(arch)
        return arch

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if not self._checked_training_setup:
            check_training_setup(model, optimizer)
            self._checked_training_setup = True
        # fairseq calls train_step once per micro-batch with the same update_num
        first_micro_batch = update_num != self._last_step_update
        self._last_step_update = update_num
        self.current_update = update_num
        if first_micro_batch and self.sampler is not None:
            self._maybe_update_anchor(model, update_num)
        arch = self._activate(model, update_num)
        if arch is not None and self.cfg.magic_path_log:
            self._log_path(update_num, arch)
        if first_micro_batch and self.anchor_policy is not None:
            metrics.log_scalar("anchor_repl", self.anchor.replacements, weight=0, round=0)
            if self.anchor.score is not None:
                metrics.log_scalar("anchor_loss", self.anchor.score, weight=0, round=3)
        if first_micro_batch and self.shrinker is not None:
            # shrinking happens between epochs, outside any logged aggregate:
            # the size of the space it leaves shows each event as a step down
            # (in the progress log and TensorBoard alike)
            metrics.log_scalar("log10_children", math.log10(self.search_space.size()),
                               weight=0, round=3)
        out = super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        if arch is not None and self.anchor_name == "best":
            self._record_train_loss(update_num, arch, out[2], ignore_grad)
        return out

    # ---- anchor (MAGIC-A) ----
    def alignment_anchor(self) -> Optional[Arch]:
        return self.anchor.arch if self.anchor_policy is not None else None

    @staticmethod
    def _train_loss_key(logging_output) -> str:
        # magic_alignment's "loss" includes the alignment term; "mlm_loss" is the
        # child's own prediction loss; magic_electra's is the discriminator's
        # "disc_loss" (its generator is no part of the child). Other criteria
        # (masked_lm) log only "loss".
        for key in ("mlm_loss", "disc_loss"):
            if key in logging_output:
                return key
        return "loss"

    def _record_train_loss(self, update_num: int, arch, logging_output, ignore_grad) -> None:
        """Every trained child is an anchor candidate, ranked by its training MLM
        loss (summed over the update's micro-batches, all of one child). A
        dummy batch (ignore_grad) adds the update with nothing in it, as
        fairseq zeroes its logging output."""
        if ignore_grad:
            loss, count = 0.0, 0
        else:
            loss = float(logging_output.get(self._train_loss_key(logging_output), 0.0))
            count = int(logging_output.get("sample_size", 0))
        self.anchor_candidates.add(update_num, arch, loss, count)
        self._loss_update = update_num

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        # fairseq's trainer hands over each update's logging outputs summed over
        # every rank (and micro-batch) right after the update: those sums rank
        # the update's child identically on every rank, at no extra
        # communication, and are what the checkpoint (written by rank 0
        # alone) must hold for a resumed job to choose as an uninterrupted one.
        # Validation also reduces metrics, with the criterion in eval mode.
        if self._loss_update is None or not getattr(criterion, "training", False) \
                or not logging_outputs:
            return
        update, self._loss_update = self._loss_update, None
        key = self._train_loss_key(logging_outputs[0])
        self.anchor_candidates.set_total(
            update, sum(float(log.get(key, 0.0)) for log in logging_outputs),
            sum(int(log.get("sample_size", 0)) for log in logging_outputs))

    def _ranked_anchor_candidates(self, model):
        """The policy's C best children of the buffer, the same on every rank."""
        buf = self.anchor_candidates
        _, world = data_parallel_rank_and_size()
        local = buf.local_updates()
        if world > 1 and local:
            # Sums no trainer has reduced (train_step driven without fairseq's
            # trainer): all-reduce them here, once per interval. Every rank
            # trained the same children at the same updates, so entries align.
            from fairseq.distributed import utils as dist_utils

            device = next(unwrap_model(model).parameters()).device
            sums = torch.tensor([buf.sums(u) for u in local], dtype=torch.float64,
                                device=device)
            dist_utils.all_reduce(sums, group=dist_utils.get_data_parallel_group())
            for u, (loss, count) in zip(local, sums.tolist()):
                buf.set_total(u, loss, int(round(count)))
        return buf.select(self.anchor_policy.candidates, exclude=self.anchor.arch,
                          space=self.search_space)

    def _maybe_update_anchor(self, model, update_num: int) -> None:
        if self.anchor_name != "best" or not self.anchor_policy.due(update_num):
            return
        ranked = self._ranked_anchor_candidates(model)
        self.anchor_candidates.clear()
        if not ranked and self.anchor.arch is None:
            return  # nothing trained (in the space) yet
        ev = self.anchor_policy.evaluate(
            self.anchor, [arch for arch, _, _ in ranked],
            lambda a: self.score_arch(model, a), update_num)
        train = {arch: loss for arch, loss, _ in ranked}
        cands = ", ".join(f"{a} (train {train[a]:.4f}, valid {v:.4f})" for a, v in ev.scores)
        if ev.previous is None:
            outcome = f"first anchor {ev.anchor}"
        else:
            outcome = (f"anchor {ev.previous} valid {ev.previous_score:.4f}; "
                       + (f"anchor replaced by {ev.anchor} ({self.anchor.replacements} "
                          "replacements)" if ev.replaced else "anchor kept"))
        logger.info(f"anchor evaluation at update {update_num}: candidates "
                    f"[{cands or 'none'}] ({score_unit(model)}); {outcome}")

    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        self.epoch = epoch
        self._maybe_shrink(model, epoch)
        if self.anchor_name == "top_p" and self.sampler is not None and epoch >= 2:
            # Run at the start of epoch e = the end of epoch e-1; never at the
            # start of training, where a ranking of untrained weights is noise
            # (no anchor, so no alignment, during epoch 1). Same-epoch reruns
            # on resume are no-ops inside the policy.
            old = self.anchor.arch
            replaced = self.anchor_policy.step_epoch(
                self.anchor, self.sampler.space, lambda a: self.score_arch(model, a),
                epoch, self.cfg.seed)
            if replaced or old != self.anchor.arch:
                logger.info(f"anchor at epoch {epoch}: {self.anchor.arch} (valid loss "
                            f"{self.anchor.score:.4f}, {self.anchor.replacements} replacements)")

    # ---- progressive shrinking ----
    def set_search_space(self, space: SearchSpace) -> None:
        """Make ``space`` the space everything samples from: model, sampler, anchor."""
        self.search_space = space
        self.sampler.space = space
        if self._model is not None:
            self._model.search_space = space
        if self.anchor.arch is not None and not space.contains(self.anchor.arch):
            logger.info(f"anchor {self.anchor.arch} left the shrunk space and no scored "
                        "child can replace it: no anchor (no alignment) until the next "
                        "evaluation chooses one")
            self.anchor.arch, self.anchor.score = None, None

    def _maybe_shrink(self, model, epoch: int) -> None:
        # At the start of epoch e we shrink for the end of epoch e-1; a resumed
        # run re-entering an epoch it already shrank for does nothing.
        if self.shrinker is None or self.sampler is None or epoch < 2:
            return
        done_for = self.shrink_history[-1]["epoch"] if self.shrink_history else 0
        if epoch - 1 <= done_for or self.shrinker.done(self.search_space):
            return
        new_space, removed, children, scores = self.shrinker.step(
            self.search_space, lambda a: self.score_arch(model, a), self.cfg.seed, epoch - 1)
        old = self.anchor.arch
        if old is not None and not new_space.contains(old):
            # The shrinker has just validated its children with these weights on
            # the anchor subset: the best of those still in the space replaces
            # the anchor, without scoring anything again.
            best = best_scored(children, scores, new_space)
            if best is not None:
                self.anchor.arch, self.anchor.score = best
                self.anchor.replacements += 1
                logger.info(f"shrinking removed an operator of the anchor {old}: the best "
                            f"scored child of the remaining space replaces it: "
                            f"{self.anchor.arch} (valid loss {self.anchor.score:.4f}, "
                            f"{self.anchor.replacements} replacements)")
        self.shrink_history.append({
            "epoch": epoch - 1, "size": new_space.size(),
            "removed": [[int(l), str(o), float(r)] for l, o, r in removed]})
        self.set_search_space(new_space)
        gone = ", ".join(f"layer {l}:{o}" for l, o, _ in removed)
        logger.info(f"shrinking after epoch {epoch - 1}: removed {gone}; "
                    f"{new_space.size():.4g} children left")
        if new_space.size() == 1:
            logger.info(f"shrinking finished: the child is "
                        f"{','.join(c[0] for c in new_space.choices)}")

    def _anchor_valid_batches(self, model):
        if self._anchor_batches is None:
            from ..evaluation import fixed_batches

            device = next(model.parameters()).device
            self._anchor_batches = fixed_batches(
                self, self.cfg.magic_anchor_valid_subset, self.cfg.magic_anchor_valid_batches,
                self.cfg.magic_anchor_valid_batch_size, str(device))
        return self._anchor_batches

    def score_arch(self, model, arch) -> float:
        """Validation MLM loss (bits per masked token) of ``arch`` with the current
        shared weights on the fixed subset (for an ELECTRA super-net: the
        discriminator's RTD loss, bits per non-pad token, with a fixed masking
        and generator sample, ``MagicElectraSupernetModel.rtd_loss_sums``).
        Each rank scores a slice of the batches and the sums are all-reduced,
        so every rank gets the same score (and so keeps the same anchor)."""
        from ..evaluation import child_loss_sums

        bare = unwrap_model(model)
        device = next(bare.parameters()).device
        # Building the batches starts a DataLoader, which draws its base seed
        # from the global torch RNG. Restore the RNG afterwards: otherwise the
        # update's dropout would depend on whether this process had built them
        # before, and a resumed run would drift from an uninterrupted one.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            batches = self._anchor_valid_batches(bare)
            rank, world = data_parallel_rank_and_size()
            total, count = child_loss_sums(bare, arch, batches[rank::world])
        sums = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
        if world > 1:
            from fairseq.distributed import utils as dist_utils

            dist_utils.all_reduce(sums, group=dist_utils.get_data_parallel_group())
        return float(sums[0] / sums[1].clamp(min=1)) / math.log(2)

    # ---- interference monitor ----
    def optimizer_step(self, optimizer, model, update_num):
        n = self.cfg.magic_interference_interval
        if n and self.sampler is not None and update_num % n in (n - 1, 0) and update_num:
            self._interference(model, update_num, n)
        super().optimizer_step(optimizer, model, update_num)

    def _interference(self, model, update_num: int, n: int) -> None:
        # Gradients here are final for the update (all-reduced, unscaled by
        # sample size, clipped); clipping rescales, which cosine ignores.
        bare = unwrap_model(model)
        grads = {k: p.grad.detach().float().flatten().clone()
                 for k, p in bare.named_parameters()
                 if ".candidates." in k and p.grad is not None}
        if update_num % n == n - 1:
            self._prev_grads = (update_num, grads)
            return
        if self._prev_grads is None or self._prev_grads[0] != update_num - 1:
            return
        prev = self._prev_grads[1]
        shared = [k for k in grads if k in prev]
        self._prev_grads = None
        if not shared:
            return  # consecutive paths share no operator (possible with SPOS)
        a = torch.cat([prev[k] for k in shared])
        b = torch.cat([grads[k] for k in shared])
        cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
        metrics.log_scalar("interference_cos", cos, weight=1, round=4)

    def _log_path(self, update_num: int, arch) -> None:
        if self._path_log is None:
            self._path_log = PathLog(self.cfg.magic_path_log, *data_parallel_rank_and_size())
            self._logged_update = None
        if self._logged_update != update_num:  # once per update, not per micro-batch
            record = {"update": update_num + 1, "rank": self._path_log.rank,
                      "path": str(arch)}
            if self.anchor_policy is not None:
                record["anchor"] = str(self.anchor.arch) if self.anchor.arch else None
            self._path_log.write(record)
            self._logged_update = update_num

    # ---- validation ----
    def valid_arch(self):
        if self.cfg.magic_valid_arch:
            return self.cfg.magic_valid_arch
        if self.sampler is None:
            return None
        last = self.sampler.state_dict()["path"]
        if last is not None and self.sampler.space.contains(last):
            return last
        # nothing trained yet, or the last child left the space by shrinking
        return random_arch(self.sampler.space, random.Random(f"magic-valid:{self.cfg.seed}"))

    def valid_step(self, sample, model, criterion):
        arch = self.valid_arch()
        if arch is not None:
            unwrap_model(model).set_active_path(arch)
        return super().valid_step(sample, model, criterion)

    # ---- checkpoint state ----
    def get_checkpoint_dict(self):
        state = {"version": 1, "epoch": self.epoch}
        if self.sampler is not None:
            state["sampler"] = self.sampler.state_dict()
            state["search_space"] = self.sampler.space.state_dict()
            state["anchor"] = self.anchor.state_dict()
            state["anchor_candidates"] = self.anchor_candidates.state_dict()
            state["shrink_history"] = self.shrink_history
        return {type(self).__name__: state}

    def set_checkpoint_dict(self, state):
        if "sampler" not in state:
            return
        if self.sampler is None:
            self._pending_state = state
            return
        if "search_space" in state:
            space = SearchSpace.from_state_dict(state["search_space"])
            if space.candidates != self.search_space.candidates or \
                    space.num_layers != self.search_space.num_layers:
                raise MagicConfigError(
                    f"checkpoint search space {space} does not match the model's "
                    f"{self.search_space}: expected the same operators and depth")
            self.set_search_space(space)
        self.shrink_history = list(state.get("shrink_history", []))
        self.sampler.load_state_dict(state["sampler"])
        if "anchor" in state:
            self.anchor.load_state_dict(state["anchor"])
            if self.anchor.arch is not None:
                self.sampler.space.validate(self.anchor.arch)
        self.anchor_candidates.load_state_dict(
            state.get("anchor_candidates") or {}, num_layers=self.search_space.num_layers)
        self.epoch = state.get("epoch", self.epoch)


def configure_sentences_per_update(task_cfg) -> Optional[int]:
    """Log the effective batch (sentences per update) and, with
    ``--magic-sentences-per-update S``, set ``--update-freq`` so that
    batch x update-freq x world size = S.

    The paper's recipe is defined per update (1,024 sentences), not per GPU:
    a config written for 8 GPUs silently trains with an 8x smaller batch on
    one. The task config is a node of fairseq's full config (argparse and
    hydra alike), so the dataset, optimization and distributed settings are
    reachable from its root; they are read before the trainer is built, which
    is when fairseq starts reading ``update_freq``. Returns the sentences per
    update, or None when unknown (batches sized by --max-tokens, or a task
    config without a full config around it, as in some inference paths).
    """
    from omegaconf import DictConfig, open_dict

    target = int(getattr(task_cfg, "magic_sentences_per_update", 0) or 0)
    if target < 0:
        raise MagicConfigError(
            f"--magic-sentences-per-update {target}: expected >= 0 (0 = off)")
    root = task_cfg._get_root() if isinstance(task_cfg, DictConfig) else None
    if root is None or root is task_cfg or "optimization" not in root:
        return None
    batch = root.dataset.get("batch_size")
    world = int(root.distributed_training.get("distributed_world_size") or 1)
    update_freq = list(root.optimization.get("update_freq") or [1])
    if target:
        if not batch:
            raise MagicConfigError(
                f"--magic-sentences-per-update {target} needs --batch-size (sentences "
                f"per GPU), got batch size {batch!r} (batches sized by --max-tokens "
                "have no fixed sentence count)")
        per_step = int(batch) * world
        if target % per_step:
            fits = [b for b in range(1, target + 1) if target % (b * world) == 0]
            hint = (f"--batch-size {max(b for b in fits if b <= int(batch))}" if
                    any(b <= int(batch) for b in fits) else "fewer processes")
            raise MagicConfigError(
                f"--magic-sentences-per-update {target} cannot be held at world size "
                f"{world} with --batch-size {batch}: {batch} x {world} = {per_step} "
                f"sentences per step does not divide {target} (try {hint})")
        wanted = target // per_step
        if update_freq not in ([1], [wanted]):
            raise MagicConfigError(
                f"--update-freq {','.join(map(str, update_freq))} conflicts with "
                f"--magic-sentences-per-update {target}, which needs {wanted} at world "
                f"size {world} and --batch-size {batch}: drop one of the two")
        with open_dict(root.optimization):
            root.optimization.update_freq = [wanted]
        update_freq = [wanted]
    if batch:
        total = int(batch) * update_freq[0] * world
        logger.info(f"sentences per update: {total} = batch size {batch} x update-freq "
                    f"{update_freq[0]} x world size {world}")
        return total
    logger.info(f"batches sized by --max-tokens {root.dataset.get('max_tokens')} x "
                f"update-freq {update_freq[0]} x world size {world}")
    return None


def resolve_method(cfg):
    """(sampler name, anchor rule) from --magic-method and its overrides."""
    if cfg.magic_method not in METHODS:
        raise MagicConfigError(
            f"--magic-method {cfg.magic_method!r}: expected one of {sorted(METHODS)}")
    sampler, anchor = METHODS[cfg.magic_method]
    sampler = cfg.magic_sampler or sampler
    anchor = cfg.magic_anchor or anchor
    if sampler not in SAMPLERS:
        raise MagicConfigError(
            f"--magic-sampler {sampler!r}: expected one of {sorted(SAMPLERS)}")
    if anchor != "none" and anchor not in ANCHOR_POLICIES:
        raise MagicConfigError(
            f"--magic-anchor {anchor!r}: expected one of "
            f"{['none'] + sorted(ANCHOR_POLICIES)}")
    return sampler, anchor


def constraint_violation(model, space, max_params=0, max_flops=0):
    """None if some child of ``space`` meets the bounds, else a message. The
    cost model is additive over layers, so the cheapest child takes each
    layer's cheapest operator."""
    if not max_params and not max_flops:
        return None
    cheapest = {}
    for key in ("params", "flops"):
        arch = []
        for choices in space.choices:
            costs = []
            for op in choices:
                probe = [c[0] for c in space.choices]
                probe[len(arch)] = op
                costs.append((model.child_cost(probe)[key], op))
            arch.append(min(costs)[1])
        cheapest[key] = model.child_cost(arch)[key]
    if max_params and cheapest["params"] > max_params:
        return (f"--magic-max-params {max_params}: the smallest child of the space has "
                f"{cheapest['params']} parameters")
    if max_flops and cheapest["flops"] > max_flops:
        return (f"--magic-max-flops {max_flops:g}: the cheapest child of the space has "
                f"{cheapest['flops']:.4g} FLOPs")
    return None


def score_unit(model) -> str:
    """What ``score_arch`` returns, for the logs."""
    if getattr(unwrap_model(model), "is_electra", False):
        return "discriminator RTD loss, bits per non-pad token"
    return "bits per masked token"


def data_parallel_rank_and_size():
    import torch.distributed as dist
    from fairseq.distributed import utils as dist_utils

    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist_utils.get_data_parallel_rank(), dist_utils.get_data_parallel_world_size()


def check_training_setup(model, optimizer) -> None:
    """Refuse set-ups that silently move candidates off the active path.

    SPOS semantics need unused candidates to keep ``.grad is None`` so the
    optimizer skips them. legacy_ddp and FP16Optimizer (--fp16/--bf16) fill
    missing gradients with zeros, after which Adam applies weight decay and
    moment updates to every candidate.
    """
    from torch.nn.parallel import DistributedDataParallel
    from fairseq.distributed import LegacyDistributedDataParallel
    from fairseq.optim.fp16_optimizer import FP16Optimizer

    bare = unwrap_model(model)
    if getattr(bare, "search_space", None) is None or bare.search_space.size() == 1:
        return
    wrappers = []
    m = model
    while True:
        wrappers.append(m)
        if not hasattr(m, "module"):
            break
        m = m.module
    for w in wrappers:
        if isinstance(w, LegacyDistributedDataParallel):
            raise MagicConfigError(
                "--ddp-backend legacy_ddp/no_c10d zero-fills the gradients of unused "
                "candidates (Adam then moves them): use --ddp-backend c10d "
                "--find-unused-parameters")
        if isinstance(w, DistributedDataParallel) and not w.find_unused_parameters:
            raise MagicConfigError(
                "a super-net trains one path per update: --ddp-backend c10d needs "
                "--find-unused-parameters")
    if isinstance(optimizer, FP16Optimizer):
        raise MagicConfigError(
            "--fp16/--bf16 use FP16Optimizer, which zero-fills the gradients of unused "
            "candidates so Adam moves them (measured on an H100: 426 of 668 off-path "
            "tensors moved in 8 updates): use --memory-efficient-fp16 or --amp instead")
