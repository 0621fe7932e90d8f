"""Who may use the bot: numeric Telegram user IDs, in private chats only.

  telegram.admins         numeric IDs; /pair CODE adds one (through the operations layer)
  telegram.allowed_users  usernames from older configs: the first account that writes under
                          such a name is pinned to it (<state_dir>/bot-pins.json, 0600); any
                          other account using the name later is refused
  pairing                 `vpn-director bot pair` writes a one-time 8-digit code, valid 10
                          minutes, as a hash in <state_dir>/bot-pair.json (0600); 5 wrong tries
                          end it

Everyone else gets no router data.
"""

import hashlib
import hmac
import json
import os
import secrets
import time

from .. import state
from ..errors import StateError

PINS = "bot-pins.json"
PAIR = "bot-pair.json"
PAIR_VALID_S = 600
PAIR_TRIES = 5


def _read(path):
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class Access:
    def __init__(self, tg, state_dir, clock=time.time, log=None):
        self.tg, self.state_dir, self.clock = tg, state_dir, clock
        self.log = log or (lambda msg: None)

    def allowed(self, user, chat):
        """True for an admin (or a pinned allowed username) writing in a private chat."""
        if not isinstance(user, dict) or not isinstance(chat, dict) or chat.get("type") != "private":
            return False
        uid = user.get("id")
        if not isinstance(uid, int) or isinstance(uid, bool) or user.get("is_bot"):
            return False
        if uid in self.tg.admins:
            return True
        name = str(user.get("username") or "").lower()
        if not name or name not in self.tg.allowed_users:
            return False
        path = os.path.join(self.state_dir, PINS)
        pins = _read(path)
        pinned = pins.get(name)
        if pinned is None:
            pins[name] = uid
            try:
                state.ensure_dir(self.state_dir)
                state.write_atomic(path, json.dumps(pins, indent=1, sort_keys=True) + "\n", mode=0o600)
            except StateError as e:
                self.log("bot: cannot pin @%s: %s; refused" % (name, e))
                return False
            self.log("bot: username @%s pinned to user ID %d (first contact); only that ID counts from now on"
                     % (name, uid))
            return True
        if pinned != uid:
            self.log("bot: refused user ID %d writing as @%s, which is pinned to another account" % (uid, name))
            return False
        return True

    # --- pairing ---------------------------------------------------------------------------------
    def new_code(self):
        """A fresh one-time code (8 digits), replacing any earlier one."""
        code = "%08d" % secrets.randbelow(10 ** 8)
        state.ensure_dir(self.state_dir)
        state.write_atomic(os.path.join(self.state_dir, PAIR), json.dumps(
            {"sha256": _digest(code), "expires": self.clock() + PAIR_VALID_S, "tries": 0}) + "\n", mode=0o600)
        return code

    def take_code(self, code):
        """True (and the code is used up) if `code` is the current code and still valid."""
        path = os.path.join(self.state_dir, PAIR)
        data = _read(path)
        if not data:
            return False
        if not isinstance(data.get("expires"), (int, float)) or self.clock() > data["expires"]:
            _remove(path)
            return False
        good = isinstance(code, str) and code.isdigit() and len(code) == 8 and hmac.compare_digest(
            _digest(code), str(data.get("sha256")))
        if good:
            _remove(path)
            return True
        tries = int(data.get("tries", 0)) + 1
        if tries >= PAIR_TRIES:
            _remove(path)
            self.log("bot: %d wrong pairing codes; the code is void (`vpn-director bot pair` makes a new one)" % tries)
        else:
            state.write_atomic(path, json.dumps(dict(data, tries=tries)) + "\n", mode=0o600)
        return False


def _digest(code):
    return hashlib.sha256(code.encode("ascii")).hexdigest()


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def add_admin(user_id):
    """The config change of a successful /pair: user_id appended to telegram.admins."""
    from ..ops import OpsError
    from ..ops.txn import Unchanged

    def change(raw, cfg, out):
        tg = raw.get("telegram")
        if tg is None:
            tg = raw["telegram"] = {}
        if not isinstance(tg, dict):
            raise OpsError("telegram in the config is not an object")
        admins = tg.get("admins")
        if admins is None:
            admins = tg["admins"] = []
        if not isinstance(admins, list):
            raise OpsError("telegram.admins in the config is not a list")
        if user_id in admins:
            raise Unchanged("user ID %d is already an admin" % user_id)
        admins.append(user_id)
        return "telegram: user ID %d paired as admin" % user_id
    return change
