"""Elements ``SignPathSegment`` and ``VerifyPath``: each hop signs its path segment, every hop
checks the chain of signatures before it.

``SignPathSegment(source, audience=None, lifetime=600)``
    On request, signs the segment at ``path.index`` (this hop's: place it after ``UpdatePath``)
    with this process's SVID: subject = own SPIFFE ID, audience = the next hop's SPIFFE ID
    (``audience`` when given — a string, or a function asked at each request — else
    ``ctx.values[NEXT_HOP_ID]`` set by the element that chose the next hop), bound to the
    segment's id, to the previous segment's token and its subject (``psub``), and to what this
    hop decided: the request's network service and labels (``req``, :func:`request_binding`) and
    the mechanism preferences it sends on (``mech``, :func:`mechanisms_binding`) — so place it
    after every element that changes them (right before ``Connect``), and to the route it hands
    its audience when an element in front chose one (``nxt``, ``ctx.values[ROUTE_CLAIM]``: a node
    manager's forwarder, :mod:`sdk.networkservice.route`). Sets the segment's
    ``token`` and ``expires`` (= min(lifetime, SVID expiry): the time by which the connection must
    be refreshed). Without an audience it raises :class:`sdk.errors.FailedPrecondition`. Close
    passes through.

``VerifyPath(source, trust_unix_peers=True)``
    On request, before anything else of the hop runs (place it before ``UpdatePath`` in a
    server), verifies segments ``0..path.index``: every token valid (signed by an SVID of the
    bundle of the trust domain the signer's ID names — this hop's own or a federated one,
    ``Material.trust``; an unfederated trust domain is refused naming it), subject = that
    certificate's ID, not expired, bound to its segment's id and to the
    previous token), each audience is the next segment's subject, the last audience is this
    hop's own SPIFFE ID, and the last subject is the TLS peer (``ctx.peer``). A caller without a
    SPIFFE ID (Unix socket) is accepted as the last subject when ``trust_unix_peers`` (local
    workloads prove themselves with the token alone; the socket's file mode guards who may
    connect); in-process calls (empty peer) always are. On success ``ctx.values[CLIENT_ID]`` is
    the first subject (the client the request started from), ``ctx.values[PATH_IDS]`` all
    subjects and ``ctx.values[SIGNED_ROUTE]`` the last token's ``nxt`` claim. A request must
    also carry what its tokens bind: every token's ``req`` must match the request's network
    service and labels, and the last token's ``mech`` the mechanism
    preferences received (each hop binds what it sent; earlier hops' preferences were checked
    where they arrived) — so a token replayed with another namespace, interface, service or labels
    is refused. Tokens without these claims bind nothing but their own signer's requests.
    Close runs the same checks (not the request bindings: a close carries no preferences) but
    accepts tokens expired up to :data:`sdk.security.token.CLOSE_GRACE` (the signer's certificate
    checked no earlier than that) and a token not chained to the token now before it if it was
    signed after a segment of the same signer (``psub`` equals that segment's subject: an
    upstream hop re-signed since, e.g. when nsmgr closes an old path during a refresh), so the hop
    that holds a connection can always close it but nobody can splice another's token behind a
    segment of their own; a close made inside this process (empty peer: a timeout, a dead
    endpoint) is not checked. Failures raise ``Unauthenticated``/``PermissionDenied`` with the
    reason (and are counted as ``kind="token"`` denials); nothing behind it runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from api.proto.connection_pb2 import Connection, Mechanism
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import Key
from sdk.domains import split
from sdk.errors import FabricError, FailedPrecondition, PermissionDenied, Unauthenticated
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.security import audit, token
from sdk.security.peer import identity_of
from sdk.security.source import SvidSource

#: The next hop's SPIFFE ID, set by the element that chose the next hop; the audience signed for.
NEXT_HOP_ID: Key[str] = Key("next_hop_spiffe_id")
#: The first subject of the verified path: the client the request started from.
CLIENT_ID: Key[str] = Key("client_spiffe_id")
#: Every subject of the verified path, in order (segments 0 .. this hop's previous one).
PATH_IDS: Key[list[str]] = Key("path_spiffe_ids")
#: The ``nxt`` claim this hop signs: the route it hands its audience (``HandRoute``).
ROUTE_CLAIM: Key[str] = Key("route_claim")
#: The ``nxt`` claim of the verified path's last token ('' when it has none).
SIGNED_ROUTE: Key[str] = Key("signed_route")

Clock = Callable[[], float]
Audience = str | Callable[[], str] | None


def field_digest(fields: list[str]) -> str:
    """A claim value binding ``fields`` in order."""
    # Length-prefixed, so no two field lists share an encoding (and faster than JSON).
    return token.token_hash("".join(f"{len(f)}:{f}" for f in fields))


def request_binding(conn: Connection) -> str:
    """The ``req`` claim for ``conn``: a hash of its network service and labels.

    The service is bound without its ``@domain``: the domain says where the request is routed,
    and the gateway where it enters that domain drops it (``EnterDomain``), so the hops behind
    it verify the same claim; every hop's audience still binds where its token may go."""
    fields = [split(conn.network_service)[0], str(len(conn.labels))]
    for key, value in sorted(conn.labels.items()):
        fields += (key, value)
    return field_digest(fields)


def mechanisms_binding(preferences: Iterable[Mechanism]) -> str:
    """The ``mech`` claim: a hash of the mechanism preferences in order (class, type and every
    parameter: for KERNEL the namespace ``inodeURL`` and the interface ``name``)."""
    fields: list[str] = []
    for m in preferences:
        fields += (m.cls, m.type, str(len(m.parameters)))
        for key, value in sorted(m.parameters.items()):
            fields += (key, value)
    return field_digest(fields)


class SignPathSegment(NetworkServiceElement):
    """See the module docstring."""

    def __init__(
        self,
        source: SvidSource,
        audience: Audience = None,
        lifetime: float = token.DEFAULT_LIFETIME,
        clock: Clock = time.time,
    ) -> None:
        self.source = source
        self.audience = audience
        self.lifetime = lifetime
        self.clock = clock

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        given = self.audience() if callable(self.audience) else self.audience
        audience = given or next.ctx.values.get(NEXT_HOP_ID)
        if not audience:
            raise FailedPrecondition(
                "cannot sign the path segment: the next hop's SPIFFE ID is unknown (it must "
                "register with its SPIFFE ID in path_ids, i.e. run with an SVID)"
            )
        path = request.connection.path
        if path.index >= len(path.path_segments):
            raise FailedPrecondition("no path segment of this hop to sign: place after UpdatePath")
        segment = path.path_segments[path.index]
        previous = path.path_segments[path.index - 1].token if path.index > 0 else ""
        material = self.source.current()
        segment.token, expires = token.sign(
            material.svid, audience, segment.id, previous, self.lifetime, self.clock(),
            request=request_binding(request.connection),
            mechanisms=mechanisms_binding(request.mechanism_preferences),
            previous_subject=self._previous_subject(next, path.index, previous),
            route=next.ctx.values.get(ROUTE_CLAIM, ""),
        )
        segment.expires.FromSeconds(int(expires))
        return await next.request(request)

    @staticmethod
    def _previous_subject(next: NSCursor, index: int, previous: str) -> str:
        """Who signed the segment before this hop's: as VerifyPath found it, else as the token
        says (it came through VerifyPath or from this process)."""
        subjects = next.ctx.values.get(PATH_IDS)
        if isinstance(subjects, list) and len(subjects) == index:
            return str(subjects[-1])
        return token.unverified_subject(previous) if previous else ""


class VerifyPath(NetworkServiceElement):
    """See the module docstring."""

    def __init__(
        self, source: SvidSource, trust_unix_peers: bool = True, clock: Clock = time.time
    ) -> None:
        self.source = source
        self.trust_unix_peers = trust_unix_peers
        self.clock = clock

    def _verify(
        self, conn: Connection, peer: str, request: NetworkServiceRequest | None
    ) -> tuple[list[str], token.Claims]:
        closing = request is None
        segments = conn.path.path_segments
        index = conn.path.index
        if not segments or index >= len(segments):
            raise Unauthenticated(
                "the request carries no signed path: the client must sign its path segment"
            )
        material = self.source.current()
        now = self.clock()
        subjects: list[str] = []
        previous: token.Claims | None = None
        bound = ""  # request_binding(conn), computed when a token asks for it
        for i in range(index + 1):
            segment = segments[i]
            if not segment.token:
                raise Unauthenticated(
                    f"path segment {i} ({segment.name or 'unnamed'}) is not signed: this hop "
                    "requires path tokens, so every hop before it needs an SVID (--svid-dir)"
                )
            claims = token.verify(
                segment.token, material.trust, now,
                segment_id=segment.id,
                previous_token=None if closing else (segments[i - 1].token if i else ""),
                allow_expired=closing,
            )
            if previous is not None and previous.audience != claims.subject:
                raise PermissionDenied(
                    f"path segment {i} is signed by {claims.subject} but segment {i - 1} was "
                    f"handed to {previous.audience}: broken chain",
                )
            if closing:
                _chained_for_close(claims, i, segments[i - 1].token if i else "", previous)
            elif claims.request:
                bound = bound or request_binding(conn)
                if claims.request != bound:
                    raise PermissionDenied(
                        f"path token of {claims.subject} (segment {i}) was signed for another "
                        "network service or other labels than this request carries (replayed?): "
                        "a token is valid only for the request it was signed for"
                    )
            subjects.append(claims.subject)
            previous = claims
        assert previous is not None
        if request is not None and previous.mechanisms and previous.mechanisms != (
            mechanisms_binding(request.mechanism_preferences)
        ):
            raise PermissionDenied(
                f"path token of {previous.subject} was signed for other mechanism preferences "
                "(namespace, interface or parameters) than this request carries (replayed?): "
                "a token is valid only for the request it was signed for"
            )
        own = str(material.spiffe_id)
        if previous.audience != own:
            raise PermissionDenied(
                f"path token of {previous.subject} is for {previous.audience}, not {own}"
            )
        caller = identity_of(peer)
        if caller is not None and caller != previous.subject:
            raise PermissionDenied(
                f"the last path segment is signed by {previous.subject} but the call comes from "
                f"{caller}",
            )
        if caller is None and peer and not self.trust_unix_peers:
            raise Unauthenticated(
                f"caller {peer!r} has no SPIFFE ID: connect over mTLS"
            )
        return subjects, previous

    def _check(
        self, conn: Connection, next: NSCursor, request: NetworkServiceRequest | None
    ) -> None:
        try:
            subjects, last = self._verify(conn, next.ctx.peer, request)
        except FabricError as exc:
            audit.record("token", str(exc), peer=next.ctx.peer)
            raise
        next.ctx.values[CLIENT_ID] = subjects[0]
        next.ctx.values[PATH_IDS] = subjects
        next.ctx.values[SIGNED_ROUTE] = last.route

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        self._check(request.connection, next, request)
        return await next.request(request)

    async def close(self, conn: Connection, next: NSCursor) -> None:
        if next.ctx.peer:  # else closed by this process itself (timeout, heal)
            self._check(conn, next, None)
        await next.close(conn)


def _chained_for_close(
    claims: token.Claims, i: int, previous_token: str, previous: token.Claims | None
) -> None:
    """A close's segment ``i`` must chain to the token before it, or have been signed after a
    segment of the same signer (that hop re-signed since): see the module docstring."""
    if claims.previous == token.token_hash(previous_token):
        return
    if previous is not None and claims.previous_subject == previous.subject:
        return
    raise PermissionDenied(
        f"path token of {claims.subject} (segment {i}) does not chain to the token before it, "
        "nor was it signed after a segment of "
        f"{previous.subject if previous else 'nobody'}: a close must carry the path as the "
        "closing hop holds it"
    )
