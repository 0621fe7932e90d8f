"""The Telegram bot: a long-polling daemon on the standard library (`vpn-director bot`).

Only settings.py is imported by config validation; everything else loads when the `bot`
command runs.
"""

from ..errors import VpdError


class BotError(VpdError):
    """The bot cannot start or run (no token, a bad token, another poller, an unusable file)."""
