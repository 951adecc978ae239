"""``--task magic``: masked-LM pre-training of a super-net, one sampled path per update.

Like fairseq's translation_moe example, the task owns the per-update logic in
``train_step``: it asks the sampler for the update's child, activates it on the
(unwrapped) model and then runs the ordinary forward/backward. The sampler's
state travels in the checkpoint through ``get_checkpoint_dict`` so a resumed
run continues exactly as if uninterrupted.
"""

import json
import logging
import os
import random
from dataclasses import dataclass, field
from typing import Optional

from fairseq.tasks import register_task
from fairseq.tasks.masked_lm import MaskedLMConfig, MaskedLMTask

from ..core.samplers import SAMPLERS, build_sampler, random_arch
from ..core.space import MagicConfigError

logger = logging.getLogger(__name__)


@dataclass
class MagicTaskConfig(MaskedLMConfig):
    magic_sampler: str = field(
        default="spos", metadata={"help": "how each update's child is drawn: "
                                  f"{', '.join(sorted(SAMPLERS))}"})
    magic_path_log: Optional[str] = field(
        default=None, metadata={"help": "write one JSON line per update "
                                "({update, rank, path}) to this file; with several "
                                "ranks each writes FILE's stem + '.rank<R>' + suffix"})
    magic_valid_arch: Optional[str] = field(
        default=None, metadata={"help": "child to validate on (spec); default: the "
                                "child of the most recent update"})


def unwrap_model(model):
    """The bare fairseq model under DDP / proxy wrappers. Set state on this: the
    DDP wrapper forwards attribute reads, not assignments."""
    while hasattr(model, "module"):
        model = model.module
    return model


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
        self._pending_state = None
        self._path_log = None
        self._checked_training_setup = False

    @classmethod
    def setup_task(cls, cfg: MagicTaskConfig, **kwargs):
        if cfg.magic_sampler not in SAMPLERS:
            raise MagicConfigError(
                f"--magic-sampler {cfg.magic_sampler!r}: expected one of {sorted(SAMPLERS)}")
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
            self.sampler = build_sampler(self.cfg.magic_sampler, space, self.cfg.seed)
            if self._pending_state is not None:
                self.sampler.load_state_dict(self._pending_state["sampler"])
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
        arch = self._activate(model, update_num)
        if arch is not None and self.cfg.magic_path_log:
            self._log_path(update_num, arch)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def _log_path(self, update_num: int, arch) -> None:
        if self._path_log is None:
            self._path_log = PathLog(self.cfg.magic_path_log, *data_parallel_rank_and_size())
            self._logged_update = None
        if self._logged_update != update_num:  # once per update, not per micro-batch
            self._path_log.write({"update": update_num + 1, "rank": self._path_log.rank,
                                  "path": str(arch)})
            self._logged_update = update_num

    # ---- validation ----
    def valid_arch(self):
        if self.cfg.magic_valid_arch:
            return self.cfg.magic_valid_arch
        if self.sampler is None:
            return None
        last = self.sampler.state_dict()["path"]
        if last is not None:
            return last
        return random_arch(self.sampler.space, random.Random(f"magic-valid:{self.cfg.seed}"))

    def valid_step(self, sample, model, criterion):
        arch = self.valid_arch()
        if arch is not None:
            unwrap_model(model).set_active_path(arch)
        return super().valid_step(sample, model, criterion)

    # ---- checkpoint state ----
    def get_checkpoint_dict(self):
        state = {"version": 1}
        if self.sampler is not None:
            state["sampler"] = self.sampler.state_dict()
            state["search_space"] = self.sampler.space.state_dict()
        return {type(self).__name__: state}

    def set_checkpoint_dict(self, state):
        if "sampler" not in state:
            return
        if self.sampler is None:
            self._pending_state = state
        else:
            self.sampler.load_state_dict(state["sampler"])


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
            "candidates so Adam moves them: use --memory-efficient-fp16, "
            "--memory-efficient-bf16 or --amp instead")
