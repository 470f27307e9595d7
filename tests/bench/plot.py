"""Optional PNG: wait-time distributions of the contended runs, polling vs server-side waiting (needs matplotlib)."""

from __future__ import annotations


def plot(data, path):
    """Writes `path` and returns None, or returns why no plot was made."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib into .venv for results/contended-waits.png)"
    panels = []
    for backend, run in data["runs"].items():
        runs = run.get("contended", {}).get("runs", [])
        for hold in sorted({r["hold_ms"] for r in runs}):
            panels.append((backend, hold, [r for r in runs if r["hold_ms"] == hold and r.get("wait_percentiles_ms")]))
    if not panels:
        return "no contended runs to plot"
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (backend, hold, runs) in zip(axes[0], panels, strict=True):
        for r in runs:
            qs = list(range(len(r["wait_percentiles_ms"])))
            style = "-" if r["mode"] == "waiting" else "--"
            ax.plot(r["wait_percentiles_ms"], qs, style, label=f"{r['executor']}, {r['mode']}")
        ax.set_xscale("log")
        ax.set_xlabel("wait from request to grant (ms, log)")
        ax.set_ylabel("percentile")
        ax.set_title(f"{backend}: limit 5, 20 clients, {hold} ms holds")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
