"""SPIFFE IDs: parsing and validation (``spiffe://<trust-domain>/<kind>/<name>``).

Contract: :meth:`SpiffeId.parse` accepts exactly the IDs the SPIFFE specification allows (scheme
``spiffe``, a lower-case trust domain of letters, digits, ``.``, ``-`` and ``_``, a path of
non-empty segments of letters, digits, ``.``, ``-`` and ``_`` that are not ``.`` or ``..``, no
query, fragment, port or user info, at most 2048 bytes) and raises
:class:`sdk.errors.InvalidArgument` naming the rule otherwise. :meth:`SpiffeId.workload` adds the
fabric's convention: a path of at least two segments, ``<kind>/<name>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sdk.errors import InvalidArgument

SCHEME = "spiffe://"
MAX_LENGTH = 2048
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


def _shown(text: str) -> str:
    """``text`` quoted for an error message, shortened when huge."""
    return repr(text if len(text) <= 80 else text[:77] + "...")


def check_trust_domain(name: str, field: str = "trust_domain") -> str:
    """Raise InvalidArgument unless ``name`` is a valid trust domain name; returns it."""
    if not name:
        raise InvalidArgument(field, "must not be empty: give a name like example.org")
    if len(name) > 255:
        raise InvalidArgument(field, f"must be at most 255 characters (got {len(name)})")
    if not _TRUST_DOMAIN.match(name):
        raise InvalidArgument(
            field,
            f"{_shown(name)} is not a trust domain: use lower-case letters, digits, '.', '-', '_'",
        )
    return name


@dataclass(frozen=True, order=True)
class SpiffeId:
    """A valid SPIFFE ID; ``str()`` gives its URI form."""

    trust_domain: str
    path: str  # "" or "/seg/seg..."

    @classmethod
    def parse(cls, text: str, field: str = "spiffe_id") -> SpiffeId:
        """Parse and validate ``text``; raise InvalidArgument naming ``field`` and the rule."""
        if len(text) > MAX_LENGTH:
            raise InvalidArgument(field, f"must be at most {MAX_LENGTH} characters")
        if not text.startswith(SCHEME):
            raise InvalidArgument(
                field, f"{_shown(text)} must start with 'spiffe://' (lower case)"
            )
        rest = text[len(SCHEME):]
        for bad, what in (("?", "a query"), ("#", "a fragment"), ("@", "user info"),
                          (":", "a port"), ("%", "percent-encoding")):
            if bad in rest:
                raise InvalidArgument(field, f"{_shown(text)} must not contain {what}")
        domain, slash, path = rest.partition("/")
        check_trust_domain(domain, field)
        if not slash:
            return cls(domain, "")
        for segment in path.split("/"):
            if not segment:
                raise InvalidArgument(
                    field, f"{_shown(text)} has an empty path segment (or a trailing '/')"
                )
            if segment in (".", ".."):
                raise InvalidArgument(field, f"{_shown(text)} must not use '.' or '..' segments")
            if not _SEGMENT.match(segment):
                raise InvalidArgument(
                    field,
                    f"{_shown(text)}: path segments use only letters, digits, '.', '-' and '_'",
                )
        return cls(domain, "/" + path)

    @classmethod
    def workload(cls, text: str, field: str = "spiffe_id") -> SpiffeId:
        """Parse an ID that follows the fabric's ``spiffe://<td>/<kind>/<name>`` convention."""
        parsed = cls.parse(text, field)
        if len(parsed.segments) < 2:
            raise InvalidArgument(
                field, f"{_shown(text)} must name a kind and a name: spiffe://<td>/<kind>/<name>"
            )
        return parsed

    @classmethod
    def of(cls, trust_domain: str, *segments: str) -> SpiffeId:
        """Build an ID from parts (validated as a whole)."""
        return cls.parse(SCHEME + "/".join((trust_domain, *segments)))

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/")[1:]) if self.path else ()

    @property
    def kind(self) -> str:
        """The first path segment (``nsmgr``, ``forwarder``, ``nse``, ``nsc``, ...)."""
        return self.segments[0] if self.segments else ""

    @property
    def name(self) -> str:
        """The rest of the path after the kind."""
        return "/".join(self.segments[1:])

    def member_of(self, trust_domain: str) -> bool:
        return self.trust_domain == trust_domain

    def __str__(self) -> str:
        return f"{SCHEME}{self.trust_domain}{self.path}"


def is_spiffe_id(text: str) -> bool:
    """Whether ``text`` is a valid SPIFFE ID (never raises)."""
    try:
        SpiffeId.parse(text)
    except InvalidArgument:
        return False
    return True
