"""The paper's accuracy against measured throughput: one picture per `cnp bench --plot`.

matplotlib is an optional extra (`pip install cnp[plot]`); without it, `require_matplotlib`
raises PlotUnavailable with one readable line.
"""

from __future__ import annotations

from pathlib import Path

from cnp.specs import PAPER

SUFFIXES = (".png", ".svg", ".pdf")


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib, an optional extra: pip install 'cnp[plot]'") from None
    matplotlib.use("Agg")  # files only: never open a window
    import matplotlib.pyplot as plt
    return plt


def plot_mpjpe_vs_throughput(results: list[dict], machine: dict, path: Path) -> None:
    """Paper MPJPE (mm, lower is better) against measured img/s, eager and fast, per variant."""
    plt = require_matplotlib()
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for row in results:
        mpjpe = PAPER[row["variant"]].mpjpe
        label = row["variant"].upper()
        eager, fast = row["backends"]["eager"]["img_s"], row["backends"]["fast"]["img_s"]
        axes.plot([eager, fast], [mpjpe, mpjpe], color="0.7", zorder=1)
        axes.scatter(eager, mpjpe, facecolors="none", edgecolors="tab:blue",
                     s=60, zorder=2, label="eager" if row is results[0] else None)
        axes.scatter(fast, mpjpe, color="tab:orange", s=60, zorder=3,
                     label="fast (cnp.fast)" if row is results[0] else None)
        axes.annotate(label, (fast, mpjpe), textcoords="offset points",
                      xytext=(8, 4), fontsize=11, weight="bold")
    batch = results[0]["batch"]
    axes.set_xlabel(f"measured throughput, images/s (batch {batch}, 3x256x256)")
    axes.set_ylabel("MPJPE, mm (paper, Human3.6M Protocol 2)")
    axes.set_title(f"ConvNeXtPose: paper accuracy vs throughput\n{machine['cpu']}, "
                   f"{machine['torch_threads']} threads, torch {machine['torch']}", fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.margins(x=0.15, y=0.15)
    axes.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
