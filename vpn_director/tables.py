"""Routing table names -> numbers, the way iproute2 reads rt_tables (and rt_tables.d/*.conf)."""

import os

BUILTIN = {"main": 254, "local": 255, "default": 253, "unspec": 0}


def read_rt_tables(path):
    """Return {name: number} from `path` and `<dir>/rt_tables.d/*.conf`; missing files are fine."""
    names = dict(BUILTIN)
    d = os.path.join(os.path.dirname(path), "rt_tables.d")
    try:  # what glob("rt_tables.d/*.conf") finds, without loading glob at every start
        files = [path] + sorted(os.path.join(d, n) for n in os.listdir(d) if n.endswith(".conf") and n[0] != ".")
    except OSError:
        files = [path]
    for f in files:
        try:
            with open(f, encoding="utf-8", errors="replace") as fh:
                lines = fh.read().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.split("#", 1)[0].split()
            if len(line) < 2:
                continue
            try:
                num = int(line[0], 0)
            except ValueError:
                continue
            names[line[1]] = num
    return names


def resolve(name, names):
    """Table number for `name` (a name from rt_tables, `main`, or a number); None if unknown."""
    if name.isdigit():
        num = int(name)
        return num if 0 < num < 2 ** 32 else None
    return names.get(name)
