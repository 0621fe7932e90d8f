"""IPv6 of routed clients: vpn-director routes IPv4 only, so a routed client's IPv6 would leave
by the WAN. With `advanced.ipv6.mode: block` (the default) it is rejected by the client's MAC.

  macs      which MAC each routed client has: pins, the neighbour table, the DHCP leases, and
            what earlier runs learnt
  block     the desired ip6tables filter chains and jumps, and the plan that makes them live
  live      reading the filter table back (only when there is something to block or remove)
  report    `status` objects and `check --live` findings
  pipeline  the hooks the engine calls: build, read, plan

Nothing here spawns a process except through tools.Tools (ip6tables-save / -restore).
"""

from ..model import TUNNEL, XRAY

# One chain per component, so `apply xray` / `stop tunnel` touch only their own.
CHAINS = {XRAY: "VPD6_XRAY", TUNNEL: "VPD6_TUN"}
RECORD_KEY = "ipv6"  # state.json: {"chains": {name: component}, "macs": {IPv4 address: MAC}}
