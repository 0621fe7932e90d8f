"""Run a plan's steps; on a failure or an interruption put the previous state back.

A kernel tool may stop half-way through a batch (`ipset restore` and `ip -batch` keep the lines
before a bad one), so the failing step is repaired too, not only the finished ones:
* set steps are restored from the set contents read before the plan (`Step.before`): whatever
  the batch got through, each set ends with its old members, and temporary sets are destroyed;
* ip steps run their undo with `-force`: a line whose add never happened fails harmlessly;
* an iptables-restore (or ip6tables-restore) commit is all or nothing.
SIGINT and SIGTERM during the steps are held until the running step ends (the tools run in
their own session, so a terminal's Ctrl-C does not cut a batch), then everything done is undone.
"""

import signal

from . import live, render
from .errors import ToolError, VpdError


class Interrupted(VpdError):
    """SIGINT or SIGTERM arrived while the plan ran; the previous state was restored."""


class Signals:
    """Hold SIGINT/SIGTERM while installed: remembered, acted on between steps."""

    NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}

    def __init__(self):
        self.caught = None
        self._old = {}

    def __enter__(self):
        for sig in self.NAMES:
            try:
                self._old[sig] = signal.signal(sig, self._note)
            except ValueError:  # not the main thread (a daemon's worker): signals stay as they are
                pass
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _note(self, signum, frame):
        self.caught = self.caught or self.NAMES.get(signum, str(signum))


def execute(p, tools, signals=None):
    """Run the steps; on a failure or a held signal undo everything done and raise."""
    done = []
    for step in p.steps:
        try:
            _run(tools, step.name, step.tool, step.batch)
        except ToolError:
            _repair(tools, step)
            _undo(tools, done)
            raise
        done.append(step)
        if signals is not None and signals.caught:
            _undo(tools, done)
            raise Interrupted("interrupted by %s during '%s': the previous state was restored"
                              % (signals.caught, step.name))


def _repair(tools, step):
    """Undo the part of a failed step that the tool may have carried out."""
    try:
        if step.before is not None:
            restore_sets(tools, step.before)
        elif step.tool == "ip" and step.undo:
            _run(tools, "undo " + step.name, "ip", step.undo, force=True)
    except ToolError:
        pass  # report the original failure; the next apply converges


def _undo(tools, done):
    for prev in reversed(done):
        try:
            if prev.undo:
                _run(tools, "undo " + prev.name, prev.tool, prev.undo, force=True)
            elif prev.before is not None:
                restore_sets(tools, prev.before)
        except ToolError:
            _repair(tools, prev)  # e.g. an undo batch that stopped half-way: restore from contents


def restore_sets(tools, before):
    """Give every set in `before` its old members back ({name: LiveSet, or None if it did not
    exist}), and destroy every temporary set. Reads the sets as they are now."""
    now = live.LiveState()
    live.parse_ipset_save(tools.ipset_save(), now)
    lines = ["destroy %s" % n for n in sorted(now.sets) if n.startswith(render.TMP_PREFIX)]
    spare = render.TMP_PREFIX + "restore"
    for name, old in sorted(before.items()):
        cur = now.sets.get(name)
        if name.startswith(render.TMP_PREFIX):
            continue  # destroyed above
        if old is None:
            if cur is not None:
                lines.append("destroy %s" % name)
        elif cur is None:
            lines.append(render.set_text(name, old.members))
        elif cur.members != old.members:
            lines += [render.set_text(spare, old.members), "swap %s %s" % (spare, name), "destroy %s" % spare]
    if lines:
        tools.ipset_restore("restore sets", "\n".join(lines) + "\n")


def _run(tools, name, tool, batch, force=False):
    if tool == "ipset":
        tools.ipset_restore(name, batch)
    elif tool == "ip":
        tools.ip_batch(name, batch, force=force)
    elif tool == "ip6tables":
        tools.ip6tables_restore(name, batch)
    else:
        tools.iptables_restore(name, batch)
