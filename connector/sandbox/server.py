"""HTTP serving of the sandbox: the request pipeline, the ``Sandbox`` object and ``serve()``.

Pipeline of a ``/v1/`` request, in order:

1. the body is read (always, so keep-alive connections stay in step);
2. an injected fault whose path prefix matches answers now (nothing is stored, no API key is
   checked, no rate-limit slot is taken) — it imitates a failing gateway in front of the API;
   an ``applied`` fault lets steps 3 to 5 run first and replaces a success answer by its status
   (a gateway failing after the API acted);
3. the ``spm-api-key`` header must be one of the configured keys (else 401);
4. the key's sliding-window rate limit must have a free slot (else 429 with ``Retry-After``);
5. the route table decides (unknown route → 404) and the handler stores what it accepts;
6. an injected delay is slept *after* storing and before answering, which imitates an answer lost
   after acceptance when the client's timeout is shorter than the delay;
7. the request is appended to the request log.

``/_sandbox/`` control routes skip steps 2 to 4, 6 and 7.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Set as AbstractSet
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from connector import registry
from connector.sandbox.routes import (
    API_ROUTES,
    CONTROL_ROUTES,
    NO_BODY,
    Context,
    Handler,
    Reply,
    Request,
    Route,
    error,
    match,
)
from connector.sandbox.store import Faults, JSONObject, RateLimiter, RequestLog, Store

API_KEY_PATTERN = re.compile(r"[a-zA-Z0-9-]{20,64}")
MAX_BODY = 25 * 1024 * 1024  # the SDK's request size cap


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # connections waiting to be accepted (socketserver's default is 5): a client opening tens
    # of connections at once (a backfill with many requests in flight) overflowed it, and some
    # of those connections were reset
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) and not self.sandbox.verbose:
            return  # a client went away (e.g. it timed out during an injected delay)
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ShopiMindSandbox/1"
    timeout = 60  # idle keep-alive connections are closed after this many seconds
    disable_nagle_algorithm = True  # answer in one segment, without the 40 ms delayed-ACK stall
    wbufsize = -1  # headers and body leave in one write; handle_one_request flushes

    @property
    def _srv(self) -> _Server:
        return cast(_Server, self.server)

    def setup(self) -> None:
        super().setup()
        with self._srv.conn_lock:
            self._srv.connections.add(self.connection)

    def finish(self) -> None:
        with self._srv.conn_lock:
            self._srv.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        if self._srv.sandbox.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # --- body ----------------------------------------------------------------------------------

    def _read_body(self) -> bytes | None:
        """The request body, or None when it is larger than ``MAX_BODY``."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            size = 0
            while True:
                line = self.rfile.readline(1024)
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                size += n
                if size > MAX_BODY:
                    return None
                chunks.append(self.rfile.read(n))
                self.rfile.readline(1024)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, reply: Reply) -> None:
        data = json.dumps(reply.body, separators=(",", ":")).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    # --- pipeline ------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        arrived = time.time()
        sb = self._srv.sandbox
        url = urlsplit(self.path)
        path = url.path
        body: Any = None
        early: Reply | None = None  # the body could not be read: answer and close
        try:
            raw = self._read_body()
            if raw is None:
                early = error(413, f"request body larger than {MAX_BODY} bytes")
        except (ValueError, OSError):
            raw, early = None, error(400, "malformed request body")
        if early is not None or raw is None:
            self.close_connection = True
        else:
            try:
                body = json.loads(raw, parse_constant=_no_constant) if raw.strip() else None
            except ValueError:
                body = NO_BODY
        query = parse_qs(url.query)

        if path.startswith("/_sandbox/"):
            found = match(CONTROL_ROUTES, method, path)
            if early is not None:
                reply = early
            elif found is None:
                reply = error(404, f"Cannot {method} {path}")
            else:
                route, params = found
                req = Request(sb.context, method, path, params, query, body, None)
                reply = self._run(route.handler, req)
            self._send(reply)
            return

        key = self.headers.get("spm-api-key")
        key_ok = key is not None and key in sb.api_keys
        found = match(API_ROUTES, method, path)
        label = found[0].label if found else None
        reply = early or self._answer(method, path, query, body, key, key_ok, found)
        delay = sb.context.faults.take_delay(path) if path.startswith("/v1/") else 0.0
        if delay > 0:
            time.sleep(delay)
        idem = self.headers.get("Idempotency-Key") or self.headers.get("X-Idempotency-Key")
        sb.context.store.log(
            RequestLog(method, path, reply.status, _item_count(body), key_ok, arrived, idem, label)
        )
        self._send(reply)

    def _answer(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        body: Any,
        key: str | None,
        key_ok: bool,
        found: tuple[Route, dict[str, str]] | None,
        *,
        faults: bool = True,
    ) -> Reply:
        ctx = self._srv.sandbox.context
        if not path.startswith("/v1/"):
            return error(404, f"Cannot {method} {path}")
        fault = ctx.faults.take_fault(path) if faults else None
        if fault is not None and fault.applied:  # processed, then the answer is lost
            done = self._answer(method, path, query, body, key, key_ok, found, faults=False)
            if done.status < 300:
                return error(fault.status, f"injected fault ({fault.status}) after processing")
            return done
        if fault is not None:
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            return error(fault.status, f"injected fault ({fault.status})", headers)
        if not key_ok or key is None:
            return error(401, "Invalid or missing API key")
        wait = ctx.limiter.acquire(key)
        if wait is not None:
            return error(429, "Rate limit exceeded", {"Retry-After": str(wait)})
        if found is None:
            return error(404, f"Cannot {method} {path}")
        route, params = found
        req = Request(ctx, method, path, params, query, body, route.resource)
        return self._run(route.handler, req)

    def _run(self, handler: Handler, req: Request) -> Reply:
        try:
            return handler(req)
        except Exception:  # a sandbox bug: answer 500 and show it
            traceback.print_exc(file=sys.stderr)
            return error(500, "internal sandbox error")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python accepts NaN/Infinity; JSON does not


def _item_count(body: Any) -> int:
    if isinstance(body, list):
        return len(body)
    if isinstance(body, dict):
        for k, v in body.items():
            if k.endswith("_ids") and isinstance(v, list):
                return len(v)
    return 0


class Sandbox:
    """A local stand-in for the ShopiMind v1 API on loopback (see the package docstring)."""

    def __init__(
        self,
        api_keys: AbstractSet[str],
        requests_per_minute: int = 600,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        verbose: bool = False,
        rate_window: float = 60.0,
    ) -> None:
        for i, k in enumerate(sorted(api_keys)):
            if not isinstance(k, str) or not API_KEY_PATTERN.fullmatch(k):
                # the key itself is never shown
                raise ValueError(
                    f"API key #{i + 1} does not match ^[a-zA-Z0-9-]{{20,64}}$ as the API requires"
                )
        self.api_keys = frozenset(api_keys)
        self.requests_per_minute = requests_per_minute
        self.host = host
        self.port = port
        self.verbose = verbose
        self.context = Context(Store(), Faults(), RateLimiter(requests_per_minute, rate_window))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Sandbox:
        if self._server is not None:
            raise RuntimeError("sandbox already started")
        self._server = _Server((self.host, self.port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"shopimind-sandbox:{self._server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with server.conn_lock:
            conns = list(server.connections)
        for conn in conns:  # end idle keep-alive connections now
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("sandbox not started")
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    # --- state ---------------------------------------------------------------------------------

    def records(self, resource_name: str) -> dict[str, JSONObject]:
        """Accepted records of a resource: key text (``"42"``, ``"42|fr"``) → last item."""
        _check_name(resource_name)
        return self.context.store.records(resource_name)

    def deleted(self, resource_name: str) -> set[str]:
        """Key texts without ``lang`` requested through bulk delete (see ``Store.delete``)."""
        _check_name(resource_name)
        return self.context.store.deleted(resource_name)

    @property
    def requests(self) -> list[RequestLog]:
        """Every answered request except control routes, oldest first (a copy)."""
        return self.context.store.requests()

    def stats(self) -> JSONObject:
        return self.context.store.stats()

    def inject(
        self,
        status: int = 503,
        count: int = 2,
        path_prefix: str | None = None,
        retry_after: int | None = None,
        *,
        applied: bool = False,
    ) -> None:
        """The next ``count`` ``/v1/`` requests whose path starts with ``path_prefix`` (any when
        None) answer ``status`` without processing; ``Retry-After`` is set when given. With
        ``applied`` they are processed first and their success answer is replaced by ``status``
        (an answer lost after the API acted)."""
        self.context.faults.inject(status, count, path_prefix, retry_after, applied)

    def inject_delay(
        self, seconds: float = 0.3, count: int | None = None, path_prefix: str | None = None
    ) -> None:
        """Sleep ``seconds`` before each ``/v1/`` answer (after storing) — of the paths starting
        with ``path_prefix`` when given; ``count`` None = until cleared. Replaces any earlier
        delay."""
        self.context.faults.inject_delay(seconds, count, path_prefix)

    def clear_faults(self) -> None:
        self.context.faults.clear()
        self.context.store.clear_refusals()

    def refuse(self, resource_name: str, keys: dict[str, str]) -> None:
        """Reject items with these key texts (``"42"``, ``"42|fr"``) in ``rejected_items`` with
        the given message, as the real API does for rules the connector cannot check itself."""
        _check_name(resource_name)
        self.context.store.refuse(resource_name, keys)

    def drop(self, share: float, seed: int = 0) -> None:
        """From now on, accept ``share`` of the valid upserted items without storing them (the
        API's queue losing them silently); ``dropped`` names the keys lost."""
        self.context.store.drop(share, seed)

    def dropped(self, resource_name: str) -> set[str]:
        _check_name(resource_name)
        return self.context.store.dropped(resource_name)

    def edit(self, resource_name: str, key: str, **changes: object) -> None:
        """Change fields of a stored record, as someone editing it in ShopiMind would."""
        _check_name(resource_name)
        self.context.store.edit(registry.RESOURCES[resource_name], key, changes)

    def remove(self, resource_name: str, key: str) -> None:
        """Delete a stored record without a request (someone deleting it in ShopiMind)."""
        _check_name(resource_name)
        self.context.store.remove(registry.RESOURCES[resource_name], key)

    def add(self, resource_name: str, item: dict[str, object]) -> str:
        """Store a record the connector never sent; returns its key text."""
        _check_name(resource_name)
        return self.context.store.add(registry.RESOURCES[resource_name], item)

    def reset(self) -> None:
        """Forget records, deletions, the request log, faults and rate-limit windows."""
        self.context.reset()


def _check_name(name: str) -> None:
    if name not in registry.RESOURCES:
        raise KeyError(f"unknown resource {name!r}")


def serve(
    host: str,
    port: int,
    api_keys: AbstractSet[str],
    requests_per_minute: int,
    *,
    verbose: bool = False,
) -> None:
    """Run a sandbox in the foreground until SIGINT or SIGTERM."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Sandbox(api_keys, requests_per_minute, host, port, verbose=verbose) as sb:
            print(
                f"ShopiMind sandbox listening on {sb.url} "
                f"({requests_per_minute} requests/min per key, {len(api_keys)} API key(s)); "
                "Ctrl-C to stop",
                flush=True,
            )
            while not stop.wait(0.5):
                pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
