"""One exception type per layer; the CLI turns each into a one-line message and an exit code."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DRIFT = 3


class VpdError(Exception):
    exit_code = EXIT_FAILED


class UsageError(VpdError):
    """A command-line argument is unusable (an empty path, a relative --root); nothing was done."""

    exit_code = EXIT_USAGE


class ConfigError(VpdError):
    """The config file is unreadable or invalid; carries every problem found."""

    exit_code = EXIT_USAGE

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))

    def lines(self):
        return ["invalid config: %d problem(s)" % len(self.problems)] + [
            "  " + p for p in self.problems
        ]


class DataError(VpdError):
    """Country data or an external set needed by the config is missing or unusable."""


class ToolError(VpdError):
    """A kernel tool is missing or a batch failed; names the step and the offending line."""

    def __init__(self, step, message, line=None):
        self.step = step
        self.line = line
        text = "%s: %s" % (step, message)
        if line:
            text += " (offending line: %s)" % line
        super().__init__(text)


class LockError(VpdError):
    """Another run held the lock for longer than the bounded wait."""


class InstallError(VpdError):
    """Installing or uninstalling on the router failed; names the file."""


class StateError(VpdError):
    """state_dir is unsafe, unwritable, or holds a record that cannot be trusted; names the path."""
