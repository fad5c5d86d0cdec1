"""Server interceptors build a method's wrapped handler once and reuse it (sdk.wrapping)."""

from __future__ import annotations

from typing import Any

import grpc

from sdk.limits import InFlightLimit
from sdk.wrapping import KEPT, Behaviour, WrappingInterceptor


class Around(WrappingInterceptor):
    """Tags answers with ``around:``; counts the behaviours it wrapped."""

    def __init__(self) -> None:
        super().__init__()
        self.wrapped = 0

    def wrap(self, kind: str, behaviour: Behaviour) -> Behaviour | None:
        self.wrapped += 1

        async def around(request: Any, context: Any) -> Any:
            return f"around:{await behaviour(request, context)}"
        return around


class LeaveAlone(WrappingInterceptor):
    def wrap(self, kind: str, behaviour: Behaviour) -> Behaviour | None:
        return None


async def echo(request: Any, context: Any) -> Any:
    return request


def details(method: str = "/t.T/M") -> grpc.HandlerCallDetails:
    class Details(grpc.HandlerCallDetails):
        pass

    found = Details()
    found.method = method  # type: ignore[misc]
    found.invocation_metadata = ()  # type: ignore[misc]
    return found


async def intercept(interceptor: WrappingInterceptor, handler: Any) -> Any:
    async def continuation(_: grpc.HandlerCallDetails) -> Any:
        return handler
    return await interceptor.intercept_service(continuation, details())


async def test_a_handler_is_wrapped_once_for_every_call() -> None:
    handler = grpc.unary_unary_rpc_method_handler(echo, request_deserializer=bytes)
    interceptor = Around()
    first = await intercept(interceptor, handler)
    again = await intercept(interceptor, handler)
    assert first is again
    assert interceptor.wrapped == 1
    assert first.request_deserializer is bytes
    assert await first.unary_unary("hi", None) == "around:hi"


async def test_the_in_flight_limit_reuses_its_wrapped_handler() -> None:
    handler = grpc.unary_stream_rpc_method_handler(echo)
    limit = InFlightLimit()
    assert await intercept(limit, handler) is await intercept(limit, handler)


async def test_kept_handlers_are_bounded() -> None:
    interceptor = Around()
    handlers = [grpc.unary_unary_rpc_method_handler(echo, request_deserializer=lambda b: b)
                for _ in range(KEPT + 5)]
    for handler in handlers:
        await intercept(interceptor, handler)
    assert len(interceptor._wrapped) == KEPT
    await intercept(interceptor, handlers[0])  # dropped first, so wrapped again
    assert interceptor.wrapped == KEPT + 6


async def test_an_unhashable_handler_is_wrapped_at_each_call() -> None:
    class Unhashable:
        __hash__ = None  # type: ignore[assignment]
        unary_unary = staticmethod(echo)
        request_deserializer = response_serializer = None

    interceptor = Around()
    wrapped = await intercept(interceptor, Unhashable())
    await intercept(interceptor, Unhashable())
    assert interceptor.wrapped == 2
    assert await wrapped.unary_unary("x", None) == "around:x"


async def test_a_handler_left_alone_and_no_handler_pass_through() -> None:
    handler = grpc.unary_unary_rpc_method_handler(echo)
    assert await intercept(LeaveAlone(), handler) is handler
    assert await intercept(Around(), None) is None
