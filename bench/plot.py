#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Draws estimator-bench's latencies from its CSV into a PNG.

    /usr/bin/python3 bench/plot.py RESULTS.csv PLOT.png

Left: p50 (line) and p99 (dashed) against rows per request for every mode at 10 features
with the linear model and one client, log-log. Right: the ring's variants (hot and
sleeping daemon, 1 or more client threads) against the same rows. Exits 3 with a message
when matplotlib is missing (Debian: apt-get install python3-matplotlib), 2 on bad input.
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

    def series(select):
        out = {}
        for r in rows:
            if select(r):
                key = (r["mode"], r["variant"], int(r["clients"]))
                out.setdefault(key, []).append(
                    (int(r["rows"]), float(r["p50_us"]), float(r["p99_us"])))
        return {k: sorted(v) for k, v in out.items()}

    primary = series(lambda r: r["model"] == "linear" and r["features"] == "10"
                     and r["clients"] == "1")
    ring = series(lambda r: r["mode"] == "ring" and r["model"] == "linear"
                  and r["features"] == "10")

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
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
