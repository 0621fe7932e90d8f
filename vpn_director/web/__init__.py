"""The web UI (`vpn-director web`): an HTTPS server on the LAN with a JSON API over the operations
layer and the reports, and a no-build front end shipped in static/.

Only `settings` is imported by config validation (every apply); the rest loads when the `web`
command runs.
"""

from ..errors import VpdError


class WebError(VpdError):
    """The web UI cannot start (address, certificate, port) or a request cannot be served;
    `status` is the HTTP status an API answer carries."""

    def __init__(self, message, status=500):
        super().__init__(message)
        self.status = status
