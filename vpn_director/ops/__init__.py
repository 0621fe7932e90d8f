"""The operations layer: the only code that writes the config.

Every front end (the command line, the web UI and the Telegram bot) edits through it,
so all of them validate, write, apply and roll back the same way:

  txn        one edit: run lock, read, change, validate the whole file, atomic write, apply,
             put the previous file back if the apply fails, history
  rawfile    the file itself: key order and unknown keys kept, atomic write keeping mode and owner
  history    the last versions under <data_dir>/history/, with time and a one-line summary
  leases     dnsmasq's DHCP leases: device names and MACs
  names      a name for each address (the config's `names` win over the leases)
  route      where a client's traffic goes, from the desired state (trace)
  devices    the front ends' device list (clients, DHCP leases, named addresses, with routes)
  clients, excludes, tunnels   the edits themselves, as plain functions of the raw config
             (clients.route_device: the front ends' "route this device via X")
  cli        the `client`, `exclude`, `tunnel` and `config` commands
"""

from ..errors import EXIT_USAGE, VpdError

HISTORY_KEEP = 20  # versions of the config kept under <data_dir>/history/


class OpsError(VpdError):
    """An edit that cannot be made (bad input: exit 2) or whose apply failed (exit 1)."""

    def __init__(self, message, exit_code=EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code
