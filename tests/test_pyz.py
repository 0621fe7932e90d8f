"""The single-file build runs on a bare python3, and the runtime imports only the standard library."""

import ast
import importlib.util
import io
import json
import os
import subprocess
import sys
import time
import zipfile

import pytest

from netns import ROOT
from vpn_director import pyz as pyzmod

PKG = os.path.join(ROOT, "vpn_director")
EXAMPLE = os.path.join(ROOT, "examples", "vpn-director.json")


def modules():
    """Every module of the package, subpackages included, relative to it ("ops/txn.py")."""
    out = []
    for d, dirs, files in os.walk(PKG):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        out += [os.path.relpath(os.path.join(d, f), PKG) for f in files if f.endswith(".py")]
    return sorted(out)


@pytest.fixture(scope="module")
def pyz(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "vpn-director.pyz"
    p = subprocess.run(["bash", os.path.join(ROOT, "scripts", "build-pyz"), str(out)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert p.returncode == 0, p.stderr
    return out


def bare(*args, cwd):
    """A plain interpreter: no site-packages (-S), no PYTHON* variables, no script dir (-I)."""
    return subprocess.run([sys.executable, "-S", "-I"] + list(args), cwd=str(cwd), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True)


@pytest.fixture
def example(tmp_path):
    raw = json.load(open(EXAMPLE))
    (tmp_path / "data" / "ipsets").mkdir(parents=True)
    (tmp_path / "data" / "ipsets" / "ru.zone").write_text("77.88.0.0/16\n5.255.255.0/24\n")
    (tmp_path / "rt_tables").write_text("111 wgc1\n113 ovpnc1\n")
    raw["data_dir"] = str(tmp_path / "data")
    raw["advanced"]["rt_tables"] = str(tmp_path / "rt_tables")
    path = tmp_path / "vpn-director.json"
    path.write_text(json.dumps(raw))
    return path


def test_the_bare_interpreter_really_has_no_site_packages(tmp_path):
    import pytest as present  # in this test environment it is installed...
    assert present
    p = bare("-c", "import pytest", cwd=tmp_path)
    assert p.returncode != 0 and "No module named 'pytest'" in p.stderr  # ...but not for the bare one


def test_pyz_runs_check_and_render_on_the_example(pyz, example, tmp_path):
    p = bare(str(pyz), "-c", str(example), "check", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "config OK" in p.stdout
    p = bare(str(pyz), "-c", str(example), "render", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "-A XRAY_TPROXY -m set ! --match-set XRAY_CLIENTS src -j RETURN" in p.stdout
    assert "add ru 77.88.0.0/16" in p.stdout
    assert "rule add pref 16384 from all fwmark 0x10000/0xff0000 lookup 111" in p.stdout


def test_pyz_keeps_exit_codes_and_messages(pyz, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"xray": {"clients": ["192.168.1.300"]}}')
    p = bare(str(pyz), "-c", str(bad), "check", cwd=tmp_path)
    assert p.returncode == 2
    assert "xray.clients[0]" in p.stderr and "Traceback" not in p.stderr


def test_pyz_holds_the_whole_package_and_the_example(pyz):
    with zipfile.ZipFile(str(pyz)) as z:
        names = set(z.namelist())
        example = z.read("vpn_director/templates/vpn-director.json")
    assert {"vpn_director/" + f for f in modules()} <= names
    assert not [n for n in names if "__pycache__" in n]
    # bytecode beside each module, where zipimport looks: hash-based and unchecked, this
    # interpreter's magic (another version ignores it and compiles the source)
    package = {n for n in names if n.startswith("vpn_director/")}
    assert {n[:-1] for n in package if n.endswith(".pyc")} == {n for n in package if n.endswith(".py")}
    with zipfile.ZipFile(str(pyz)) as z:
        head = z.read("vpn_director/cli.pyc")[:8]
    assert head[:4] == importlib.util.MAGIC_NUMBER and int.from_bytes(head[4:8], "little") == 0b01
    assert example == open(EXAMPLE, "rb").read()
    assert open(str(pyz), "rb").readline() == b"#!/usr/bin/env python3\n"


def test_build_is_reproducible_so_installing_twice_changes_nothing():
    """Every entry's zip time is its source file's mtime, never the time of the build."""
    data = pyzmod.build()
    sources = {"__main__.py": os.path.join(PKG, "cli.py"), "vpn_director/templates/vpn-director.json": EXAMPLE}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for info in z.infolist():
            name = info.filename[:-1] if info.filename.endswith(".pyc") else info.filename
            src = sources.get(info.filename) or os.path.join(ROOT, name.rstrip("/"))
            want = time.localtime(os.stat(src).st_mtime)[:5]
            assert info.date_time[:5] == want, info.filename  # zip keeps 2-second steps
    assert pyzmod.build() == data


def test_pyz_installs_itself(pyz, tmp_path):
    p = bare(str(pyz), "install", "--root", str(tmp_path / "root"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "root" / "opt" / "vpn-director" / "vpn-director.pyz").read_bytes() == pyz.read_bytes()
    assert (tmp_path / "root" / "opt" / "vpn-director" / "vpn-director.json").read_bytes() == open(EXAMPLE, "rb").read()


# --- the runtime imports nothing outside the standard library --------------------------------

def _guarded(node, parents):
    """True inside `try: ... except ImportError` (an optional extra)."""
    for p in parents:
        if isinstance(p, ast.Try) and node in ast.walk(ast.Module(body=p.body, type_ignores=[])):
            for h in p.handlers:
                names = [h.type] if not isinstance(h.type, ast.Tuple) else h.type.elts
                if any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names):
                    return True
    return False


def _imports(tree):
    out = []

    def visit(node, parents):
        if isinstance(node, ast.Import):
            out.extend((a.name.split(".")[0], node, parents) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            out.append((node.module.split(".")[0], node, parents))
        for child in ast.iter_child_nodes(node):
            visit(child, parents + [node])
    visit(tree, [])
    return out


def test_core_imports_only_the_standard_library():
    stdlib = getattr(sys, "stdlib_module_names", None)
    if stdlib is None:
        pytest.skip("sys.stdlib_module_names needs Python 3.10+")
    outside = []
    for f in modules():
        tree = ast.parse(open(os.path.join(PKG, f), encoding="utf-8").read())
        for name, node, parents in _imports(tree):
            if name != "vpn_director" and name not in stdlib and not _guarded(node, parents):
                outside.append("%s:%d imports %s" % (f, node.lineno, name))
    assert outside == []


def test_the_import_check_catches_a_third_party_import():
    tree = ast.parse("import os\nimport requests\ntry:\n    import yaml\nexcept ImportError:\n    yaml = None\n")
    found = [(n, _guarded(node, parents)) for n, node, parents in _imports(tree)]
    assert found == [("os", False), ("requests", False), ("yaml", True)]


def test_every_module_is_python_3_9_syntax():
    for f in modules():
        ast.parse(open(os.path.join(PKG, f), encoding="utf-8").read(), f, feature_version=(3, 9))
