"""Routing table names -> numbers, the way iproute2 reads rt_tables (and rt_tables.d/*.conf)."""

import glob
import os

BUILTIN = {"main": 254, "local": 255, "default": 253, "unspec": 0}


def read_rt_tables(path):
    """Return {name: number} from `path` and `<dir>/rt_tables.d/*.conf`; missing files are fine."""
    names = dict(BUILTIN)
    files = [path] + sorted(glob.glob(os.path.join(os.path.dirname(path), "rt_tables.d", "*.conf")))
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
