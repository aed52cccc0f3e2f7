"""What keeps the rating server bounded against hostile clients: a per-client rate limit, the
same-origin rule for writes, and a deadline for request headers (uvicorn has none of its own).

Nothing here knows about studies; :mod:`vqvp_core.human_eval.server` wires it in.
"""
from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict, defaultdict
from urllib.parse import urlsplit

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class RateLimiter:
    """A token bucket per client: ``rate`` requests per second on average, bursts up to ``burst``.

    At most ``max_clients`` buckets are kept (least recently seen dropped first), so memory stays
    bounded however many addresses a client uses; a dropped client starts again with a full bucket.
    """

    def __init__(self, rate: float, burst: float, max_clients: int = 10_000):
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1 (got rate={rate}, burst={burst})")
        self.rate, self.burst, self.max_clients = float(rate), float(burst), int(max_clients)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, time)
        self._lock = threading.Lock()

    def take(self, client: str, cost: float = 1.0) -> float:
        """Spend ``cost`` from the client's bucket: 0.0 if allowed, else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            wait = 0.0
            if tokens >= cost:
                tokens -= cost
            else:
                wait = (cost - tokens) / self.rate
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait


def client_key(host: str | None) -> str:
    """What the limits count as one client: the IPv4 address, or the IPv6 /64 (one subscriber's
    network: a single host can take any address in it)."""
    if not host:
        return "?"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    if addr.version == 6:
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-cased, default ports dropped."""
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if not scheme or not host:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    port = parts.port
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def cross_site_reason(headers, scheme: str, public_origin: str | None) -> str | None:
    """Why a write must be refused as not coming from the study's own page, or None.

    A browser marks every request with ``Sec-Fetch-Site`` (modern ones) and every POST with
    ``Origin``; a write is accepted only when they say same-origin: ``Origin`` equal to
    ``public_origin`` (the address raters use, when the server runs behind a proxy) or else to this
    request's own ``scheme://Host``. Clients that send neither (curl, scripts) are not browsers
    that another site could drive; they still need a rater's token.
    """
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {site!r}"
    origin = headers.get("origin")
    if origin is None:
        return None
    try:
        own = public_origin or origin_of(f"{scheme}://{headers.get('host', '')}")
        if origin_of(origin) == own:
            return None
    except ValueError:
        pass
    return f"Origin {origin[:100]!r} is not this study's"


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol with the deadlines and the per-client cap uvicorn lacks:

    - a request's line and headers must arrive within ``header_timeout`` seconds of the connection
      opening (or of its first byte after the previous response), else the connection is closed.
      uvicorn's own ``timeout_keep_alive`` stops counting at the first byte, so a client trickling
      one header byte at a time would otherwise hold its connection for ever;
    - a connection whose response went out before its request body was read to the end (an early
      401 / 408 / 413, a GET with a body) is closed: it cannot carry another request, and a client
      trickling the rest of the body would otherwise hold it for ever;
    - at most ``max_per_client`` connections per client (``client_key``), so one client cannot
      take all of uvicorn's ``limit_concurrency`` places (0: no cap, for a server behind a proxy,
      where every connection comes from the proxy and the proxy must cap them).
    """

    header_timeout = 10.0
    max_per_client = 16
    _open: defaultdict[str, int] = defaultdict(int)  # client -> open connections (per subclass, below)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._key = client_key(self.client[0] if self.client else None)
        self._open[self._key] += 1
        self._head_timer = None
        if self.max_per_client and self._open[self._key] > self.max_per_client:
            transport.close()
            return
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_expired)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_expired)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state not in (h11.IDLE, h11.DONE) and not self.transport.is_closing():
            self.transport.close()  # the body was not read to its end: nothing more can follow

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        key = getattr(self, "_key", None)
        if key is not None:
            self._open[key] -= 1
            if self._open[key] <= 0:
                del self._open[key]
            self._key = None
        super().connection_lost(exc)

    def _cancel_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def with_header_timeout(seconds: float, max_per_client: int = 16) -> type[HeaderTimeoutH11]:
    """A HeaderTimeoutH11 subclass with this deadline and cap (uvicorn takes a protocol class)."""
    if not 0 < seconds <= 3600:
        raise ValueError(f"header timeout must be in (0, 3600] seconds, not {seconds!r}")
    if max_per_client < 0:
        raise ValueError(f"max_per_client must be >= 0, not {max_per_client!r}")
    return type("HeaderTimeoutH11", (HeaderTimeoutH11,), {
        "header_timeout": float(seconds), "max_per_client": int(max_per_client), "_open": defaultdict(int)})
