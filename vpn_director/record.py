"""Plain data classes for the modules every run imports: what `dataclasses` gave them (keyword or
positional construction, defaults, equality, repr, frozen and hashable) without its import, which
pulls in inspect, ast and dis and then compiles an __init__ per class: about 10 ms at every start
of the per-minute watchdog on this machine, several times that on a router.

    class Rule(Record, frozen=True):
        pref: int
        text: str = ""
        seen: list = factory(list)   # a new list per instance

Fields are the annotated names, in order, after those of the base classes; a class attribute is
the default. `__nocompare__` names fields left out of == and hash. Annotations are never evaluated
(the modules use `from __future__ import annotations`).
"""


class factory:
    """A default made fresh for every instance (dataclasses' default_factory)."""

    __slots__ = ("make",)

    def __init__(self, make):
        self.make = make


class Record:
    _fields = ()
    _defaults = {}
    _compare = ()
    _frozen = False

    def __init_subclass__(cls, frozen=False, **kw):
        super().__init_subclass__(**kw)
        fields = list(cls._fields)
        fields += [n for n in cls.__dict__.get("__annotations__", {}) if n not in fields]
        cls._fields = tuple(fields)
        cls._defaults = {n: getattr(cls, n) for n in fields if hasattr(cls, n)}
        skip = set(getattr(cls, "__nocompare__", ()))
        cls._compare = tuple(n for n in fields if n not in skip)
        cls._frozen = frozen or cls._frozen
        # like dataclasses: frozen ones hash by value, mutable ones are unhashable
        cls.__hash__ = Record._hash if cls._frozen else None

    def __init__(self, *args, **kw):
        fields, d = self._fields, self.__dict__
        if len(args) > len(fields):
            raise TypeError("%s takes at most %d arguments" % (type(self).__name__, len(fields)))
        for name, value in zip(fields, args):
            d[name] = value
        for name in fields[len(args):]:
            if name in kw:
                d[name] = kw.pop(name)
                continue
            try:
                value = self._defaults[name]
            except KeyError:
                raise TypeError("%s needs %r" % (type(self).__name__, name)) from None
            d[name] = value.make() if type(value) is factory else value
        if kw:
            raise TypeError("%s has no field(s) %s" % (type(self).__name__, ", ".join(sorted(kw))))

    def __setattr__(self, name, value):
        if self._frozen:
            raise AttributeError("%s is frozen: cannot set %s" % (type(self).__name__, name))
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        if self._frozen:
            raise AttributeError("%s is frozen: cannot delete %s" % (type(self).__name__, name))
        object.__delattr__(self, name)

    def _key(self):
        d = self.__dict__
        return tuple(d[n] for n in self._compare)

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()

    def _hash(self):
        return hash(self._key())

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join("%s=%r" % (n, self.__dict__[n]) for n in self._fields))


def replace(obj, **changes):
    """A copy of `obj` with some fields changed (dataclasses.replace)."""
    values = {n: obj.__dict__[n] for n in obj._fields}
    unknown = set(changes) - set(values)
    if unknown:
        raise TypeError("%s has no field(s) %s" % (type(obj).__name__, ", ".join(sorted(unknown))))
    values.update(changes)
    return type(obj)(**values)
