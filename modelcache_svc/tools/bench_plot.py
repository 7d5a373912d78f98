"""Latency against entries, from a ``bench-scale`` JSON report (matplotlib: the [bench] extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for mode, colour in (("embedded", "tab:blue"), ("milvus", "tab:orange")):
        runs = sorted((x for x in report["runs"] if x["mode"] == mode), key=lambda x: x["entries"])
        if not runs:
            continue
        n = [x["entries"] for x in runs]
        left.plot(n, [x["semantic"]["p50_ms"] for x in runs], "o-", color=colour, label=f"{mode} p50")
        left.plot(n, [x["semantic"]["p99_ms"] for x in runs], "s--", color=colour, alpha=0.6, label=f"{mode} p99")
        stages = [x["semantic"].get("stages_mean_ms") or {} for x in runs]
        for stage, style in (("vector_search", "o-"), ("embed", "^:")):
            values = [float("nan") if s.get(stage) is None else s[stage] for s in stages]
            if any(v == v for v in values):  # not all NaN: that run recorded the stages
                right.plot(n, values, style, color=colour, label=f"{mode} {stage.replace('_', ' ')}")
    left.set_ylabel("semantic query over gRPC, ms (one client)")
    right.set_ylabel("server mean ms per stage, same phase")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("entries in the scope")
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    load = report["config"].get("load_average_before")
    fig.suptitle(f"modelcache-svc bench-scale: latency against entries (2 cores, load average {load})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
