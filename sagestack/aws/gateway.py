"""The ASGI entry point for every AWS call: route, authenticate, parse, dispatch, serialize.

One generic path serves every service and protocol. Nothing here knows an
operation by name: services are found by request shape, operations by the
service model, handlers by the lookup the layer above hands in.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from anyio import to_thread
from botocore.model import OperationModel

from sagestack.aws import sigv4
from sagestack.aws.catalog import Route, ServiceCatalog
from sagestack.aws.context import Authorize, HandlerLookup, RequestContext, RequestFacts
from sagestack.aws.errors import AwsError, internal_error
from sagestack.aws.http import BodyStream, HttpRequest, HttpResponse
from sagestack.aws.protocols.base import NO_LABELS, WireProtocol
from sagestack.aws.validation import format_errors, validate
from sagestack.aws.values import WireValueError
from sagestack.identity import Credential, CredentialStore

log = logging.getLogger("sagestack.access")
errlog = logging.getLogger("sagestack.errors")

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

#: Bodies of non-streaming requests are read into memory up to this size.
MAX_BUFFERED_BODY = 64 * 1024 * 1024


@dataclass
class _Call:
    """Everything known about one request as it moves through the gateway."""

    request: HttpRequest
    request_id: str
    route: Route | None = None
    operation: OperationModel | None = None
    labels: dict[str, str] | None = None
    form: dict[str, str] | None = None
    #: time.perf_counter() when the gateway took the request.
    received: float = 0.0


class _Regional(Protocol):
    @property
    def region(self) -> str:
        """Where requests that name no region (unsigned ones) are served."""
        ...


PlatformT = TypeVar("PlatformT", bound=_Regional)


class Gateway(Generic[PlatformT]):
    """``handlers`` finds each operation's handler; ``authorize`` decides whether its caller may run
    it; ``platform`` reaches every handler as ``ctx.platform``."""

    def __init__(self, catalog: ServiceCatalog, credentials: CredentialStore, platform: PlatformT,
                 handlers: HandlerLookup, authorize: Authorize, *,
                 virtual_host_suffixes: tuple[str, ...] = (".localhost",)) -> None:
        self.catalog = catalog
        self.credentials = credentials
        self.platform = platform
        self.lookup = handlers
        self.authorize = authorize
        self.virtual_host_suffixes = virtual_host_suffixes
        self._handlers: dict[tuple[str, str], tuple[Any, bool]] = {}
        #: (service, operation name) -> its model; botocore's own lookup builds a cache key per call.
        self._operations: dict[tuple[str, str], OperationModel] = {}

    # ------------------------------------------------------------ entry points
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """ASGI: every call on the main port."""
        request = self._request_of(scope)
        call = _Call(request, _new_request_id())
        response = await self._answer(call, receive)
        stream = request.stream
        if stream is not None and not stream.finished:
            # Answered before the body was read (an error, or a refused Expect: 100-continue): the
            # unread bytes would be parsed as the next request, so this connection must end here.
            response.headers.append(("connection", "close"))
        await _send(send, response, head=request.method == "HEAD", receive=receive)

    async def respond(self, request: HttpRequest, services: frozenset[str] | None = None) -> HttpResponse:
        """A call whose body has been read in full (the lean front); ``services`` limits what it may reach."""
        return await self._answer(_Call(request, _new_request_id()), None, services)

    async def _answer(self, call: _Call, receive: Any, services: frozenset[str] | None = None) -> HttpResponse:
        started = call.received = time.perf_counter()
        try:
            response = await self._handle(call, receive, services)
        except AwsError as error:
            response = self._error_response(call, error)
        except Exception:
            errlog.exception("request %s failed", call.request_id)
            response = self._error_response(call, internal_error(call.request_id))
        if log.isEnabledFor(logging.INFO):
            # Path only: query strings can carry presigned credentials.
            log.info("%s %s %s %s %.1fms", call.request.method, call.request.raw_path, response.status,
                     call.operation.name if call.operation else "-", (time.perf_counter() - started) * 1000)
        return response

    @staticmethod
    def _request_of(scope: dict[str, Any]) -> HttpRequest:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        raw_path = scope.get("raw_path") or scope["path"].encode()
        client = scope.get("client")
        return HttpRequest(
            method=scope["method"],
            raw_path=raw_path.decode("latin-1").split("?", 1)[0],
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            client_ip=client[0] if client else "",
            secure=scope.get("scheme") == "https",
        )

    # ------------------------------------------------------------ pipeline
    async def _handle(self, call: _Call, receive: Any, services: frozenset[str] | None = None) -> HttpResponse:
        request = call.request
        self._route(call)
        if services is not None and (call.route is None or call.route.service not in services):
            raise AwsError("UnknownOperationException",
                           f"This endpoint serves {', '.join(sorted(services))} only; send other calls to "
                           "the server's main endpoint (AWS_ENDPOINT_URL).", 404)
        signed = self._signed_request(call)
        streaming = self._is_streaming(call)
        if not streaming:
            if receive is not None:
                request.body = await _read_body(receive)
            protocol = (call.route or self.catalog.unrouted).protocol
            if protocol.routed_by_form:
                call.form = protocol.read_form(request)
                # A Version no service speaks leaves the request unrouted (InvalidAction, not a 500).
                call.route = self.catalog.route(request, call.form)
        credential = self._authenticate(call, signed, streaming, receive)
        route = call.route
        if route is None:
            raise AwsError("InvalidAction", "The action or operation requested is not valid.", 400)
        operation = self._operation(call)
        params = self._parse(call)
        handler, is_async = self._handler(route.service, operation.name)
        region = signed.region if signed else self.platform.region
        self.credentials.note_use(credential.principal.access_key_id, route.service, region)
        ctx = RequestContext(
            service=route.service,
            operation=operation.name,
            region=region,
            request_id=call.request_id,
            principal=credential.principal,
            platform=self.platform,
            user_agent=request.headers.get("user-agent", ""),
            received=call.received,
        )
        facts = RequestFacts(request.client_ip, request.secure, region)
        if is_async:
            self._check(ctx, operation, params, facts, route.validation_code)
            result = await handler(ctx, params)
        else:
            # Sync handlers are checked in their worker thread, where a decision that must read the
            # database blocks no one.
            result = await to_thread.run_sync(self._checked_call, handler, ctx, operation, params, facts,
                                              route.validation_code)
        return self._serialize(call, result)

    def _check(self, ctx: RequestContext[PlatformT], operation: OperationModel, params: dict[str, Any],
               facts: RequestFacts, validation_code: str) -> None:
        """Authorize, then validate: before the handler, so a refused request changes nothing.

        Authorization comes first so that a caller who may not make a call learns nothing about
        the call from it; the resources and condition keys it needs are parsed members already.
        """
        self.authorize(ctx.principal, ctx.service, ctx.operation, params, facts)
        errors = validate(operation.input_shape, params)
        if errors:
            raise AwsError(validation_code, format_errors(errors), 400)

    def _checked_call(self, handler: Any, ctx: RequestContext[PlatformT], operation: OperationModel,
                      params: dict[str, Any], facts: RequestFacts, validation_code: str) -> Any:
        self._check(ctx, operation, params, facts, validation_code)
        return handler(ctx, params)

    def _handler(self, service: str, name: str) -> tuple[Any, bool]:
        """The operation's handler and whether it is a coroutine function (looked up once per operation)."""
        found = self._handlers.get((service, name))
        if found is None:
            handler = self.lookup(service, name)
            if handler is None:
                raise AwsError("UnsupportedOperation",
                               f"sagestack does not implement the {service} operation {name}.", 400)
            found = self._handlers[(service, name)] = (handler, inspect.iscoroutinefunction(handler))
        return found

    def _route(self, call: _Call) -> None:
        request = call.request
        if self.catalog.is_query_request(request):
            call.route = self.catalog.form_routed  # service known once the form is read
            return
        call.route = self.catalog.route(request)
        if call.route and call.route.protocol.virtual_hosts:
            self._apply_virtual_host(request)

    def _apply_virtual_host(self, request: HttpRequest) -> None:
        """``<bucket>.localhost:port/key`` is the same as ``localhost:port/<bucket>/key``."""
        host = request.host.rsplit(":", 1)[0] if not request.host.startswith("[") else ""
        for suffix in self.virtual_host_suffixes:
            if host.endswith(suffix) and len(host) > len(suffix):
                bucket = host[: -len(suffix)]
                request.signed_path = request.raw_path
                request.raw_path = "/" + bucket + (request.raw_path if request.raw_path != "/" else "")
                return

    def _operation(self, call: _Call) -> OperationModel:
        if call.operation is not None:
            return call.operation
        route = call.route
        assert route is not None
        model = self.catalog.model(route.service)
        name, call.labels = route.protocol.find_operation(model, call.request, call.form)
        operation = self._operations.get((route.service, name or ""))
        if operation is None:
            if not name or name not in model.operation_names:
                raise AwsError("InvalidAction", f"The action {name} is not valid for this web service.", 400)
            operation = self._operations[(route.service, name)] = model.operation_model(name)
        call.operation = operation
        return operation

    def _is_streaming(self, call: _Call) -> bool:
        """Only operations whose payload is a streaming blob, in a protocol that streams them, read lazily."""
        route = call.route
        if route is None or not route.protocol.streams_payloads:
            return False
        operation = self._operation(call)
        shape = operation.input_shape
        payload = shape.serialization.get("payload") if shape is not None else None
        return bool(payload and shape.members[payload].serialization.get("streaming"))

    def _parse(self, call: _Call) -> dict[str, Any]:
        route, operation = call.route, call.operation
        assert route is not None and operation is not None
        try:
            return route.protocol.parse(operation, call.request, call.form, call.labels or NO_LABELS)
        except WireValueError as exc:
            raise AwsError(route.validation_code, str(exc), 400) from exc

    def _serialize(self, call: _Call, result: dict[str, Any] | None) -> HttpResponse:
        route, operation = call.route, call.operation
        assert route is not None and operation is not None
        return route.protocol.serialize(operation, result, call.request_id)

    def _error_response(self, call: _Call, error: AwsError) -> HttpResponse:
        route = call.route if call.route is not None and call.route.service else self.catalog.unrouted
        model = self.catalog.model(route.service)
        return route.protocol.serialize_error(model, error, call.request_id, call.request)

    # ------------------------------------------------------------ authentication
    def _signed_request(self, call: _Call) -> sigv4.SignedRequest | None:
        request = call.request
        try:
            return sigv4.parse(request.method, _signed_path(request), request.query_string, request.headers)
        except sigv4.AuthFailure as failure:
            raise self._auth_protocol(call).auth_error(failure) from None

    def _auth_protocol(self, call: _Call) -> WireProtocol:
        """Whose authentication rules and errors apply: the route's, or the fallback's for unrouted requests."""
        return (call.route or self.catalog.unrouted).protocol

    def _authenticate(self, call: _Call, signed: sigv4.SignedRequest | None, streaming: bool,
                      receive: Any) -> Credential:
        protocol = self._auth_protocol(call)
        try:
            return self._check_signature(call, signed, streaming, receive, protocol)
        except sigv4.AuthFailure as failure:
            raise protocol.auth_error(failure) from None

    def _check_signature(self, call: _Call, signed: sigv4.SignedRequest | None, streaming: bool,
                         receive: Any, protocol: WireProtocol) -> Credential:
        request = call.request
        if signed is None:
            raise sigv4.AuthFailure(sigv4.AuthFailureKind.MISSING, "no authentication")
        credential = self.credentials.lookup(signed.access_key_id)
        if credential is None or not credential.active:
            raise sigv4.AuthFailure(sigv4.AuthFailureKind.UNKNOWN_KEY, signed.access_key_id)
        now = datetime.now(UTC)
        if credential.session_token is not None:
            if signed.session_token != credential.session_token:
                raise sigv4.AuthFailure(sigv4.AuthFailureKind.BAD_TOKEN, "session token mismatch")
            if credential.expiration is not None and credential.expiration <= now:
                raise sigv4.AuthFailure(sigv4.AuthFailureKind.EXPIRED_TOKEN, "session expired")
        elif signed.session_token:
            raise sigv4.AuthFailure(sigv4.AuthFailureKind.BAD_TOKEN, "unexpected session token")
        payload_hash = None if streaming else hashlib.sha256(request.body).hexdigest()
        # SigV2 signs the resource as /bucket/key even for virtual-host requests; SigV4 signs the path as sent.
        path = request.raw_path if signed.version == 2 else _signed_path(request)
        signing_key = sigv4.verify(
            signed, request.method, path, request.query_string, request.headers,
            credential.secret_access_key, now, protocol.auth_family, payload_hash=payload_hash,
        )
        if payload_hash is not None:
            sigv4.check_payload_hash(signed, payload_hash)
        if streaming:
            request.stream = _body_stream(request, signed, signing_key, receive, protocol)
        return credential


#: Request ids: a random prefix per process and a counter (cheaper than a UUID per call, still unique).
_ID_PREFIX = secrets.token_hex(6).upper()
_id_counter = itertools.count(1)


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):08X}"


def _signed_path(request: HttpRequest) -> str:
    return request.signed_path or request.raw_path


def _is_hex_digest(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


async def _read_body(receive: Any) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise AwsError("IncompleteBody", "The request body terminated unexpectedly", 400)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BUFFERED_BODY:
            raise AwsError("RequestEntityTooLarge", "The request body is too large.", 413)
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def _body_stream(request: HttpRequest, signed: sigv4.SignedRequest, signing_key: bytes,
                 receive: Any, protocol: WireProtocol) -> BodyStream:
    """Wrap the body in the decoding and verification its x-amz-content-sha256 calls for."""
    from sagestack.aws import chunked

    declared = signed.content_sha256 or "UNSIGNED-PAYLOAD"
    length = request.headers.get("x-amz-decoded-content-length") or request.headers.get("content-length")
    declared_length = int(length) if length and length.isdigit() else None
    decoder = chunked.decoder_for_request(signed, signing_key, request.headers)
    if decoder is not None:
        return BodyStream(receive, decoder.feed, decoder.finish, declared_length)
    if _is_hex_digest(declared):
        digest = hashlib.sha256()

        def feed(chunk: bytes) -> bytes:
            digest.update(chunk)
            return chunk

        def finish() -> dict[str, str]:
            if digest.hexdigest() != declared:
                raise protocol.auth_error(sigv4.AuthFailure(sigv4.AuthFailureKind.PAYLOAD_HASH_MISMATCH, declared))
            return {}

        return BodyStream(receive, feed, finish, declared_length)
    return BodyStream(receive, None, None, declared_length)


async def _send(send: Any, response: HttpResponse, head: bool, receive: Any = None) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    body = response.body
    if isinstance(body, bytes | bytearray):
        if not any(k == b"content-length" for k, _ in headers):
            headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else bytes(body)})
        return
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    if not head:
        await _stream(send, body, receive)
    await send({"type": "http.response.body", "body": b""})


async def _stream(send: Any, body: AsyncIterator[bytes], receive: Any) -> None:
    """Send a streamed body, and stop producing it once the client has gone.

    The server drops writes to a closed connection silently, so without watching
    for the disconnect an abandoned 5 GiB download would still be read to the end.
    """
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.create_task(watch()) if receive is not None else None
    try:
        async for chunk in body:
            if gone.is_set():
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        if watcher is not None:
            watcher.cancel()
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()
