"""NSM URLs: how a workload names the connection it wants.

Syntax: ``<mechanism>://<network-service>[@<domain>][/<interface>][?<key>=<value>&...]``, e.g.
``kernel://secure-db@cloud-b/nsm0?app=web``:

* ``mechanism``: how the connection reaches the workload; accepted: :data:`MECHANISMS`
  (case-insensitive; :class:`NsmUrl` holds it upper-case, as NSM names mechanism types).
* ``network-service``: the service to connect to; ``domain``: the registry domain it lives in
  (omitted → the local one). Both are DNS-1123 subdomains, the rule the registry enforces.
* ``interface``: the interface name in the workload's namespace (omitted → chosen by the
  fabric). A Linux interface name: 1-15 printable ASCII characters, no ``/``, ``:`` or
  whitespace, not ``.`` or ``..``. Percent-encoded in the URL when needed (``%3F`` for ``?``).
* labels: the client's labels (matched against the service's source selectors), Kubernetes label
  syntax, each key at most once, percent-decoded.

:func:`parse` (also ``NsmUrl.parse``) turns text into an :class:`NsmUrl` and raises only
:class:`~sdk.errors.InvalidArgument`, naming the part that is wrong and how to fix it; ``str()``
gives the canonical text back (lower-case scheme, labels in their order), and
``parse(str(url)) == url`` for every valid ``url``. URLs are at most :data:`MAX_URL` characters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from sdk.errors import InvalidArgument
from sdk.registry.validate import check_labels, check_name

#: Accepted mechanism schemes, lower-case.
MECHANISMS = ("kernel",)
#: Longest accepted URL, in characters.
MAX_URL = 1024
#: Longest Linux interface name (IFNAMSIZ - 1).
MAX_INTERFACE = 15

_SHAPE = "<mechanism>://<service>[@<domain>][/<interface>][?key=value&...], e.g. kernel://db/nsm0"


@dataclass(frozen=True)
class NsmUrl:
    """A parsed, validated NSM URL; constructing one validates it (InvalidArgument, field
    ``url.<part>``) and upper-cases the mechanism. Treat ``labels`` as read-only."""

    mechanism: str
    network_service: str
    domain: str | None = None
    interface: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mechanism", _check_mechanism(self.mechanism, "url.mechanism"))
        object.__setattr__(self, "labels", dict(self.labels))
        _check_parts(self, "url")
        text = str(self)
        if len(text) > MAX_URL:
            raise InvalidArgument("url", f"must be at most {MAX_URL} characters (got {len(text)})")

    def __str__(self) -> str:
        text = f"{self.mechanism.lower()}://{self.network_service}"
        if self.domain is not None:
            text += f"@{self.domain}"
        if self.interface is not None:
            text += f"/{quote(self.interface, safe='')}"
        if self.labels:
            text += "?" + "&".join(
                f"{quote(key, safe='/')}={quote(value, safe='')}"
                for key, value in self.labels.items()
            )
        return text

    @property
    def requested_service(self) -> str:
        """The network service a request names: ``service@domain`` with a domain (the fabric
        routes it to that domain's gateway), else ``service``."""
        if self.domain is None:
            return self.network_service
        return f"{self.network_service}@{self.domain}"

    def __hash__(self) -> int:
        return hash(
            (
                self.mechanism,
                self.network_service,
                self.domain,
                self.interface,
                frozenset(self.labels.items()),
            )
        )

    @classmethod
    def parse(cls, text: str, field: str = "url") -> NsmUrl:
        """See :func:`parse`."""
        return parse(text, field)


def parse(text: str, field: str = "url") -> NsmUrl:
    """Parse ``text`` into an :class:`NsmUrl`; InvalidArgument names ``field`` (or
    ``field.<part>``) and says how to fix it. Raises nothing else."""
    if len(text) > MAX_URL:
        raise InvalidArgument(field, f"must be at most {MAX_URL} characters (got {len(text)})")
    scheme, separator, rest = text.partition("://")
    if not separator or not scheme:
        raise InvalidArgument(field, f"{text!r} has no mechanism scheme: write {_SHAPE}")
    mechanism = _check_mechanism(scheme, f"{field}.mechanism")
    location, has_query, query = rest.partition("?")
    authority, _, raw_interface = location.partition("/")
    service, has_domain, domain = authority.partition("@")
    parts = _Parts(
        mechanism=mechanism,
        network_service=service,
        domain=domain if has_domain else None,
        interface=_decode(raw_interface, f"{field}.interface") if raw_interface else None,
        labels=_parse_labels(query, f"{field}.labels") if has_query else {},
    )
    _check_parts(parts, field)
    return NsmUrl(
        parts.mechanism, parts.network_service, parts.domain, parts.interface, dict(parts.labels)
    )


@dataclass
class _Parts:
    """The parts of a URL before validation (what NsmUrl holds after it)."""

    mechanism: str
    network_service: str
    domain: str | None
    interface: str | None
    labels: Mapping[str, str]


def _check_parts(url: _Parts | NsmUrl, field: str) -> None:
    """Validate every part of ``url``; errors name ``field.<part>``."""
    _check_mechanism(url.mechanism, f"{field}.mechanism")
    if not url.network_service:
        raise InvalidArgument(
            f"{field}.network_service", f"is empty: name the service to connect to, {_SHAPE}"
        )
    check_name(f"{field}.network_service", url.network_service)
    if url.domain is not None:
        if not url.domain:
            raise InvalidArgument(
                f"{field}.domain", "is empty after '@': name the domain or drop the '@'"
            )
        check_name(f"{field}.domain", url.domain)
    if url.interface is not None:
        _check_interface(url.interface, f"{field}.interface")
    check_labels(f"{field}.labels", url.labels)


def _check_mechanism(mechanism: str, field: str) -> str:
    """The canonical (upper-case) form of an accepted mechanism; InvalidArgument otherwise."""
    if not mechanism.isascii() or mechanism.lower() not in MECHANISMS:
        raise InvalidArgument(
            field,
            f"unknown mechanism {mechanism!r}: accepted mechanisms are {', '.join(MECHANISMS)}",
        )
    return mechanism.upper()


def _check_interface(name: str, field: str) -> None:
    valid = (
        0 < len(name) <= MAX_INTERFACE
        and name not in (".", "..")
        and all("!" <= char <= "~" and char not in "/:" for char in name)
    )
    if not valid:
        raise InvalidArgument(
            field,
            f"{name!r} is not a valid interface name: 1-{MAX_INTERFACE} printable ASCII "
            "characters without '/', ':' or whitespace, not '.' or '..' (e.g. nsm0)",
        )


def _decode(raw: str, field: str) -> str:
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise InvalidArgument(
            field, f"{raw!r} has a percent-encoding that is not UTF-8: encode UTF-8 bytes"
        ) from None


def _parse_labels(query: str, field: str) -> Mapping[str, str]:
    labels: dict[str, str] = {}
    if not query:
        return labels
    for part in query.split("&"):
        raw_key, has_value, raw_value = part.partition("=")
        if not part:
            raise InvalidArgument(field, "has an empty label (two '&' in a row, or a trailing '&')")
        key = _decode(raw_key, field)
        if not has_value:
            raise InvalidArgument(field, f"label {key!r} has no value: write {key}=<value>")
        if key in labels:
            raise InvalidArgument(field, f"label {key!r} is given twice: keep one")
        labels[key] = _decode(raw_value, field)
    return labels


#: Most URLs one annotation (or one ``nsc``) may ask for.
MAX_URLS = 16


def parse_list(text: str, field: str = "urls") -> list[NsmUrl]:
    """Parse a comma-separated list of NSM URLs (NSM's pod annotation value, e.g.
    ``kernel://a/nsm-1,kernel://b/nsm-2?app=web``; whitespace around items is ignored).

    Raises only InvalidArgument, naming ``field[i]`` for the item that is wrong: an empty list or
    item, more than :data:`MAX_URLS` items, any invalid URL, or two URLs naming the same
    interface (they would meet in one network namespace)."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip():
        raise InvalidArgument(field, f"is empty: name at least one URL, {_SHAPE}")
    if len(items) > MAX_URLS:
        raise InvalidArgument(field, f"has {len(items)} URLs: at most {MAX_URLS} are accepted")
    urls: list[NsmUrl] = []
    interfaces: dict[str, int] = {}
    for index, item in enumerate(items):
        if not item:
            raise InvalidArgument(
                f"{field}[{index}]", "is empty (two ',' in a row, or a trailing ','): remove it"
            )
        url = parse(item, f"{field}[{index}]")
        if url.interface is not None:
            first = interfaces.setdefault(url.interface, index)
            if first != index:
                raise InvalidArgument(
                    f"{field}[{index}].interface",
                    f"{url.interface!r} is also the interface of {field}[{first}]: "
                    "give each URL its own interface name",
                )
        urls.append(url)
    return urls
