"""fairseq-train on several CPU processes (gloo), one process per rank.

Launch it with torchrun, which starts the ranks and sets RANK / WORLD_SIZE /
MASTER_ADDR / MASTER_PORT for each::

    torchrun --standalone --nproc_per_node 2 -m fairseq_magic.cli.train_cpu_ddp \\
        DATA-BIN --user-dir fairseq_magic --task magic --arch magic_supernet ... \\
        --save-dir checkpoints/cpu2

or start ``python -m fairseq_magic.cli.train_cpu_ddp ARGS`` by hand once per rank
with those four variables set. Everything after the module name is ordinary
fairseq-train arguments; this launcher appends the distributed ones.

Why a launcher at all: plain fairseq-train cannot run data-parallel on CPU
(measured with fairseq main / ve-fairseq 0.12.3, torch 2.13):

* ``--distributed-world-size 2 --distributed-backend gloo --cpu`` fails with
  ``AssertionError: world size is 2 but have 0 available devices`` (fairseq
  counts CUDA devices to decide how many ranks to spawn).
* ``torchrun --nproc_per_node 2 fairseq-train ...`` exits 0 but trains two
  independent single-process runs into one save dir (fairseq's default world
  size is the CUDA device count, 0 -> 1); adding ``--distributed-world-size 2``
  gives ``ZeroDivisionError: integer modulo by zero`` (device id =
  rank % cuda.device_count()).
* ``--distributed-init-method tcp://...`` without ``--distributed-no-spawn``
  spawns nothing and exits 0 without training.
* ``--ddp-backend c10d`` / ``pytorch_ddp`` on CPU fails in PyTorch with
  ``ValueError: DistributedDataParallel device_ids and output_device arguments
  only work with ... CPU modules, but got device_ids [0]``: fairseq hard-codes
  ``device_ids=[args.device_id]``. See :func:`apply_cpu_ddp_shim`.

What works (and is what this module does): each rank gets an explicit rank and
world size, ``env://`` rendezvous, ``--distributed-no-spawn`` and
``--device-id 0``, plus the DDP shim.
"""

import os
import sys
from typing import List, Mapping, Optional, Sequence

USAGE = """\
this launcher needs the torch.distributed environment variables {missing}.
Start it with torchrun, which sets them for every rank, e.g. for 2 CPU ranks:

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 \\
        -m fairseq_magic.cli.train_cpu_ddp DATA-BIN --user-dir fairseq_magic \\
        --task magic --arch magic_supernet ... --save-dir DIR

or start one process per rank yourself with RANK=0..N-1, WORLD_SIZE=N,
MASTER_ADDR=127.0.0.1 and MASTER_PORT=<free port> in its environment.
"""

# Options this launcher sets from the environment. A user value that
# disagrees would silently be overridden (argparse keeps the last one), so
# conflicts are refused instead.
_OWNED_VALUE_OPTIONS = ("--distributed-rank", "--distributed-world-size",
                        "--distributed-init-method", "--distributed-backend",
                        "--device-id")


class LauncherError(ValueError):
    """A launch mistake; cli_main() prints it and exits with status 2."""


def _option_value(argv: Sequence[str], option: str) -> Optional[str]:
    """The last value given for ``option`` (``--opt V`` or ``--opt=V``), or None."""
    value = None
    for i, arg in enumerate(argv):
        if arg == option and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(option + "="):
            value = arg[len(option) + 1:]
    return value


def rank_and_world_size(env: Mapping[str, str]):
    """(rank, world_size) from the torchrun environment; LauncherError if absent."""
    needed = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    missing = [k for k in needed if not env.get(k)]
    if missing:
        raise LauncherError(USAGE.format(missing=", ".join(missing)))
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    except ValueError:
        raise LauncherError(
            f"RANK={env['RANK']!r} and WORLD_SIZE={env['WORLD_SIZE']!r} must be integers")
    if world < 1 or not 0 <= rank < world:
        raise LauncherError(f"need 0 <= RANK < WORLD_SIZE, got RANK={rank} "
                            f"WORLD_SIZE={world}")
    return rank, world


def distributed_argv(argv: Sequence[str], env: Mapping[str, str]) -> List[str]:
    """fairseq-train arguments (without the program name) plus the distributed
    options for this rank, taken from ``env`` (RANK, WORLD_SIZE; MASTER_ADDR and
    MASTER_PORT are read by ``env://`` itself)."""
    rank, world = rank_and_world_size(env)
    argv = list(argv)
    owned = {
        # gloo: the CPU backend; env://: rendezvous on MASTER_ADDR/MASTER_PORT
        # that torchrun exported.
        "--distributed-backend": "gloo",
        "--distributed-init-method": "env://",
        # Explicit rank and world size: fairseq would otherwise infer the
        # world size from torch.cuda.device_count() (0 on CPU, see the module
        # docstring for the resulting failures).
        "--distributed-rank": str(rank),
        "--distributed-world-size": str(world),
        # Every rank runs on "device" 0: fairseq's distributed_main() uses it
        # only for torch.cuda.set_device(), which --cpu skips.
        "--device-id": "0",
    }
    for option in _OWNED_VALUE_OPTIONS:
        given = _option_value(argv, option)
        if given is not None and given != owned[option]:
            raise LauncherError(
                f"{option} {given} conflicts with the launcher ({option} "
                f"{owned[option]}, from the torchrun environment): drop it")
    extra = ["--cpu"]
    for option, value in owned.items():
        extra += [option, value]
    # torchrun already started one process per rank: fairseq must not spawn.
    extra.append("--distributed-no-spawn")
    # A super-net trains one sampled path per update, so most parameters get
    # no gradient. c10d (torch DDP) leaves their .grad None when told to look
    # for unused parameters; without the flag DDP fails with "RuntimeError:
    # Expected to have finished reduction in the prior iteration". An explicit
    # user choice is kept; MagicTask's check_training_setup() then refuses
    # legacy_ddp/no_c10d (zero-filled grads: Adam moves unused candidates) and
    # c10d without --find-unused-parameters.
    if _option_value(argv, "--ddp-backend") is None:
        extra += ["--ddp-backend", "c10d", "--find-unused-parameters"]
    return argv + extra


def _on_cpu(module) -> bool:
    params = list(module.parameters())
    return bool(params) and all(p.device.type == "cpu" for p in params)


def apply_cpu_ddp_shim() -> type:
    """Make fairseq's c10d/pytorch_ddp wrapper accept CPU modules.

    fairseq/models/distributed_fairseq_model.py builds
    ``DistributedDataParallel(module=..., device_ids=[args.device_id],
    output_device=args.device_id, ...)``. For a module on CPU PyTorch rejects
    that with ``ValueError: DistributedDataParallel device_ids and
    output_device arguments only work with single-device/multiple-device GPU
    modules or CPU modules, but got device_ids [0], output_device 0, and module
    parameters {device(type='cpu')}``: CPU modules need both to be None.

    We rebind the name ``DistributedDataParallel`` in that fairseq module (only
    there: torch itself is untouched) to a subclass of torch's DDP that passes
    None for both when every parameter is on CPU and changes nothing on GPU.
    Being a real subclass keeps ``isinstance(m, DistributedDataParallel)``
    checks working (fairseq's trainer, MagicTask.check_training_setup).
    Idempotent; returns the class now in use.
    """
    import fairseq.models.distributed_fairseq_model as dfm
    from torch.nn.parallel import DistributedDataParallel

    current = dfm.DistributedDataParallel
    if getattr(current, "_magic_cpu_shim", False):
        return current

    class CpuFriendlyDistributedDataParallel(current):
        _magic_cpu_shim = True

        def __init__(self, module, device_ids=None, output_device=None, *args, **kwargs):
            if _on_cpu(module):
                device_ids, output_device = None, None
            super().__init__(module, device_ids, output_device, *args, **kwargs)

    assert issubclass(CpuFriendlyDistributedDataParallel, DistributedDataParallel)
    dfm.DistributedDataParallel = CpuFriendlyDistributedDataParallel
    return CpuFriendlyDistributedDataParallel


def cli_main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of ``magic-train-cpu-ddp`` / ``python -m`` this module."""
    args = list(sys.argv[1:] if argv is None else argv)
    # Check the environment before fairseq starts (its errors would be obscure).
    try:
        full = distributed_argv(args, os.environ)
    except LauncherError as e:
        print(f"magic-train-cpu-ddp: error: {e}", file=sys.stderr)
        sys.exit(2)
    apply_cpu_ddp_shim()
    from fairseq_cli.train import cli_main as fairseq_train_main

    # fairseq-train parses sys.argv itself.
    sys.argv = [sys.argv[0] if sys.argv else "magic-train-cpu-ddp", *full]
    fairseq_train_main()


if __name__ == "__main__":
    cli_main()
