"""Garbage-collector experiments on the Concord process, without changing Concord.

A `sitecustomize.py` written into the bench's work directory and put first on Concord's
PYTHONPATH runs before Concord starts. It can set the collector's thresholds, turn it off,
or freeze what the warm server holds (on SIGUSR2). It times every collection with
`gc.callbacks` in CPU time (process_time: on a busy machine, wall time would also count the
moments the process waits for a core). On SIGUSR1 the process writes its totals (seconds
and collections per generation) to a JSON file, so the harness can take the difference
over a run.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

SITE = """
import gc, json, signal, time

_totals = {"seconds": [0.0, 0.0, 0.0], "collections": [0, 0, 0], "dumps": 0}
_started = [0.0]

def _on_gc(phase, info):
    if phase == "start":
        _started[0] = time.process_time()
    else:
        _totals["seconds"][info["generation"]] += time.process_time() - _started[0]
        _totals["collections"][info["generation"]] += 1

def _dump(signum, frame):
    _totals["dumps"] += 1
    with open(__STATS__ + ".tmp", "w") as out:
        json.dump(_totals, out)
    import os
    os.replace(__STATS__ + ".tmp", __STATS__)

def _freeze(signum, frame):
    gc.collect()
    gc.freeze()

gc.callbacks.append(_on_gc)
signal.signal(signal.SIGUSR1, _dump)
signal.signal(signal.SIGUSR2, _freeze)
__SETTING__
"""


def prepare(workdir: Path, setting: str) -> tuple[dict[str, str], Path]:
    """Concord's extra environment and the stats file for `setting`.

    `setting`: "default" (only measure), "off" (gc.disable()), "T0,T1,T2" (thresholds) or
    "freeze" (gc.freeze() once the server is up and warm: `freeze` below, on SIGUSR2).
    """
    site_dir = workdir / "gc-site"
    site_dir.mkdir(exist_ok=True)
    stats = workdir / "gc-stats.json"
    if setting in ("default", "freeze"):
        action = ""
    elif setting == "off":
        action = "gc.disable()"
    else:
        thresholds = [int(part) for part in setting.split(",")]
        if len(thresholds) != 3:
            raise ValueError("--concord-gc wants default, off, freeze or T0,T1,T2")
        action = f"gc.set_threshold({thresholds[0]}, {thresholds[1]}, {thresholds[2]})"
    code = SITE.replace("__STATS__", repr(str(stats))).replace("__SETTING__", action)
    (site_dir / "sitecustomize.py").write_text(code)
    path = os.pathsep.join(p for p in (str(site_dir), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}, stats


def snapshot(pid: int, stats: Path, limit: float = 10.0) -> dict[str, Any]:
    """Ask the process for its totals and read them (the handler runs between bytecodes)."""
    seen = json.loads(stats.read_text())["dumps"] if stats.exists() else 0
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if stats.exists():
            totals: dict[str, Any] = json.loads(stats.read_text())
            if totals["dumps"] > seen:
                return totals
        time.sleep(0.02)
    raise TimeoutError(f"no GC totals from pid {pid} within {limit:.0f} s")


def freeze(pid: int) -> None:
    """gc.collect() and gc.freeze() in the process: what it holds now is never scanned again."""
    os.kill(pid, signal.SIGUSR2)
    time.sleep(1)


def difference(before: dict[str, Any], after: dict[str, Any], served: int) -> dict[str, float]:
    """GC milliseconds and full (generation 2) collections per request over a run."""
    seconds = sum(after["seconds"]) - sum(before["seconds"])
    full = after["collections"][2] - before["collections"][2]
    return {"gc_ms_per_req": 1000 * seconds / served, "gc_full_per_req": full / served}
