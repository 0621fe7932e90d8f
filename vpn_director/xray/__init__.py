"""The Xray side: servers from share links and subscriptions, the generated Xray config, switching.

  links         one share link (vless, vmess, trojan, ss, hysteria2) -> Server or Skip
  outbound      the classic outbound form; the one check links and JSON entries pass; id, label, version
  subscription  a subscription body (base64, link list, Xray JSON) -> Servers and Skips; fetching
  store         <data_dir>/servers.json: the imported servers, their addresses, status
  generate      a server's outbound + the config -> the Xray config file (deterministic bytes)
  version       `xray version` and the features each Xray version has
  service       starting and stopping the Xray process (Entware init script, systemd, managed)
  switch        `xray use`: render, test, swap, restart, wait, probe; put the old one back on failure
  socks         a minimal SOCKS5 client for the end-to-end probe (standard library only)
  prober        `xray test`: real-delay tests through a throw-away Xray of our own, never the live one
  probeproc     the prober's binary (a hard link named vpd-xray-probe), config and process
  probelog      why a server failed, from the client side and from the prober's Xray log
  cli           the `xray ...` commands: argument parsing and printing only
"""

from ..errors import EXIT_FAILED, VpdError

# Why an entry of a link list or subscription was not stored (the words users see in counts).
SKIP_REASONS = ("unsupported", "invalid", "insecure", "plaintext", "removed-transport", "placeholder")


class XrayError(VpdError):
    """An Xray-side operation failed (bad link, refused config, Xray did not start); one line."""

    def __init__(self, message, exit_code=EXIT_FAILED):
        super().__init__(message)
        self.exit_code = exit_code


class Skip(Exception):
    """An entry that is not stored: `reason` is one of SKIP_REASONS, `detail` says why in words
    that never contain a credential (no UUID, password or key)."""

    def __init__(self, reason, detail, name=""):
        assert reason in SKIP_REASONS, reason
        super().__init__("%s: %s" % (reason, detail))
        self.reason = reason
        self.detail = detail
        self.name = name
