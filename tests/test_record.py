"""record.Record: the dataclass behaviour the hot-path modules rely on, without dataclasses."""

import pytest

from vpn_director.record import Record, factory, replace


class Point(Record, frozen=True):
    x: int
    y: int = 0
    label: str = ""
    __nocompare__ = ("label",)


class Bag(Record):
    name: str
    items: list = factory(list)


class Tagged(Bag):
    tag: str = "t"


def test_construction_defaults_and_factories():
    assert Point(1).y == 0 and Point(1, 2).y == 2 and Point(x=3, y=4) == Point(3, 4)
    a, b = Bag("a"), Bag("b")
    a.items.append(1)
    assert b.items == [] and a.items == [1]  # a fresh list each
    t = Tagged("n", [1], tag="z")
    assert (t.name, t.items, t.tag) == ("n", [1], "z") and Tagged._fields == ("name", "items", "tag")
    with pytest.raises(TypeError):
        Point()  # x is required
    with pytest.raises(TypeError):
        Point(1, z=2)
    with pytest.raises(TypeError):
        Point(1, 2, "l", 4)


def test_equality_hash_frozen_and_replace():
    assert Point(1, 2, "a") == Point(1, 2, "b") and hash(Point(1, 2, "a")) == hash(Point(1, 2, "b"))
    assert Point(1, 2) != Point(2, 1) and len({Point(1), Point(1), Point(2)}) == 2
    with pytest.raises(AttributeError):
        Point(1).x = 5
    with pytest.raises(TypeError):
        hash(Bag("a"))  # mutable records are unhashable, as dataclasses make them
    assert Bag("a") == Bag("a") and Bag("a") != Bag("b") and Bag("a") != Tagged("a")
    p = replace(Point(1, 2, "l"), y=9)
    assert (p.x, p.y, p.label) == (1, 9, "l")
    with pytest.raises(TypeError):
        replace(p, z=1)
    assert repr(Point(1)) == "Point(x=1, y=0, label='')"
