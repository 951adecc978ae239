"""magic-children: score children of a trained super-net with its shared weights.

    magic-children CHECKPOINT [--data DATA_BIN] [--num-random 5] [--arch SPEC ...]
        [--split valid] [--max-batches 8] [--seq-len 128] [--json-out FILE]

Prints, for each child, its spec, validation MLM loss (bits per masked token,
weight-sharing: no re-training; an ELECTRA super-net: its discriminator's
replaced-token-detection loss, bits per non-pad token), parameters and FLOPs
(at --seq-len tokens).
"""

import argparse
import json
import random

from . import run_main
from ..core.samplers import random_arch
from ..core.space import MagicConfigError


def get_parser():
    p = argparse.ArgumentParser(prog="magic-children", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a magic_supernet checkpoint (checkpoint_last.pt)")
    p.add_argument("--data", help="data-bin to score on (default: the one it trained on)")
    p.add_argument("--arch", action="append", default=[],
                   help="a child spec to score (repeatable)")
    p.add_argument("--num-random", type=int, default=5,
                   help="also score this many uniformly sampled children")
    p.add_argument("--seed", type=int, default=0, help="seed of the random children")
    p.add_argument("--split", default="valid", help="data split to score on")
    p.add_argument("--max-batches", type=int, default=8, help="batches of the split")
    p.add_argument("--batch-size", type=int, default=16, help="sentences per batch")
    p.add_argument("--seq-len", type=int, default=128, help="tokens for FLOPs counting")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json-out", help="also write the results as JSON")
    p.add_argument("--no-anchor", dest="with_anchor", action="store_false",
                   help="do not score the checkpoint's MAGIC-A anchor (scored first by default)")
    return p


def checkpoint_anchor(extra_state):
    """The anchor spec a MAGIC-A/AT run stored in its checkpoint, or None."""
    return (extra_state.get("MagicTask", {}).get("anchor") or {}).get("arch")


def main(argv=None):
    args = get_parser().parse_args(argv)
    from ..evaluation import fixed_batches, load_supernet, score_child

    if args.num_random < 0 or args.max_batches < 1:
        raise MagicConfigError("--num-random must be >= 0 and --max-batches >= 1")
    model, task, _, extra_state = load_supernet(args.checkpoint, args.data, args.device)
    space = model.search_space
    archs = [space.parse(a) for a in args.arch]
    anchor = checkpoint_anchor(extra_state)
    if anchor is not None and args.with_anchor:
        archs.insert(0, space.parse(anchor))
    rng = random.Random(f"magic-children:{args.seed}")
    archs += [random_arch(space, rng) for _ in range(args.num_random)]
    batches = fixed_batches(task, args.split, args.max_batches, args.batch_size, args.device)
    rows = []
    for arch in archs:
        cost = model.child_cost(arch, args.seq_len)
        rows.append({"arch": str(arch), "anchor": str(arch) == anchor,
                     "valid_loss": score_child(model, arch, batches),
                     "params": cost["params"], "flops": cost["flops"],
                     "seq_len": args.seq_len})
    width = max([len(r["arch"]) for r in rows] + [5])
    print(f"{'child':<{width}}  {'valid_loss':>10}  {'params':>10}  {'FLOPs@' + str(args.seq_len):>10}")
    for r in rows:
        note = "  (anchor)" if r["anchor"] else ""
        print(f"{r['arch']:<{width}}  {r['valid_loss']:>10.3f}  {r['params']:>10,}  "
              f"{r['flops']:>10.3g}{note}")
    # an ELECTRA super-net is scored by its discriminator (evaluation.child_loss_sums)
    unit = ("replaced-token-detection loss in bits per non-pad token"
            if hasattr(model, "rtd_loss_sums") else "loss in bits per masked token")
    print(f"search space: {space}; {unit} on {len(batches)} '{args.split}' batches")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"checkpoint": args.checkpoint, "space": space.state_dict(),
                       "children": rows}, f, indent=2)
    return 0


def cli_main():
    run_main(main, "magic-children")


if __name__ == "__main__":
    cli_main()
