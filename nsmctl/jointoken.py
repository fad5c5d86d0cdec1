"""One-time, short-lived join tokens: how a VM proves it may become node NAME, so that its keys
are made on the VM and only certificate requests travel (no private key in Terraform state).

``nsmctl node token create --dir CA --node NAME --ttl 1h`` makes a :class:`JoinToken` and keeps,
in ``<CA dir>/join-tokens/<id>.json`` (mode 0600), only its node, expiry and the SHA-256 of its
secret. The token text (``vwj1-`` then base64url of JSON) carries the id, the secret, the node,
the trust domain and the SHA-256 *pin* of the CA root the joining node must find at the signer
(as kubeadm's discovery token pins the cluster CA): the node trusts nothing it has not pinned.

:meth:`TokenStore.consume` accepts a token once: its file must exist, not be expired, name the
same node and hold the secret's hash (compared in constant time); it is deleted *before* the
caller signs anything, so a token never works twice, not even concurrently (the delete is the
claim: only one caller's unlink succeeds). Every refusal has the same message (which part was
wrong is not told to the caller) and is logged with the reason. Expired files are swept on use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from sdk.errors import InvalidArgument, PermissionDenied

log = structlog.get_logger("nsmctl.jointoken")

PREFIX = "vwj1-"
DIR = "join-tokens"
MAX_TTL = 24 * 3600.0
_ID = re.compile(r"^[0-9a-f]{12}$")
_NODE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")
REFUSED = "join token refused: it is unknown, expired, already used or for another node"


@dataclass(frozen=True)
class JoinToken:
    """What the joining node is given."""

    id: str
    secret: str
    node: str
    trust_domain: str
    pin: str  # hex SHA-256 of the CA root certificate (DER)

    def text(self) -> str:
        doc = {"id": self.id, "secret": self.secret, "node": self.node,
               "td": self.trust_domain, "pin": self.pin}
        raw = json.dumps(doc, separators=(",", ":")).encode()
        return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def parse(cls, text: str, field: str = "--token") -> JoinToken:
        """A token from its text; InvalidArgument naming ``field`` (never echoing the text)."""
        if not isinstance(text, str) or not text.startswith(PREFIX) or len(text) > 2048:
            raise InvalidArgument(field, f"is not a join token (they start with {PREFIX!r}: "
                                  "make one with 'nsmctl node token create')")
        body = text[len(PREFIX):]
        try:
            doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            token = cls(str(doc["id"]), str(doc["secret"]), str(doc["node"]), str(doc["td"]),
                        str(doc["pin"]))
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise InvalidArgument(field, "is damaged: copy the whole token") from None
        if not (_ID.match(token.id) and _NODE.match(token.node)
                and re.fullmatch(r"[0-9a-f]{64}", token.pin)
                and re.fullmatch(r"[0-9a-f]{64}", token.secret)):
            raise InvalidArgument(field, "is damaged: copy the whole token")
        return token


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    """Tokens of one CA directory; see the module docstring."""

    def __init__(self, ca_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self.directory = ca_dir / DIR
        self.now = clock

    def create(self, node: str, trust_domain: str, pin: str, ttl: float) -> JoinToken:
        """A new token for ``node``, valid ``ttl`` seconds."""
        if not _NODE.match(node):
            raise InvalidArgument("--node", f"{node[:60]!r}: use at most 42 lower-case letters, "
                                  "digits and '-', starting and ending with a letter or digit")
        if not 0 < ttl <= MAX_TTL:
            raise InvalidArgument("--ttl", f"must be more than 0 and at most {MAX_TTL / 3600:g}h")
        token = JoinToken(secrets.token_hex(6), secrets.token_hex(32), node, trust_domain, pin)
        self.directory.mkdir(mode=0o700, exist_ok=True)
        path = self.directory / f"{token.id}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"node": node, "expires": self.now() + ttl,
                       "secret_sha256": _hash(token.secret)}, out)
        return token

    def consume(self, token: JoinToken) -> None:
        """Accept ``token`` once (see the module docstring); PermissionDenied otherwise."""
        self.sweep()
        path = self.directory / f"{token.id}.json"
        try:
            doc = json.loads(path.read_text())
            ok = (doc["node"] == token.node and float(doc["expires"]) > self.now()
                  and hmac.compare_digest(str(doc["secret_sha256"]), _hash(token.secret)))
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            log.warning("join token refused", id=token.id, node=token.node)
            raise PermissionDenied(REFUSED)
        try:
            path.unlink()  # the claim: a second use, even a concurrent one, finds nothing
        except FileNotFoundError:
            raise PermissionDenied(REFUSED) from None
        log.info("join token used", id=token.id, node=token.node)

    def sweep(self) -> None:
        """Delete expired tokens."""
        for path in self.directory.glob("*.json"):
            try:
                expired = float(json.loads(path.read_text())["expires"]) <= self.now()
            except (OSError, ValueError, KeyError, TypeError):
                expired = True
            if expired:
                path.unlink(missing_ok=True)
