#!/usr/bin/env python3
"""Many clients: `check`, cold `apply` and no-op `apply` for a config of 5,000 Xray clients,
5,000 tunnel clients spread over 8 tunnels and 300 paused clients, in a network namespace this
script creates and removes (root).

    python3 bench/clients.py [--runs 5] [--clients 5000] [--backend legacy] [--write docs/benchmarks.md]
    python3 bench/clients.py --config DIR     # only write the config (and its lists) into DIR

Each list is mostly single hosts with a few /28 subnets; paused clients are a third exact
entries, a third addresses inside those subnets (holes) and a third in no list. Two small
country lists (2,000 prefixes each) are excluded, so the clients, not the sets, are measured.
Prints a markdown table: median (min–max) over --runs runs.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import compile_package, ROOT, machine, summary, timed, vpd_argv, write_block, write_zones  # noqa: E402

TUNNELS = ["wgc%d" % i for i in range(1, 6)] + ["ovpnc%d" % i for i in range(1, 4)]
SIZES = {"ru": 2000, "ua": 2000}


def host(n):
    return "10.%d.%d.%d" % (n >> 16 & 255, n >> 8 & 255, n & 255)


def hosts(first, count, subnets):
    """`count` clients from address `first` on: the first `subnets` of them /28s, then hosts."""
    nets = ["%s/28" % host(first + 16 * i) for i in range(subnets)]
    start = first + 16 * subnets
    return nets + [host(start + i) for i in range(count - subnets)]


def scenario(clients=5000, paused=300):
    """The raw config (without paths) for `clients` Xray and `clients` tunnel clients."""
    xray = hosts(1 << 16, clients, 10)
    per = clients // len(TUNNELS)
    tunnels = {t: {"clients": hosts((2 + i) << 16, per, 4), "exclude": ["ru"] if i % 2 else ["ru", "ua"]}
               for i, t in enumerate(TUNNELS)}
    third = paused // 3
    listed = xray[10:] + [c for t in tunnels.values() for c in t["clients"][4:]]
    holes = [host((1 << 16) + 16 * (i % 10) + 1 + i // 10) for i in range(third)]
    pause = listed[::max(1, len(listed) // third)][:third] + holes + [host((200 << 16) + i) for i in range(third)]
    return {"paused_clients": pause,
            "xray": {"clients": xray, "servers": ["203.0.113.10"], "exclude_sets": list(SIZES)},
            "tunnel_director": {"tunnels": tunnels}}


def write_config(directory, clients):
    """Config, rt_tables and country lists under `directory`; returns the config's path."""
    raw = scenario(clients)
    write_zones(os.path.join(directory, "data", "ipsets"), SIZES)
    with open(os.path.join(directory, "rt_tables"), "w") as fh:
        fh.write("".join("%d %s\n" % (120 + i, t) for i, t in enumerate(TUNNELS)))
    raw["data_dir"] = os.path.join(directory, "data")
    raw["advanced"] = {"rt_tables": os.path.join(directory, "rt_tables"), "boot": {"min_time": 0},
                       "state_dir": os.path.join(directory, "state")}
    path = os.path.join(directory, "vpn-director.json")
    with open(path, "w") as fh:
        json.dump(raw, fh)
    return path


def measure(config, backend, runs):
    env = dict(os.environ, PYTHONPATH=ROOT, VPD_IPTABLES=backend)
    res = {"check": [], "cold": [], "noop": []}
    for i in range(runs):
        res["check"].append(timed(vpd_argv(config, "check"), env=env)[0])
        ns = "vpdc%d_%d" % (os.getpid() % 10000, i)
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            wrap = ["ip", "netns", "exec", ns]
            subprocess.run(wrap + ["ip", "link", "add", "br0", "type", "bridge"], check=True)
            shutil.rmtree(os.path.join(os.path.dirname(config), "state"), ignore_errors=True)
            res["cold"].append(timed(wrap + vpd_argv(config, "apply"), env=env)[0])
            elapsed, _, out = timed(wrap + vpd_argv(config, "apply"), env=env)
            if "no changes" not in out:
                raise RuntimeError("the second apply changed something: %s" % out)
            res["noop"].append(elapsed)
        finally:
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--clients", type=int, default=5000)
    ap.add_argument("--backend", default="legacy")
    ap.add_argument("--config", metavar="DIR", help="only write the config into DIR and print its path")
    ap.add_argument("--write", metavar="FILE", help="also replace the results block in FILE")
    args = ap.parse_args()
    compile_package()
    if args.config:
        print(write_config(args.config, args.clients))
        return 0
    if os.geteuid() != 0:
        sys.exit("bench/clients.py needs root (network namespaces)")
    workdir = tempfile.mkdtemp(prefix="vpd-clients-")
    try:
        raw = scenario(args.clients)
        res = measure(write_config(workdir, args.clients), args.backend, args.runs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    tunnel_clients = sum(len(t["clients"]) for t in raw["tunnel_director"]["tunnels"].values())
    text = "\n".join([
        "%d Xray clients, %d tunnel clients over %d tunnels, %d paused; backend %s; %d runs, median (min–max)."
        % (len(raw["xray"]["clients"]), tunnel_clients, len(TUNNELS), len(raw["paused_clients"]), args.backend,
           args.runs),
        "",
        "| `check` s | cold `apply` s | no-op `apply` s |",
        "|---|---|---|",
        "| %s | %s | %s |" % (summary(res["check"]), summary(res["cold"]), summary(res["noop"])),
        "", "Machine: %s" % machine()]) + "\n"
    print(text)
    if args.write:
        write_block(args.write, "bench/clients.py", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
