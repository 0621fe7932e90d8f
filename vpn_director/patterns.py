"""Regular expressions compiled on first use.

The modules every run imports define their patterns at the top, as usual; most of them (the
error texts of a failed tool, names only some configs use, shapes of objects a router may not
have) are never needed by a given run, and compiling them all took about 4 ms at every start of
the per-minute watchdog on this machine. `compiled()` returns an object that compiles its pattern
the first time one of its methods is used, and then behaves as the compiled pattern.
"""

import re


class LazyPattern:
    __slots__ = ("_source", "_flags", "_re")

    def __init__(self, source, flags=0):
        self._source, self._flags, self._re = source, flags, None

    def __getattr__(self, name):  # match, search, sub, pattern, ... of the compiled pattern
        if self._re is None:
            self._re = re.compile(self._source, self._flags)
        return getattr(self._re, name)

    def __repr__(self):
        return "compiled(%r)" % (self._source,)


def compiled(source, flags=0):
    return LazyPattern(source, flags)
