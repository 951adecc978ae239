"""The timing harness the scripts in benchmarks/ share.

A benchmark here measures two or more things side by side in one process and
reports their ratio against a target. What every script needs for that lives
here, so a new benchmark is a short file that builds its things and formats its
table:

* ``time_interleaved``: time named callables in interleaved rounds after a
  warm-up; returns a ``Timing`` (per-name samples, round means, medians / means /
  mins / quartiles, ratios of any statistic, per-round and per-call ratios);
  ``timed`` (one call), ``clocked`` (every call of a method inside a real code
  path), ``device_sync``, ``torch_isolated`` (threads and RNG state restored);
* ``Ratio``: a measured ratio with its target and PASS/FAIL verdict (the table
  cell, the JSON fields), and ``check_exit`` for ``--check``;
* memory: ``tensor_bytes`` (storages, each once), ``optimizer_state_bytes``,
  ``saved_activations`` (what autograd keeps for backward), ``peak_rss_bytes``
  and ``current_rss_bytes`` of this process;
* the run record: ``command_line``/``run_stamp`` (the exact command, UTC date),
  ``machine_info`` (+ GPU), ``LoadWindow`` (1-minute load average before/after),
  ``header_lines`` (the Command/Date/Machine lines every RESULTS.md section
  opens with), ``load_note`` (the console warning for a contended run),
  ``publish`` (JSON merged, sections replaced and printed).
"""

import datetime
import gc
import itertools
import os
import shlex
import statistics
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

from benchmarks.common import host_info, load_avg, write_json, write_markdown

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- timing

def device_sync(device):
    """A no-argument function that waits for the work queued on ``device``
    (``torch.device`` or its name): a CUDA clock read means nothing before the
    kernels finish. A no-op on the CPU."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


@contextmanager
def gc_paused(enabled=True):
    """Collect now and keep the collector off inside: no collector pause lands
    in the numbers of whichever thing happened to allocate last."""
    if not enabled:
        yield
        return
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def gc_frozen():
    """Move every live object (fairseq, torch, the models) out of the collector's
    scans, so that the collection before each timed round stays cheap."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def round_orders(names):
    """The order of the names in each round: every permutation in turn (two
    names: A,B then B,A), so that none always runs right after another (cache,
    allocator and clock state left by the previous one)."""
    return list(itertools.permutations(names))


@dataclass
class Timing:
    """What ``time_interleaved`` measured, in seconds: ``seconds[name]`` every timed
    call in run order, ``round_means[name]`` the mean of each round's calls,
    ``values[name]`` what each timed call returned."""

    names: tuple
    seconds: dict
    round_means: dict
    values: dict

    def stat(self, name, how="median"):
        v = self.seconds[name]
        if how == "median":
            return statistics.median(v)
        if how == "mean":
            return statistics.fmean(v)
        if how == "min":
            return min(v)
        raise ValueError(f"statistic {how!r}: expected median, mean or min")

    def ms(self, how="median"):
        """{name: statistic in milliseconds}."""
        return {n: self.stat(n, how) * 1e3 for n in self.names}

    def quartiles_ms(self):
        """{name: [q1, median, q3] in milliseconds} (one sample: itself three times)."""
        out = {}
        for n in self.names:
            v = self.seconds[n]
            q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
            out[n] = [1e3 * x for x in q]
        return out

    def ratio(self, a, b, how="median"):
        """Statistic of ``a`` over the same statistic of ``b``."""
        return self.stat(a, how) / self.stat(b, how)

    def round_ratios(self, a, b):
        """Per round, mean of ``a``'s calls / mean of ``b``'s (same conditions)."""
        return paired_ratios(self.round_means[a], self.round_means[b])

    def call_ratios(self, a, b):
        """Call i of ``a`` / call i of ``b`` (same batch, same path where the
        caller made it so)."""
        return paired_ratios(self.seconds[a], self.seconds[b])

    def rounded_ms(self, which="seconds", ndigits=3):
        """{name: [each sample in ms, rounded]} of ``seconds`` or ``round_means``,
        for the JSON (per-sample lists at full precision are noise)."""
        return {n: [round(v * 1e3, ndigits) for v in vs]
                for n, vs in getattr(self, which).items()}

    @property
    def timed_per_name(self):
        return len(self.seconds[self.names[0]])


def paired_ratios(xs, ys):
    return [x / y for x, y in zip(xs, ys)]


def time_interleaved(steps, rounds, per_round=1, warmup=0, *, sync=None, after=None,
                     after_warmup=None, between_rounds=None, pause_gc=True):
    """Time named callables side by side; returns a ``Timing``.

    ``steps``: {name: fn(i)}, one unit of work (an update, a search, ...); ``i``
    counts that name's calls from 0, warm-up included, so ``batches[i % n]`` gives
    every name the same batch sequence. Each name first runs ``warmup`` untimed
    calls (allocator pools, optimizer state, kernel caches), then ``after_warmup()``
    runs (one-off setup the rounds need), then ``rounds`` rounds run ``per_round``
    timed calls of each name, in the orders of ``round_orders``. CPU clock, thermal
    state and neighbours drift over a run; timing all of one thing and then all of
    the other would fold that drift into the ratio, short alternating rounds
    expose every name to the same conditions.

    ``sync()`` runs before and after each timed call (``device_sync``);
    ``after(name, i, value, timed)`` after every call, warm-up included, outside
    the clock (bookkeeping); ``between_rounds(r)`` after round ``r``, outside the
    clock (e.g. a load reading, or something timed on its own between the rounds).
    With ``pause_gc`` the collector runs between rounds, never inside one, and
    the objects alive at the start are frozen out of its scans.
    """
    names = tuple(steps)
    if not names:
        raise ValueError("time_interleaved: nothing to time")
    if rounds < 1 or per_round < 1 or warmup < 0:
        raise ValueError(f"time_interleaved: rounds {rounds}, per_round {per_round}, "
                         f"warmup {warmup}: expected >= 1, >= 1, >= 0")
    sync = sync or (lambda: None)
    calls = dict.fromkeys(names, 0)

    def call(name, timed):
        i = calls[name]
        calls[name] += 1
        sync()
        t0 = time.perf_counter()
        value = steps[name](i)
        sync()
        dt = time.perf_counter() - t0
        if after is not None:
            after(name, i, value, timed)
        return dt, value

    for name in names:
        for _ in range(warmup):
            call(name, False)
    sync()
    if after_warmup is not None:
        after_warmup()

    seconds = {n: [] for n in names}
    round_means = {n: [] for n in names}
    values = {n: [] for n in names}
    orders = round_orders(names)
    with gc_frozen() if pause_gc else nullcontext():
        for r in range(rounds):
            for name in orders[r % len(orders)]:
                rec = []
                with gc_paused(pause_gc):
                    for _ in range(per_round):
                        dt, value = call(name, True)
                        rec.append(dt)
                        values[name].append(value)
                seconds[name].extend(rec)
                round_means[name].append(statistics.fmean(rec))
            if between_rounds is not None:
                with gc_paused(pause_gc):
                    between_rounds(r)
    return Timing(names, seconds, round_means, values)


def timed(fn, *args, sync=None, **kwargs):
    """(seconds, fn's value) of one call, synchronised like the rounds'."""
    sync = sync or (lambda: None)
    sync()
    t0 = time.perf_counter()
    value = fn(*args, **kwargs)
    sync()
    return time.perf_counter() - t0, value


@contextmanager
def clocked(owner, name, record, sync=None):
    """Inside, ``owner.name`` (a method, or a function of a module or class) is
    wrapped to append each call's seconds to ``record``: time one piece of a real
    code path that calls it (``self.score_arch``...) without copying that path.
    An instance attribute over a class's method is removed again on exit."""
    had, before = name in vars(owner), vars(owner).get(name)
    fn = getattr(owner, name)

    def wrapper(*args, **kwargs):
        dt, value = timed(fn, *args, sync=sync, **kwargs)
        record.append(dt)
        return value

    setattr(owner, name, wrapper)
    try:
        yield record
    finally:
        if had:
            setattr(owner, name, before)
        else:
            delattr(owner, name)


# ---------------------------------------------------------------- verdicts

@dataclass(frozen=True)
class Ratio:
    """A measured ratio and the target it must not exceed."""

    value: float
    target: float

    @property
    def passed(self) -> bool:
        return self.value <= self.target

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def record(self) -> dict:
        """The JSON fields every script writes beside the value."""
        return {"target": self.target, "pass": self.passed}

    def target_cell(self) -> str:
        return f"<= {self.target} ({self.verdict})"

    def row(self, label: str, fmt: str = ".3f") -> str:
        """``| label | value | <= target (PASS) |``: a row of a ratio/value/target table."""
        return f"| {label} | {self.value:{fmt}} | {self.target_cell()} |"


RATIO_TABLE_HEAD = ["| ratio | value | target |", "|---|---:|---|"]


def check_exit(check: bool, passes) -> int:
    """The exit code: 0 whatever the ratios, unless ``--check`` and one failed."""
    return 1 if check and not all(passes) else 0


# ---------------------------------------------------------------- memory

def tensor_bytes(tensors) -> int:
    """Bytes of the storages behind ``tensors`` (None skipped), each storage
    counted once: views and tied weights share one."""
    seen, total = set(), 0
    for t in tensors:
        if t is None:
            continue
        key = (t.untyped_storage().data_ptr(), t.device)
        if key in seen:
            continue
        seen.add(key)
        total += t.untyped_storage().nbytes()
    return total


def optimizer_state_bytes(optimizer) -> int:
    """Bytes of a torch (or fairseq-wrapped) optimizer's per-parameter state."""
    import torch

    inner = getattr(optimizer, "optimizer", optimizer)
    return tensor_bytes(v for state in inner.state.values() for v in state.values()
                        if torch.is_tensor(v))


@contextmanager
def saved_activations(model):
    """Inside: every tensor autograd saves for backward that is not a parameter
    (deduplicated by storage) is counted; ``record["bytes"]`` at exit."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen, record = set(), {"bytes": 0}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params and ptr not in seen:
            seen.add(ptr)
            record["bytes"] += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield record


def peak_rss_bytes() -> int:
    """This process's peak resident set so far."""
    import resource
    import sys

    # ru_maxrss is in kilobytes on Linux, bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def current_rss_bytes() -> int:
    """This process's resident set now (Linux; elsewhere the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


# ---------------------------------------------------------------- run record

def command_line(script: str, argv) -> str:
    """``python benchmarks/X.py ARGS``, as typed from the repository root."""
    rel = os.path.relpath(os.path.abspath(script), REPO)
    return " ".join(["python", rel] + [shlex.quote(a) for a in argv])


def utc_date() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_stamp(script: str, argv) -> dict:
    """{"command", "date"} of this run."""
    return {"command": command_line(script, argv), "date": utc_date()}


def resolve(path, default: str) -> str:
    """A given path is taken as the user typed it (relative to the cwd); a default
    lives in the repository wherever the script is run from."""
    return os.path.abspath(path) if path else os.path.join(REPO, default)


def machine_info(device: str = "cpu") -> dict:
    """``host_info()``, plus the GPU's name when timing on CUDA."""
    info = host_info()
    if str(device).startswith("cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name(0)
    return info


class LoadWindow:
    """The 1-minute load average before and after a timed part: on a shared
    machine, a load above the thread count means the numbers measure the
    neighbours too. ``with LoadWindow() as load: ...``; ``load.record()``."""

    def __init__(self):
        self.before = self.after = None

    def __enter__(self):
        self.before = load_avg()
        return self

    def __exit__(self, *exc):
        self.after = load_avg()
        return False

    def record(self) -> dict:
        return {"before": self.before, "after": self.after}


def machine_line(machine: dict, threads=None, load=None, device=None, note=None) -> str:
    """CPU, CPU count (torch threads), load before/after, GPU; device; versions."""
    line = f"{machine['cpu']}, {machine['cpu_count']} CPUs"
    if threads is not None:
        line += f" (torch threads {threads})"
    if note:
        line += f", {note}"
    if (load or {}).get("before") is not None:
        line += (f", 1-min load average {load['before']:.2f} before / "
                 f"{load['after']:.2f} after")
    if "gpu" in machine:
        line += f", GPU {machine['gpu']}"
    if device is not None:
        line += f"; device `{device}`"
    return line + f"; torch {machine['torch']}, Python {machine['python']}"


def header_lines(command: str, date: str, machine: str, command_note: str = "") -> list:
    """The lines every RESULTS.md section opens with (``machine``: ``machine_line``;
    ``command_note``: e.g. where numbers kept from an earlier run came from)."""
    note = f" {command_note}" if command_note else ""
    return [f"- Command: `{command}`{note}", f"- Date: {date}", f"- Machine: {machine}"]


def md_section(begin: str, end: str, title: str, lines) -> str:
    """A RESULTS.md section between its markers: ``## title``, a blank line, ``lines``."""
    return "\n".join([begin, f"## {title}", "", *lines, end]) + "\n"


def load_note(load, threads, cpus=None):
    """The console warning for a run whose load exceeded its thread count, or None."""
    if (load or {}).get("before") is None or \
            max(load["before"], load["after"]) <= threads + 0.5:
        return None
    cores = f" with {cpus} CPUs" if cpus else ""
    return (f"note: 1-min load average {load['before']:.2f} -> {load['after']:.2f}{cores}: "
            "other processes competed for the cores, so the times include their noise")


def publish(json_path: str, result: dict, md_path: str, sections, notes=()) -> None:
    """Merge ``result`` into the JSON at ``json_path``, replace each (begin, end,
    text) section of ``md_path`` and print it, then the non-empty ``notes``."""
    write_json(json_path, result)
    for begin, end, text in sections:
        write_markdown(md_path, text, begin, end)
        print(text)
    for note in notes:
        if note:
            print(note)
    print(f"wrote {os.path.relpath(json_path)} and {os.path.relpath(md_path)}")


@contextmanager
def torch_isolated(threads=0, device="cpu"):
    """Inside: ``threads`` torch threads (0: leave torch's default) and a forked
    RNG state; on exit the caller's thread count and RNG state are as they were
    (a benchmark's main() also runs in-process, from the tests)."""
    import torch

    before = torch.get_num_threads()
    devices = [torch.cuda.current_device()] if str(device).startswith("cuda") else []
    try:
        with torch.random.fork_rng(devices=devices):
            if threads > 0:
                torch.set_num_threads(threads)
            yield
    finally:
        torch.set_num_threads(before)
