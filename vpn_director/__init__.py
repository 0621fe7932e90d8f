"""vpn-director: selective routing for Linux routers (Xray TPROXY + Tunnel Director)."""

__version__ = "0.1.0"
