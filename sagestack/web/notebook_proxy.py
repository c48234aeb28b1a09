"""The authenticating reverse proxy in front of every notebook instance's Jupyter server (ASGI).

``/_sagestack/notebooks/<name>?authToken=<token>`` is what a presigned URL
opens: a genuine token that has not expired sets a session cookie (HttpOnly,
SameSite=Lax, scoped to ``/_sagestack/notebooks/<name>/``, lasting
SessionExpirationDurationInSeconds) and redirects to JupyterLab. Every other
request under ``/_sagestack/notebooks/<name>/`` needs that cookie; it is then
forwarded, HTTP and WebSocket alike, to the instance's Jupyter server on
127.0.0.1 with Jupyter's token added, a token the browser never sees.

Cross-site defences: the cookie is SameSite=Lax, and state-changing requests
and WebSocket handshakes whose Origin is not this server are refused (Jupyter's
own Origin and XSRF checks do not apply to token-authenticated requests).
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import AsyncIterator
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from sagestack.control.notebooks import PROXY_PREFIX, Live, NotebookController, instance_stamp
from sagestack.db.models.notebooks import NotebookInstance
from sagestack.logic.notebook_tokens import COOKIE_NAME, TokenSigner

log = logging.getLogger("sagestack.notebooks.proxy")

Scope = dict[str, Any]
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
               "transfer-encoding", "upgrade", "host", "origin", "cookie", "authorization"}
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class NotebookProxy:
    def __init__(self, controller: NotebookController) -> None:
        self.controller = controller
        self._client: httpx.AsyncClient | None = None

    @property
    def signer(self) -> TokenSigner:
        return self.controller.signer

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # No read timeout: kernels may take long to answer (and responses stream).
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None), follow_redirects=False)
        return self._client

    async def shutdown(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    # ------------------------------------------------------------ ASGI
    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        name, rest = _split(scope["path"])
        if scope["type"] == "http" and name and not rest:
            await self._open(scope, send, name)
            return
        live = self._authorize(scope, name)
        if isinstance(live, int):
            await self._refuse(scope, receive, send, live, name)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send, live)
        else:
            await self._http(scope, receive, send, live)

    # ------------------------------------------------------------ opening a presigned URL
    async def _open(self, scope: Scope, send: Any, name: str) -> None:
        token = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("authToken") or [""])[0]
        claims = self.signer.verify(token, "url") if token else None
        if claims is None or claims.name != name or not self._same_incarnation(name, claims.stamp):
            await _page(send, 403, "This notebook URL is not valid or has expired (presigned URLs last 5 minutes). "
                                   "Create a new one with CreatePresignedNotebookInstanceUrl.")
            return
        cookie = (f"{COOKIE_NAME}={self.signer.session_for(claims)}; Path={PROXY_PREFIX}/{name}/; "
                  f"Max-Age={claims.session_seconds}; HttpOnly; SameSite=Lax")
        if self.controller.settings.tls:
            cookie += "; Secure"
        await send({"type": "http.response.start", "status": 302, "headers": [
            (b"location", f"{PROXY_PREFIX}/{name}/lab".encode()), (b"set-cookie", cookie.encode("latin-1")),
            (b"cache-control", b"no-store"), (b"content-length", b"0"),
        ]})
        await send({"type": "http.response.body", "body": b""})

    def _same_incarnation(self, name: str, stamp: int) -> bool:
        live = self.controller.live(name)
        if live is not None:
            return live.stamp == stamp
        with self.controller.db.session() as session:
            row = session.get(NotebookInstance, name)
            return row is not None and instance_stamp(row.created) == stamp

    # ------------------------------------------------------------ every other request
    def _authorize(self, scope: Scope, name: str) -> Live | int:
        """The live instance this request may reach, or the HTTP status to refuse it with."""
        headers = _headers(scope)
        claims = None
        for value in _cookie_values(headers.get("cookie", "")):
            found = self.signer.verify(value, "session")
            if found is not None and found.name == name:
                claims = found
                break
        if claims is None:
            return 403
        unsafe = scope["type"] == "websocket" or scope.get("method", "GET") not in _SAFE_METHODS
        origin = headers.get("origin")
        if unsafe and origin and urlsplit(origin).netloc != headers.get("host", ""):
            return 403
        live = self.controller.live(name)
        if live is None:
            return 503
        return live if live.stamp == claims.stamp else 403

    async def _refuse(self, scope: Scope, receive: Any, send: Any, status: int, name: str) -> None:
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        if status == 503:
            message = f"Notebook instance {name} is not InService."
        else:
            message = ("Access denied: open this notebook instance with a presigned URL "
                       "(CreatePresignedNotebookInstanceUrl, or aws sagemaker create-presigned-notebook-instance-url).")
        await _page(send, status, message)

    # ------------------------------------------------------------ HTTP
    async def _http(self, scope: Scope, receive: Any, send: Any, live: Live) -> None:
        url = f"http://127.0.0.1:{live.port}{_target(scope)}"
        headers = _forwarded_headers(scope, live)
        body = _body(receive) if _has_body(scope) else None
        request = self.client.build_request(scope["method"], url, headers=headers, content=body)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            log.info("notebook %s: upstream request failed: %r", live.name, exc)
            await _page(send, 502, f"Notebook instance {live.name} did not answer.")
            return
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": _response_headers(response, live)})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    # ------------------------------------------------------------ WebSocket
    async def _websocket(self, scope: Scope, receive: Any, send: Any, live: Live) -> None:
        await receive()  # websocket.connect
        url = f"ws://127.0.0.1:{live.port}{_target(scope)}"
        try:
            upstream = await connect(url, additional_headers={"Authorization": f"token {live.token}"},
                                     subprotocols=scope.get("subprotocols") or None, max_size=None,
                                     open_timeout=10, ping_interval=None, compression=None)
        except (OSError, InvalidHandshake, InvalidStatus, TimeoutError) as exc:
            log.info("notebook %s: upstream websocket refused: %s", live.name, exc)
            await send({"type": "websocket.close", "code": 1011})
            return
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
        async with upstream:
            to_upstream = asyncio.ensure_future(_browser_to_upstream(receive, upstream))
            to_browser = asyncio.ensure_future(_upstream_to_browser(upstream, send))
            done, pending = await asyncio.wait({to_upstream, to_browser}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done:
                task.exception()  # retrieved: a closed peer is the normal end


async def _browser_to_upstream(receive: Any, upstream: ClientConnection) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            await upstream.close()
            return
        data = message.get("text") if message.get("text") is not None else message.get("bytes")
        if data is not None:
            await upstream.send(data)


async def _upstream_to_browser(upstream: ClientConnection, send: Any) -> None:
    try:
        async for data in upstream:
            key = "text" if isinstance(data, str) else "bytes"
            await send({"type": "websocket.send", key: data})
    except ConnectionClosed:
        pass
    code = upstream.close_code or 1000
    await send({"type": "websocket.close", "code": code if code != 1005 else 1000})


# ------------------------------------------------------------ helpers
def _split(path: str) -> tuple[str, str]:
    """``/_sagestack/notebooks/<name><rest>`` -> (name, rest)."""
    tail = path[len(PROXY_PREFIX) + 1:] if path.startswith(PROXY_PREFIX + "/") else ""
    name, slash, rest = tail.partition("/")
    return name, slash + rest


def _target(scope: Scope) -> str:
    """Path and query as the client sent them (percent-encoding untouched)."""
    raw = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    return raw.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}; {value}" if name == "cookie" and name in headers else value
    return headers


def _cookie_values(header: str) -> list[str]:
    """Every value of our cookie (a browser may send several, one per path)."""
    values = []
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == COOKIE_NAME and value:
            values.append(value)
    return values


def _other_cookies(header: str) -> str:
    """The Cookie header without ours: Jupyter has no use for the platform's session."""
    try:
        jar = SimpleCookie()
        jar.load(header)
    except CookieError:
        return ""
    return "; ".join(f"{k}={m.coded_value}" for k, m in jar.items() if k != COOKIE_NAME)


def _forwarded_headers(scope: Scope, live: Live) -> list[tuple[str, str]]:
    forwarded: list[tuple[str, str]] = []
    cookie = ""
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name == "cookie":
            cookie = f"{cookie}; {value}" if cookie else value
        elif name not in _HOP_BY_HOP:
            forwarded.append((name, value))
    others = _other_cookies(cookie)
    if others:
        forwarded.append(("cookie", others))
    forwarded.append(("authorization", f"token {live.token}"))
    return forwarded


def _has_body(scope: Scope) -> bool:
    return scope["method"] not in ("GET", "HEAD", "OPTIONS", "DELETE") or any(
        n.lower() in (b"content-length", b"transfer-encoding") for n, _ in scope["headers"])


async def _body(receive: Any) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _response_headers(response: httpx.Response, live: Live) -> list[tuple[bytes, bytes]]:
    local = f"http://127.0.0.1:{live.port}"
    headers = []
    for name, value in response.headers.raw:
        lower = name.lower()
        if lower in (b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"trailer"):
            continue
        if lower == b"location" and value.decode("latin-1").startswith(local):
            value = value[len(local):]  # keep the browser on the proxy
        if lower == b"set-cookie" and value.startswith(b"username-"):
            continue  # Jupyter's login cookie would open its port directly; the proxy's cookie is the login
        headers.append((lower, value))
    return headers


async def _page(send: Any, status: int, message: str) -> None:
    body = (f"<!doctype html><html><head><title>sagestack notebook</title></head><body>"
            f"<h1>{status}</h1><p>{html.escape(message)}</p></body></html>").encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
