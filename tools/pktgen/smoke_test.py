#!/usr/bin/env python3
"""Functional smoke test of sluice-pktgen on net_ring0 (tx loops back to rx in one process,
--no-huge, one lcore). No speed assertions: only that the results are complete and exact.

  1. 1 s of UDP at a modest rate: JSON well formed, rx == tx (no loss on a ring), per-flow
     counts (every flow seen, tx == rx per flow), latency percentiles, destinations.
  2. --search + sweep + --plot: the search trials, the sweep points and the PNG charts.
  3. pcap replay: frames written here, replayed, all received.
  4. two streams in one run (profiles/ring_mix.yaml: 25% UDP, 75% SYN): each stream's counts
     are non-zero, tx == rx per stream, they add up to the totals, the mix follows the
     shares, and each stream's destinations are its own.

usage: smoke_test.py PKTGEN_BINARY PROFILES_DIR
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

PKTGEN, PROFILES = sys.argv[1], sys.argv[2]
EAL = ["-l", "0", "--no-huge", "-m", "512", "--no-pci", "--vdev=net_ring0",
       "--log-level=lib.eal:warning", "--log-level=lib.telemetry:error"]
failures = []


def check(cond, what):
    print(("ok:   " if cond else "FAIL: ") + what)
    if not cond:
        failures.append(what)


def run(args, prefix, timeout=60):
    cmd = [PKTGEN] + args + ["--"] + EAL + ["--file-prefix", prefix]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    sys.stderr.write(p.stderr[-3000:])
    return p


work = tempfile.mkdtemp(prefix="pktgen-smoke-")
try:
    # 1. The plain run.
    out = os.path.join(work, "run.json")
    p = run(["--profile", os.path.join(PROFILES, "ring_udp.yaml"), "--json", out], "pgsmoke1")
    check(p.returncode == 0, f"run exits 0 (got {p.returncode})")
    check("tx " in p.stderr and "Mpps" in p.stderr and "p99" in p.stderr,
          "progress line on stderr")
    doc = json.load(open(out))
    r = doc["run"]
    tx, rx = r["tx"]["packets"], r["rx"]["packets"]
    check(tx > 100000, f"sent a second's worth at 200 kpps ({tx})")
    check(rx == tx, f"rx == tx on a ring ({rx} vs {tx})")
    check(r["lost"] == 0 and r["loss_ratio"] == 0, "no loss")
    check(r["reordered"] == 0 and r["duplicates"] == 0, "no reordering, no duplicates")
    check(r["rx"]["bad_flow"] == 0 and r["rx"]["unstamped"] == 0, "every frame stamped")
    check(r["rx"]["outside_window"] > 0, "warm-up packets kept out of the window")
    fl = r["flows"]
    check(fl["configured"] == 64 and fl["seen"] == 64, "all 64 flows seen")
    check(len(fl["per_flow"]) == 64 and all(f["tx"] == f["rx"] > 0 for f in fl["per_flow"]),
          "per-flow tx == rx for every flow")
    check(fl["rx_max"] - fl["rx_min"] <= 1, "flows cycled evenly")
    lat = r["latency_ns"]
    check(lat["count"] == rx, "a latency sample per packet")
    check(0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"],
          f"latency percentiles ordered ({lat['p50']} {lat['p99']} {lat['max']} ns)")
    check(sum(b["count"] for b in lat["hist_log2"]) == lat["count"], "log2 histogram complete")
    d = r["destinations"]["top"]
    check(len(d) == 1 and d[0]["dst"] == "10.0.0.100:53" and d[0]["packets"] == rx,
          "destinations: every packet to 10.0.0.100:53")
    check(doc["ports"]["tx"]["virtual"] is True and doc["lcores"] == 1, "port and lcore info")

    # 2. Search, sweep and plots.
    prof = os.path.join(work, "search.yaml")
    with open(prof, "w") as f:
        f.write(open(os.path.join(PROFILES, "ring_udp.yaml")).read())
        f.write("search: {min_pps: 20000, max_pps: 100000, trial_s: 0.3, warmup_s: 0.1,"
                " precision_pps: 20000}\nsweep: [25, 75]\n")
    out2 = os.path.join(work, "search.json")
    plots = os.path.join(work, "plots")
    p = run(["--profile", prof, "--json", out2, "--search", "--plot", plots], "pgsmoke2")
    have_gnuplot = shutil.which("gnuplot") is not None
    check(p.returncode == 0 or not have_gnuplot, f"search run exits 0 (got {p.returncode})")
    doc = json.load(open(out2))
    s = doc["search"]
    # A ring loses nothing: the top rate passes unless this (shared) machine starved the
    # generator for > 100 ms, in which case the search goes on below it.
    check(s["zero_loss_pps"] >= 20000 and s["trials"][0]["offered_pps"] == 100000,
          f"search found a zero-loss rate ({s['zero_loss_pps']})")
    pts = doc["sweep"]["points"]
    check([x["percent"] for x in pts] == [25, 75] and all(x["p99_ns"] > 0 for x in pts),
          "sweep points with p99")
    check(abs(pts[0]["offered_pps"] - 0.25 * s["zero_loss_pps"]) < 1,
          "sweep rate is a share of the rate found")
    if have_gnuplot:
        for png in ("latency_cdf.png", "rate_search.png", "latency_sweep.png"):
            fp = os.path.join(plots, png)
            check(os.path.exists(fp) and open(fp, "rb").read(8) == b"\x89PNG\r\n\x1a\n",
                  f"--plot wrote {png}")
    else:
        print("skip: gnuplot missing, charts not checked")

    # 3. pcap replay of 3 UDP frames written here.
    def udp_frame(dport):
        payload = b"x" * 26
        udp = struct.pack("!HHHH", 4000, dport, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         bytes([10, 2, 0, 1]), bytes([10, 3, 0, 1]))
        s = sum(struct.unpack("!10H", ip))
        s = (s & 0xFFFF) + (s >> 16)
        ip = ip[:10] + struct.pack("!H", ~s & 0xFFFF) + ip[12:]
        return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + ip + udp

    pcap = os.path.join(work, "in.pcap")
    with open(pcap, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, port in enumerate((7001, 7002, 7003)):
            fr = udp_frame(port)
            f.write(struct.pack("<IIII", 1, i, len(fr), len(fr)) + fr)
    prof = os.path.join(work, "replay.yaml")
    with open(prof, "w") as f:
        f.write(f"pcap_replay: {pcap}\nreplay_pps: 30000\nduration_s: 0.5\nwarmup_s: 0.1\n"
                "drain_s: 0.2\n")
    out3 = os.path.join(work, "replay.json")
    p = run(["--profile", prof, "--json", out3], "pgsmoke3")
    check(p.returncode == 0, f"replay exits 0 (got {p.returncode})")
    r = json.load(open(out3))["run"]
    check(r["tx"]["packets"] > 5000 and r["rx"]["packets"] == r["tx"]["packets"],
          f"replayed frames all received ({r['rx']['packets']} of {r['tx']['packets']})")
    check(sorted(x["dst"] for x in r["destinations"]["top"]) ==
          ["10.3.0.1:7001", "10.3.0.1:7002", "10.3.0.1:7003"], "replayed destinations")

    # 4. Two streams in one run.
    out4 = os.path.join(work, "mix.json")
    p = run(["--profile", os.path.join(PROFILES, "ring_mix.yaml"), "--json", out4], "pgsmoke4")
    check(p.returncode == 0, f"two-stream run exits 0 (got {p.returncode})")
    check("| udp rx " in p.stderr and "| syn rx " in p.stderr, "progress line shows per-stream rx")
    check("run [udp]:" in p.stderr and "run [syn]:" in p.stderr, "per-stream summary lines")
    r = json.load(open(out4))["run"]
    tx, rx = r["tx"]["packets"], r["rx"]["packets"]
    st = {x["name"]: x for x in r.get("streams", [])}
    check(sorted(st) == ["syn", "udp"], f"run.streams has udp and syn ({sorted(st)})")
    if sorted(st) == ["syn", "udp"]:
        for name, want_dst in (("udp", "10.0.0.100:53"), ("syn", "10.0.0.101:80")):
            x = st[name]
            check(x["tx"]["packets"] > 0 and x["rx"]["packets"] > 0,
                  f"{name}: non-zero counts (tx {x['tx']['packets']}, rx {x['rx']['packets']})")
            check(x["rx"]["packets"] == x["tx"]["packets"] and x["lost"] == 0,
                  f"{name}: rx == tx on a ring")
            check(x["latency_ns"]["count"] == x["rx"]["packets"] and x["latency_ns"]["p50"] > 0,
                  f"{name}: latency per packet")
            d = x["destinations"]["top"]
            check(len(d) == 1 and d[0]["dst"] == want_dst and d[0]["packets"] == x["rx"]["packets"],
                  f"{name}: every packet to {want_dst}")
        check(st["udp"]["tx"]["packets"] + st["syn"]["tx"]["packets"] == tx,
              "streams' tx add up to the total")
        check(st["udp"]["rx"]["packets"] + st["syn"]["rx"]["packets"] == rx,
              "streams' rx add up to the total")
        check(abs(st["udp"]["tx"]["packets"] / max(tx, 1) - 0.25) < 0.01,
              f"the mix follows the shares ({st['udp']['tx']['packets']} of {tx} UDP)")
        check(st["syn"]["flows"]["first"] == 64 and st["syn"]["flows"]["seen"] == 256,
              "syn stream owns flow indexes 64-319, all seen")
    check(r["flows"]["configured"] == 320 and r["flows"]["seen"] == 320, "all 320 flows seen")
    check(r["rx"]["bad_flow"] == 0 and r["lost"] == 0, "no loss, no stray flow index")
finally:
    shutil.rmtree(work, ignore_errors=True)

if failures:
    print(f"pktgen_ring_smoke: {len(failures)} check(s) failed")
    sys.exit(1)
print("pktgen_ring_smoke: all checks passed")
