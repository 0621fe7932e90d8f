"""DNS follows the route: a routed client's lookups go where its traffic goes.

By default every LAN client asks the router's resolver, which re-sends the query from the
router's WAN address: the ISP sees every name a tunnelled or proxied device looks up.

  servers   each tunnel's resolver: the config's list, or "auto" (Asuswrt-Merlin's WireGuard
            nvram wgcN_dns, OpenVPN's pushed server= lines in client.resolv)
  rules     the desired objects: a nat chain that DNATs tunnel clients' port 53 to the router
            over to their tunnel's resolver, a filter chain per component for advanced.dns.block_dot
  table     the plan for one iptables table (nat, filter): chains, jumps at the top, exact undo
  live      reading those tables back, only when something of ours is or should be there
  report    `status` objects, each client's DNS path, and `check` findings
  pipeline  the hooks the engine calls: build, read, plan

Xray clients' DNS (xray.dns "xray") needs no table here: two TPROXY rules for port 53 in the
Xray chain (desired.py) and a DNS route in the generated Xray config (xray/generate.py).
"""

from ..model import TUNNEL, XRAY

NAT_CHAINS = {TUNNEL: "VPD_DNS_TUN"}  # tunnel clients' DNS to the router -> their tunnel's resolver
DOT_CHAINS = {XRAY: "VPD_DOT_XRAY", TUNNEL: "VPD_DOT_TUN"}  # advanced.dns.block_dot
RECORD_KEY = "dns"  # state.json: {"nat": {chain: component}, "filter": {chain: component}}
DNS_PORT, DOT_PORT = 53, 853
