#!/usr/bin/env python3
"""Charts of a perf/pktgen_l4_bench.sh result JSON, drawn with gnuplot (Debian gnuplot-nox).

    perf/plot_pktgen.py perf/results/pktgen-<date>-<hash>.json [--out-dir docs/img]

Writes two PNGs named after the result file:
  <name>-latency.png  p50 and p99 latency against the offered rate (the sweep at 10-90% of
                      each device's own zero-loss rate): testpmd io-forward, sluice full-NAT,
                      sluice DSR (IP-in-IP), log scale.
  <name>-rates.png    forwarded Mpps of every run beside testpmd's (max runs and zero-loss
                      searches; the kernel's per-core capacity when present).
Exit status 1 with a message when the JSON lacks the figures (e.g. a --smoke result, which
has no search), 2 on bad arguments.
"""
import json
import os
import subprocess
import sys
import tempfile


def sweep_rows(search):
    rows = []
    for s in (search or {}).get("sweep", []):
        if s.get("tx_pps", 0) > 0:
            rows.append((s["offered_pps"] / 1e6, s["p50_ns"] / 1e3, s["p99_ns"] / 1e3))
    return rows


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 2
    path = argv[1]
    out_dir = os.path.dirname(path) or "."
    if len(argv) == 4 and argv[2] == "--out-dir":
        out_dir = argv[3]
    elif len(argv) != 2:
        print("plot_pktgen: usage: plot_pktgen.py RESULT.json [--out-dir DIR]", file=sys.stderr)
        return 2
    with open(path) as f:
        res = json.load(f)
    name = os.path.splitext(os.path.basename(path))[0]
    tp, sl = res.get("testpmd", {}), res.get("sluice", {})
    series = [("testpmd io-forward", sweep_rows(tp.get("search"))),
              ("sluice full-NAT", sweep_rows(sl.get("search"))),
              ("sluice DSR (IP-in-IP)", sweep_rows(sl.get("dsr_ipip_search")))]
    series = [(t, r) for t, r in series if r]
    if not series:
        print(f"plot_pktgen: {path} has no latency sweep (a --smoke result?)", file=sys.stderr)
        return 1
    bars = []

    def bar(label, mpps):
        if mpps:
            bars.append((label, mpps))

    bar("testpmd max", tp.get("max", {}).get("rx_mpps"))
    bar("testpmd zero-loss", (tp.get("search", {}).get("zero_loss_pps") or 0) / 1e6)
    bar("sluice full-NAT max", sl.get("max", {}).get("rx_mpps"))
    bar("sluice full-NAT zero-loss", (sl.get("search", {}).get("zero_loss_pps") or 0) / 1e6)
    bar("sluice TCP max", sl.get("tcp_max", {}).get("rx_mpps"))
    bar("sluice DSR IPIP max", sl.get("dsr_ipip_max", {}).get("rx_mpps"))
    bar("sluice DSR IPIP zero-loss", (sl.get("dsr_ipip_search", {}).get("zero_loss_pps") or 0) / 1e6)
    bar("sluice DSR GUE max", sl.get("dsr_gue_max", {}).get("rx_mpps"))
    bar("sluice SYN flood (DSR)", sl.get("syn_dsr_max", {}).get("rx_mpps"))
    mix = sl.get("syn_with_established", {})
    bar("SYN beside established", mix.get("syn_forwarded_mpps"))
    bar("established beside SYN", mix.get("established_forwarded_mpps"))
    kernel = res.get("kernel_nftables", {})
    bar("kernel nft per core", kernel.get("capacity_mpps_per_core"))

    flows = res.get("setup", {}).get("flows", "?")
    title = f"{name}: {flows} flows, 64 B frames, memif, one DUT lcore"
    os.makedirs(out_dir, exist_ok=True)
    lat_png = os.path.join(out_dir, f"{name}-latency.png")
    rate_png = os.path.join(out_dir, f"{name}-rates.png")
    with tempfile.TemporaryDirectory() as tmp:
        plots = []
        for i, (label, rows) in enumerate(series):
            data = os.path.join(tmp, f"s{i}.dat")
            with open(data, "w") as f:
                for x, p50, p99 in rows:
                    f.write(f"{x} {p50} {p99}\n")
            plots.append(f"'{data}' using 1:3 with linespoints lw 2 pt 7 lc {i + 1} "
                         f"title '{label} p99'")
            plots.append(f"'{data}' using 1:2 with linespoints lw 1 dt 2 pt 6 lc {i + 1} "
                         f"title '{label} p50'")
        bars_dat = os.path.join(tmp, "bars.dat")
        with open(bars_dat, "w") as f:
            for label, mpps in bars:
                f.write(f"\"{label}\" {mpps}\n")
        script = f"""
set terminal pngcairo size 1000,560 font ',10'
set output '{lat_png}'
set title "{title}\\nlatency under load: sweep at 10-90% of each device's zero-loss rate"
set xlabel 'offered Mpps'
set ylabel 'latency, us (log)'
set logscale y
set grid
set key bottom right box opaque
plot {', '.join(plots)}
set output '{rate_png}'
unset logscale y
set title "{title}\\nforwarded Mpps"
set rmargin 10
set ylabel 'Mpps'
set xlabel ''
set style data histograms
set style fill solid 0.7
set boxwidth 0.8
set xtics rotate by -35 left
set yrange [0:*]
set key off
plot '{bars_dat}' using 2:xtic(1) lc 3, '' using 0:2:(sprintf('%.2f', $2)) with labels offset 0,0.7
"""
        gp = os.path.join(tmp, "plot.gp")
        with open(gp, "w") as f:
            f.write(script)
        r = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"plot_pktgen: gnuplot failed: {r.stderr.strip()}", file=sys.stderr)
            return 1
    print(lat_png)
    print(rate_png)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
