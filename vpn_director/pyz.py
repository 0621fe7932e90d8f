"""The single-file build: the whole package as one zipapp that any python3 (3.9+) runs.

`python3 -m vpn_director.pyz OUT` (what scripts/build-pyz runs) writes it; `install` copies the
archive it runs from, or builds one when it runs from a source tree.
"""

import io
import os
import py_compile
import shutil
import sys
import tempfile
import zipapp

from .state import write_atomic

PACKAGE = "vpn_director"
# zipapp's own generated __main__ drops main()'s return value: the exit code must survive.
MAIN = "import sys\nfrom vpn_director.cli import main\nsys.exit(main())\n"
INTERPRETER = "/usr/bin/env python3"
EXAMPLE = "templates/vpn-director.json"  # the example config's name inside the package


def package_dir():
    return os.path.dirname(os.path.abspath(__file__))


def running_archive():
    """Path of the .pyz this process runs from, or None when it runs from a directory."""
    loader = getattr(sys.modules[PACKAGE], "__loader__", None)
    archive = getattr(loader, "archive", None)  # zipimport's loaders name their archive
    return archive if archive and os.path.isfile(archive) else None


def source_example():
    """examples/vpn-director.json of a source tree, or None (an installed wheel has none)."""
    path = os.path.join(os.path.dirname(package_dir()), "examples", "vpn-director.json")
    return path if os.path.isfile(path) else None


def build(interpreter=INTERPRETER):
    """The archive as bytes: the package (no caches) plus the example config.

    Zip entries carry mtimes, so every staged file keeps its source's: the same tree gives the
    same bytes, and installing twice changes nothing."""
    with tempfile.TemporaryDirectory(prefix="vpd-pyz-") as tmp:
        staged = os.path.join(tmp, PACKAGE)
        shutil.copytree(package_dir(), staged, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        example = source_example()
        if example:
            templates = os.path.join(staged, "templates")
            os.makedirs(templates, exist_ok=True)
            before = os.stat(templates)
            shutil.copy2(example, os.path.join(staged, EXAMPLE))
            os.utime(templates, (before.st_atime, before.st_mtime))
        main = os.path.join(tmp, "__main__.py")
        with open(main, "w") as fh:
            fh.write(MAIN)
        shutil.copystat(os.path.join(package_dir(), "cli.py"), main)
        _precompile(staged)
        buf = io.BytesIO()
        zipapp.create_archive(tmp, buf, interpreter=interpreter, compressed=True)
        return buf.getvalue()


def _precompile(staged):
    """Bytecode beside each module (`name.pyc`, where zipimport looks for it): a router runs the
    program from hooks and cron every minute and would otherwise compile it on every run. An
    interpreter of another version ignores it (other magic number) and compiles the source.
    Unchecked-hash .pyc files hold no timestamps, so the build stays byte-for-byte repeatable."""
    for root, _, files in os.walk(staged):
        times = os.stat(root)
        for name in sorted(files):
            if name.endswith(".py"):
                src = os.path.join(root, name)
                rel = os.path.relpath(src, os.path.dirname(staged))
                py_compile.compile(src, cfile=src + "c", dfile=rel, doraise=True,
                                   invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
                shutil.copystat(src, src + "c")
        os.utime(root, (times.st_atime, times.st_mtime))  # adding files must not date the folder


def program_bytes():
    """The program to install: the running archive, or a fresh build from this package."""
    archive = running_archive()
    if archive:
        with open(archive, "rb") as fh:
            return fh.read()
    return build()


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python3 -m vpn_director.pyz OUT.pyz", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args[0])), exist_ok=True)
    write_atomic(args[0], build(), mode=0o755)
    print("wrote %s" % args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
