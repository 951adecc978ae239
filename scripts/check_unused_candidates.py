#!/usr/bin/env python
"""Verify on YOUR set-up that an update leaves off-path candidates untouched.

    python scripts/check_unused_candidates.py [--report FILE] [--skip-setup-check] \
        -- <fairseq-train args>

Runs fairseq-train in-process with a probe around ``Trainer.train_step``: before
and after every update it compares every super-net candidate's parameters.
Candidates off the update's path must be bit-identical (SPOS semantics: no
gradient, no weight decay, no Adam moment step); candidates on it should move.
Use it when changing precision (--amp, --memory-efficient-fp16/bf16), the DDP
backend or the optimizer. Prints a summary and exits 1 if anything off the
path changed. ``--skip-setup-check`` disables the task's refusal of set-ups known
to move unused candidates (--fp16/--bf16, legacy_ddp), to measure them.
"""

import json
import sys

import torch


def _split(argv):
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return [], argv


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    own, train_argv = _split(argv)
    report = own[own.index("--report") + 1] if "--report" in own else None
    if "--skip-setup-check" in own:
        # Demonstration only: let set-ups the task refuses (--fp16, legacy_ddp)
        # run, to measure what they do to off-path candidates.
        from fairseq_magic.tasks import magic_task

        magic_task.check_training_setup = lambda model, optimizer: None

    from fairseq.trainer import Trainer
    from fairseq_cli import train as fairseq_train

    stats = {"updates": 0, "off_path_changed": [], "on_path_moved": 0, "on_path_tensors": 0,
             "off_path_tensors": 0}
    original = Trainer.train_step

    def probed(self, samples, raise_oom=False):
        model = self.model
        while hasattr(model, "module"):
            model = model.module
        before = {k: p.detach().clone() for k, p in model.named_parameters()}
        out = original(self, samples, raise_oom)
        path = model.get_active_path()
        stats["updates"] += 1
        for k, p in model.named_parameters():
            if ".candidates." not in k:
                continue
            layer = int(k.split(".layers.")[1].split(".")[0])
            op = k.split(".candidates.")[1].split(".")[0]
            same = torch.equal(before[k], p.detach())
            if op == path[layer]:
                stats["on_path_tensors"] += 1
                stats["on_path_moved"] += int(not same)
            else:
                stats["off_path_tensors"] += 1
                if not same:
                    diff = (before[k].float() - p.detach().float()).abs().max().item()
                    stats["off_path_changed"].append(
                        {"update": self.get_num_updates(), "param": k, "max_abs_diff": diff})
        return out

    Trainer.train_step = probed
    sys.argv = ["fairseq-train"] + train_argv
    try:
        fairseq_train.cli_main()
    finally:
        Trainer.train_step = original
        changed = stats["off_path_changed"]
        summary = {
            "updates": stats["updates"],
            "off_path_tensors_checked": stats["off_path_tensors"],
            "off_path_tensors_changed": len(changed),
            "on_path_tensors_moved": f"{stats['on_path_moved']}/{stats['on_path_tensors']}",
            "first_changes": changed[:5],
            "verdict": "OK: off-path candidates untouched" if not changed and stats["updates"]
            else "FAIL: off-path candidates changed" if changed else "no update ran",
        }
        print("check_unused_candidates: " + json.dumps(summary))
        if report:
            with open(report, "w") as f:
                json.dump(summary, f, indent=2)
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
