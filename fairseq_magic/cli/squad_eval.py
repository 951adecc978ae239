"""magic-squad-eval: score SQuAD predictions with the official evaluation's definitions.

    magic-squad-eval DATA_FILE PRED_FILE [--na-prob-file NA_FILE]
        [--na-prob-thresh 1.0] [--out-file OUT]

The arguments of the official SQuAD v2.0 evaluation script. DATA_FILE: the
official SQuAD JSON (v1.1 or v2.0). PRED_FILE: a JSON object question id ->
answer text ("" means no answer). NA_FILE: question id -> no-answer probability;
a question whose probability is above --na-prob-thresh counts as answered "no
answer", and the best thresholds for EM and F1 are searched.

Prints one JSON object with the official keys, in percent: exact, f1, total,
HasAns_exact/f1/total and NoAns_exact/f1/total (the splits the data has), and
with NA_FILE best_exact, best_exact_thresh, best_f1, best_f1_thresh; --out-file
also writes it there (atomically). Questions without a prediction score 0 (the
official v1.1 script's rule), with a warning. Definitions:
fairseq_magic/core/squad_metrics.py.
"""

import argparse
import json
import math
import os
import sys
import tempfile

from . import run_main
from ..core.space import MagicConfigError
from ..core.squad_metrics import evaluate_files

PROG = "magic-squad-eval"


def get_parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_file", metavar="DATA_FILE", help="official SQuAD JSON (v1.1 or v2.0)")
    p.add_argument("pred_file", metavar="PRED_FILE",
                   help="JSON object: question id -> answer text (\"\" for no answer)")
    p.add_argument("--na-prob-file", "-n", metavar="NA_FILE",
                   help="JSON object: question id -> no-answer probability")
    p.add_argument("--na-prob-thresh", "-t", type=float, default=1.0, metavar="T",
                   help="a no-answer probability above T means no answer (default: 1.0)")
    p.add_argument("--out-file", "-o", metavar="OUT", help="also write the JSON result here")
    return p


def _write_atomically(path, text):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-",
                               suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the scores from others
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None):
    args = get_parser().parse_args(argv)
    if math.isnan(args.na_prob_thresh):
        raise MagicConfigError(f"--na-prob-thresh {args.na_prob_thresh}: expected a number")
    if args.out_file is not None:
        out_dir = os.path.dirname(os.path.abspath(args.out_file))
        if os.path.isdir(args.out_file) or not os.path.isdir(out_dir):
            raise MagicConfigError(f"--out-file {args.out_file!r}: expected a file path in an "
                                   "existing directory")
    result, missing = evaluate_files(args.data_file, args.pred_file, args.na_prob_file,
                                     args.na_prob_thresh)
    if missing:
        total = result["total"]
        print(f"{PROG}: warning: {len(missing)} of {total} questions in {args.data_file} have "
              f"no prediction in {args.pred_file} (first: {missing[0]!r}); they score 0",
              file=sys.stderr)
    text = json.dumps(result, indent=2)
    if args.out_file is not None:
        _write_atomically(args.out_file, text + "\n")
    print(text)
    return 0


def cli_main():
    run_main(main, PROG)


if __name__ == "__main__":
    cli_main()
