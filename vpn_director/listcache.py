"""The cached country lists: which a config uses, where each came from, which are missing.

The cache is `<data_dir>/ipsets/<cc>.zone` (the list as downloaded) and `<cc>.json` beside it
(source, time, entry counts, checksum), written by `vpn-director update` (countries.py). Apply,
status and the front ends only read it, so none of them loads the download code.
"""

import hashlib
import json
import os

from . import desired, sets
from .errors import DataError


def used(cfg):
    """The country sets the config uses (those apply would load), in config order."""
    full = desired.build(cfg, resolver=lambda name: [], country_loader=sets.no_country)
    return [s.name for s in full.sets if s.country]


def meta_path(data_dir, cc):
    return os.path.join(data_dir, "ipsets", "%s.json" % cc)


def read_meta(data_dir, cc):
    """The cached list's metadata, or {} if there is none or it no longer matches the list."""
    try:
        with open(meta_path(data_dir, cc)) as fh:
            meta = json.load(fh)
        with open(sets.zone_path(data_dir, cc), "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) and meta.get("sha256") == digest else {}


def cached_members(data_dir, cc):
    """Member count of the cached list, or None if there is no usable one."""
    meta = read_meta(data_dir, cc)
    if isinstance(meta.get("aggregated"), int):
        return meta["aggregated"]
    try:
        return sets.count_members(sets.read_prefixes(sets.zone_path(data_dir, cc)))
    except DataError:
        return None


def missing_cache(cfg, names):
    """Of `names`, those without a cached list (apply cannot build their sets)."""
    return [cc for cc in names if not os.path.exists(sets.zone_path(cfg.data_dir, cc))]


def describe(data_dir, cc):
    """Where and when the cached list came from, for `status` ({} if unknown)."""
    meta = read_meta(data_dir, cc)
    return {k: meta[k] for k in ("source", "fetched") if k in meta}
