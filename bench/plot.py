"""PNG charts of a benchmark run: one per suite, each figure beside its baseline.

matplotlib is the optional `bench` extra; without it, write_charts says how to
install it and returns. Suites whose figures carry sizes in `params` get line
charts over those sizes (log scales where sizes grow); any other suite gets
bars: median of each figure beside its baseline's, with min-max whiskers.
"""

from __future__ import annotations

import os
from collections import defaultdict

from .common import Figure

VALUE = "#1f77b4"      # the actor / the thing measured
BASE = "#d62728"       # the baseline
EXTRA = "#2ca02c"


def write_charts(figures: list[Figure], directory: str) -> list[str]:
    """Write DIRECTORY/<suite>.png for every suite in `figures`; returns the paths."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("charts need matplotlib: pip install -e '.[bench]'")
        return []
    os.makedirs(directory, exist_ok=True)
    by_suite: dict[str, list[Figure]] = defaultdict(list)
    for f in figures:
        by_suite[f.suite].append(f)
    paths = []
    for suite, group in by_suite.items():
        draw = _SPECIAL.get(suite, _bars)
        try:
            fig = draw(plt, suite, group)
        except (KeyError, ValueError, TypeError):   # params not as expected: plain bars
            plt.close("all")
            fig = _bars(plt, suite, group)
        path = os.path.join(directory, f"{suite}.png")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    print(f"charts: {', '.join(paths)}")
    return paths


# -- helpers -------------------------------------------------------------------------------

def _line(ax, xs, figs, *, baseline: bool, label: str, color: str, marker: str = "o",
          style: str = "-") -> None:
    """Medians over xs, with min-max whiskers."""
    ys, lo, hi = [], [], []
    for f in figs:
        samples = f.baseline_samples if baseline else f.samples
        m = f.baseline_median if baseline else f.median
        ys.append(m)
        lo.append(m - min(samples))
        hi.append(max(samples) - m)
    ax.errorbar(xs, ys, yerr=[lo, hi], label=label, color=color, marker=marker,
                linestyle=style, capsize=3, markersize=4)


def _size_label(n: float) -> str:
    return f"{n / 1e6:g}M" if n >= 1e6 else f"{n / 1e3:g}k" if n >= 1e3 else f"{n:g}"


# -- generic: bars, one panel per unit ---------------------------------------------------------

def _bars(plt, suite: str, group: list[Figure]):
    units: dict[str, list[Figure]] = defaultdict(list)
    for f in group:
        units[f.unit].append(f)
    height = sum(0.45 * len(fs) + 1.0 for fs in units.values())
    fig, axes = plt.subplots(len(units), 1, figsize=(10, max(3.0, height)), squeeze=False,
                             gridspec_kw={"height_ratios": [len(fs) + 1 for fs in units.values()]})
    for ax, (unit, fs) in zip(axes[:, 0], units.items()):
        ys = range(len(fs))
        second = [f for f in fs if f.second_baseline]
        # Two bars per figure, or three where some figure has a second baseline
        # (rtt, throughput: the actor, the I/O floor, the bare echo).
        width = 0.27 if second else 0.4
        offset = width if second else 0.2
        ax.barh([y - offset for y in ys], [f.median for f in fs], width, color=VALUE,
                xerr=[[f.median - min(f.samples) for f in fs], [max(f.samples) - f.median for f in fs]],
                label="measured", capsize=2)
        ax.barh([y + offset for y in ys], [f.baseline_median for f in fs], width, color=BASE,
                xerr=[[f.baseline_median - min(f.baseline_samples) for f in fs],
                      [max(f.baseline_samples) - f.baseline_median for f in fs]],
                label="baseline (same run)", capsize=2)
        if second:
            at = [y for y, f in zip(ys, fs) if f.second_baseline]
            ax.barh(at, [f.second_baseline_median for f in second], width, color=EXTRA,
                    xerr=[[f.second_baseline_median - min(f.second_baseline_samples) for f in second],
                          [max(f.second_baseline_samples) - f.second_baseline_median for f in second]],
                    label="second baseline (same run)", capsize=2)
        ax.set_yticks(list(ys))
        ax.set_yticklabels([_bar_label(f) for f in fs], fontsize=7)
        ax.invert_yaxis()
        values = [v for f in fs for v in (*f.samples, *f.baseline_samples,
                                          *f.second_baseline_samples) if v > 0]
        if values and max(values) / min(values) > 100:
            ax.set_xscale("log")
        ax.set_xlabel(unit)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{suite}: median of the repetitions, min-max whiskers")
    return fig


def _bar_label(f: Figure) -> str:
    label = f"{f.name}\nvs {f.baseline} ({f.ratio:.2f}x)"
    if f.second_baseline:
        label += f", {f.second_baseline} ({f.second_ratio:.2f}x)"
    return label


# -- wheel ---------------------------------------------------------------------------------------

def _wheel(plt, suite: str, group: list[Figure]):
    by_op: dict[str, list[Figure]] = defaultdict(list)
    for f in group:
        by_op[f.params["op"]].append(f)
    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    panels = [("schedule", "schedule ops/s"), ("cancel", "cancel ops/s"),
              ("expire", "expire ops/s"), ("memory", "peak memory arming (MiB)")]
    for ax, (op, title) in zip(axes.flat, panels):
        fs = sorted(by_op[op], key=lambda f: f.params["timers"])
        xs = [f.params["timers"] for f in fs]
        _line(ax, xs, fs, baseline=False, label="timer wheel", color=VALUE)
        _line(ax, xs, fs, baseline=True, label=fs[0].baseline, color=BASE, marker="s")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([_size_label(x) for x in xs])
        ax.set_xlabel("armed timers")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    ax = axes.flat[4]
    mix = by_op["mix"][0]
    ax.bar([0, 1], [mix.median, mix.baseline_median], color=[VALUE, BASE],
           yerr=[[mix.median - min(mix.samples), mix.baseline_median - min(mix.baseline_samples)],
                 [max(mix.samples) - mix.median, max(mix.baseline_samples) - mix.baseline_median]],
           capsize=4)
    ax.set_xticks([0, 1])
    ax.set_xticklabels(["timer wheel", mix.baseline])
    ax.set_title(f"realistic mix ops/s ({mix.ratio:.2f}x)")
    ax.grid(axis="y", alpha=0.3)
    ax = axes.flat[5]
    memory = by_op["mix memory"][0]
    curve = memory.params["curve"]
    for name, color in (("wheel", VALUE), ("heap", BASE)):
        points = curve[name]
        ax.plot([t for t, _ in points], [kib / 1024 for _, kib in points], marker="o",
                color=color, label="timer wheel" if name == "wheel" else memory.baseline)
    ax.set_xlabel("simulated seconds of the mix")
    ax.set_ylabel("MiB held")
    ax.set_title("memory along the mix (90% cancelled)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("wheel: actor's timer wheel vs heapq with lazy deletion (median, min-max)")
    fig.tight_layout()
    return fig


# -- guarantee -------------------------------------------------------------------------------------

def _guarantee(plt, suite: str, group: list[Figure]):
    sweep = sorted((f for f in group if f.params["series"] == "sweep"),
                   key=lambda f: f.params["evses"])
    apply = sorted((f for f in group if f.params["series"] == "apply"),
                   key=lambda f: f.params["evses"])
    bare = sorted((f for f in group if f.params["series"] == "guarantee_holds"),
                  key=lambda f: f.params["evses"])
    fig, ax = plt.subplots(figsize=(10, 6))
    _line(ax, [f.params["evses"] for f in sweep], sweep, baseline=True,
          label="EVerest arrival-order enumeration (p50)", color=BASE, marker="s")
    worst = [(f.params["evses"], f.params.get("worst_s")) for f in sweep]
    if all(w is not None for _, w in worst):
        ax.plot([n for n, _ in worst], [w * 1e3 for _, w in worst], color=BASE, linestyle=":",
                marker="x", label="enumeration, slowest decision")
    capped = sweep[-1].params.get("capped_at")
    if capped:
        cap_ms = sweep[-1].params["cap_s"] * 1e3
        ax.plot([capped], [cap_ms], marker="*", markersize=12, color=BASE, linestyle="none",
                label=f"enumeration: one decision passed {cap_ms / 1e3:g} s (stopped)")
    xs = sorted({f.params["evses"] for f in sweep + apply})
    mine = sorted(sweep + apply, key=lambda f: f.params["evses"])
    # One point per size: the main-size measurement where both exist.
    seen: dict[int, Figure] = {}
    for f in mine:
        seen[f.params["evses"]] = f
    _line(ax, xs, [seen[n] for n in xs], baseline=False,
          label="reserve_now (ReservationCore.apply, p50)", color=VALUE)
    if bare:
        _line(ax, [f.params["evses"] for f in bare], bare, baseline=False,
              label="guarantee_holds alone (p50)", color=EXTRA, marker="^", style="--")
    for f in apply:
        if f.limit is not None:
            ax.axhline(f.limit, color="grey", linestyle="--", linewidth=1)
            ax.annotate(f"target: p50 <= {f.limit:g} {f.unit} at {f.params['evses']} EVSEs",
                        (f.params["evses"], f.limit), textcoords="offset points", xytext=(-200, 6),
                        fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("EVSEs (non-EVSE-specific reserve_now requests: 0.75 per EVSE, 4 connector types)")
    ax.set_ylabel("decision time (ms)")
    ax.set_title("guarantee: decision time as the station grows (median of repetitions, min-max)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    return fig


# -- expiry ------------------------------------------------------------------------------------------

def _expiry(plt, suite: str, group: list[Figure]):
    stores: dict[str, list[Figure]] = defaultdict(list)
    for f in group:
        stores[f.params["store"]].append(f)
    fig, ax = plt.subplots(figsize=(9, 5))
    width = 0.8 / len(stores)
    colors = [VALUE, EXTRA, "#9467bd"]
    quantiles = ["p50", "p99", "max"]
    for i, (store, fs) in enumerate(stores.items()):
        fs = {f.params["q"]: f for f in fs}
        xs = [q + (i - (len(stores) - 1) / 2) * width for q in range(len(quantiles))]
        present = [fs[q] for q in quantiles]
        ax.bar(xs, [f.median for f in present], width, color=colors[i % len(colors)],
               yerr=[[f.median - min(f.samples) for f in present],
                     [max(f.samples) - f.median for f in present]], capsize=3,
               label=f"store synchronous={store}")
    sample = group[0]
    ax.axhline(sample.baseline_median, color=BASE, linestyle="-", linewidth=1.5,
               label=sample.baseline)
    limits = [f.limit for f in group if f.limit is not None]
    if limits:
        ax.axhline(limits[0], color="grey", linestyle="--", linewidth=1,
                   label=f"target: p99 <= {limits[0]:g} ms")
    highest = max(max(f.samples) for f in group)
    if highest > 10 * sample.baseline_median:   # a few slow rounds would flatten the rest
        ax.set_yscale("log")
    ax.set_xticks(range(len(quantiles)))
    ax.set_xticklabels([f"lateness {q}" for q in quantiles])
    ax.set_ylabel("ms after expiry_time")
    n = sample.params.get("reservations")
    ax.set_title(f"expiry: {n:,} reservations expiring within one second, end to end")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


# -- rtt, throughput: the actor beside the I/O floor and the bare echo --------------------------

def _three_way(plt, group: list[Figure], panel_of, x_of, title: str, ylabel: str):
    """One panel per setting (transport, listeners), grouped bars over x: the
    actor, the I/O floor and the bare echo, medians with min-max whiskers."""
    panels: dict[str, list[Figure]] = defaultdict(list)
    for f in group:
        if f.params["kind"] == "actor" and panel_of(f) is not None:
            panels[panel_of(f)].append(f)
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), squeeze=False)
    for ax, (panel, fs) in zip(axes[0], panels.items()):
        xs = range(len(fs))
        series = [("actor", VALUE, lambda f: (f.samples, f.median)),
                  (fs[0].second_baseline, EXTRA,
                   lambda f: (f.second_baseline_samples, f.second_baseline_median)),
                  (fs[0].baseline, BASE, lambda f: (f.baseline_samples, f.baseline_median))]
        for i, (label, color, pick) in enumerate(series):
            picked = [pick(f) for f in fs]
            ax.bar([x + (i - 1) * 0.27 for x in xs], [m for _, m in picked], 0.27, color=color,
                   yerr=[[m - min(v) for v, m in picked], [max(v) - m for v, m in picked]],
                   capsize=3, label=label)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([f"{x_of(f)}\n{f.second_ratio:.2f}x floor, {f.ratio:.2f}x echo"
                            for f in fs], fontsize=7)
        ax.set_ylabel(ylabel)
        ax.set_title(panel, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _rtt(plt, suite: str, group: list[Figure]):
    def panel(f: Figure) -> str | None:
        if f.params["percentile"] != 50:
            return None
        listeners = "1 listener" if f.params["listeners"] else "no listener"
        return f"{f.params['transport']}, {listeners}"
    return _three_way(plt, group, panel, lambda f: f.params["cmd"],
                      "rtt: lock-step p50 per command (median of repetitions, min-max)",
                      "round trip p50 (us)")


def _throughput(plt, suite: str, group: list[Figure]):
    return _three_way(plt, group,
                      lambda f: "1 listener" if f.params["listeners"] else "no listener",
                      lambda f: f"{'pipelined' if f.params['mode'] == 'dealer' else 'lock-step'} "
                                f"x{f.params['clients']}",
                      "throughput: reserve/cancel replies per second (median, min-max)", "req/s")


_SPECIAL = {"wheel": _wheel, "guarantee": _guarantee, "expiry": _expiry, "rtt": _rtt,
            "throughput": _throughput}
