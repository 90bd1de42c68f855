#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Draws estimator-bench's latencies from its CSV into a PNG.

    /usr/bin/python3 bench/plot.py RESULTS.csv PLOT.png

Back-to-back round trips (period_ms 0), top left: p50 (line) and p99 (dashed) against rows
per request for every mode at 10 features with the linear model and one client, log-log.
Top right: the ring's variants (hot and sleeping daemon, 1 or more client threads) against
the same rows. When the CSV has periodic lanes (period_ms > 0), a second row: their p50
against the period, at 1 row and at the largest row count measured, with the hot ring's
p50 and the 1.5x target of issue 13 as horizontal lines. Exits 3 with a message when
matplotlib is missing (Debian: apt-get install python3-matplotlib), 2 on bad input.
"""
import csv
import sys


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        import matplotlib
        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot.py: matplotlib is not installed for %s (Debian: apt-get install "
              "python3-matplotlib); the CSV is written, the plot is not" % sys.executable,
              file=sys.stderr)
        return 3
    csv_path, png_path = argv[1], argv[2]
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        print("plot.py: cannot read %s: %s" % (csv_path, e), file=sys.stderr)
        return 2
    needed = {"mode", "variant", "clients", "model", "rows", "features", "p50_us", "p99_us"}
    if not rows or not needed.issubset(rows[0].keys()):
        print("plot.py: %s is not an estimator-bench CSV (columns %s needed)"
              % (csv_path, ", ".join(sorted(needed))), file=sys.stderr)
        return 2

    def period(r):  # CSVs written before the periodic columns have none: back to back
        return float(r.get("period_ms") or 0)

    def series(select):
        out = {}
        for r in rows:
            if period(r) == 0 and select(r):
                key = (r["mode"], r["variant"], int(r["clients"]))
                out.setdefault(key, []).append(
                    (int(r["rows"]), float(r["p50_us"]), float(r["p99_us"])))
        return {k: sorted(v) for k, v in out.items()}

    def linear10(r):
        return r["model"] == "linear" and r["features"] == "10"

    primary = series(lambda r: linear10(r) and r["clients"] == "1")
    ring = series(lambda r: r["mode"] == "ring" and linear10(r))
    periodic = [r for r in rows if period(r) > 0 and linear10(r)]

    fig, axes = plt.subplots(2 if periodic else 1, 2, figsize=(13, 11 if periodic else 5.5),
                             squeeze=False)
    left, right = axes[0]
    for ax, data, title in ((left, primary, "every mode (linear model, 10 features, 1 client)"),
                            (right, ring, "ring: hot (spin) and sleeping (block), client threads")):
        for (mode, variant, clients), points in sorted(data.items()):
            xs = [p[0] for p in points]
            if ax is right:
                label = "%s, %d client%s" % (variant, clients, "" if clients == 1 else "s")
            elif sum(1 for k in data if k[0] == mode) > 1:  # ring spin/block, json variants
                label = "%s %s" % (mode, variant)
            else:
                label = mode
            line, = ax.plot(xs, [p[1] for p in points], marker="o", label=label + " p50")
            ax.plot(xs, [p[2] for p in points], linestyle="--", color=line.get_color(),
                    alpha=0.6, label=label + " p99")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows per request")
        ax.set_ylabel("round trip (us)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    if periodic:
        sizes = sorted({int(r["rows"]) for r in periodic})
        shown = sizes[:1] + sizes[-1:] if len(sizes) > 1 else sizes
        if len(shown) == 1:
            axes[1][1].set_visible(False)
        for ax, n in zip(axes[1], shown):
            lanes = {}
            for r in periodic:
                if int(r["rows"]) == n:
                    lanes.setdefault("%s %s" % (r["mode"], r["variant"]), []).append(
                        (period(r), float(r["p50_us"])))
            for label, points in sorted(lanes.items()):
                points.sort()
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                        label=label + " p50")
            hot = [p[1] for p in ring.get(("ring", "spin", 1), []) if p[0] == n]
            if hot:
                ax.axhline(hot[0], color="black", linewidth=1,
                           label="hot ring p50, back to back")
                ax.axhline(1.5 * hot[0], color="black", linewidth=1, linestyle=":",
                           label="1.5x the hot ring (target)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("period: one request every P (ms)")
            ax.set_ylabel("round trip (us)")
            ax.set_title("periodic client, %d row%s per request" % (n, "" if n == 1 else "s"),
                         fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, ncol=2)
    fig.suptitle("estimator-bench: latency per request (p50 solid, p99 dashed)")
    fig.tight_layout()
    try:
        fig.savefig(png_path, dpi=110)
    except OSError as e:
        print("plot.py: cannot write %s: %s" % (png_path, e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
