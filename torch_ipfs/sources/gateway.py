"""A block source over trustless HTTP gateways, with failover, retries and hedging.

A trustless gateway (https://specs.ipfs.tech/http-gateways/trustless-gateway/) answers

- ``GET /ipfs/{cid}?format=raw`` (``Accept: application/vnd.ipld.raw``) with one block, and
- ``GET /ipfs/{cid}[/path]?format=car`` (``Accept: application/vnd.ipld.car``) with a CARv1
  of the DAG in depth-first order, optionally cut to ``dag-scope`` and ``entity-bytes``.

Nothing a gateway sends is trusted: each raw block is hashed against its CID, and each CAR
is checked block by block by :class:`~torch_ipfs.carverify.CarBlockVerifier`, which walks the
DAG itself and so notices a missing, extra, reordered or truncated block even though the
HTTP status was already 200. Bad bytes are never returned: the gateway that sent them is
marked unhealthy and another one is asked.

Failover: every gateway has a health record (consecutive failures, latency EWMA, a
back-off deadline from ``Retry-After`` or errors); each request tries the healthiest
first and moves on to the next on error. Rounds of retries follow with exponential
back-off and jitter until the block's retry budget (seconds, not attempts) is spent, so
a gateway restart is ridden out; answers that will not change (a 404, a redirect, a
4xx other than 429, bad bytes) are not retried. ``hedge_after`` optionally asks a
second gateway when the first is slow and takes whichever verified answer comes first.
Only the configured gateways are ever contacted: there is no default gateway.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

import httpcore  # noqa: F401 - httpx imports it on the first Client(): pay it with this module
import httpx

from torch_ipfs import config
from torch_ipfs.car import CarReader
from torch_ipfs.carverify import CarBlockVerifier, Scope
from torch_ipfs.cid import CID, IPFSPath, parse_address, verify_block
from torch_ipfs.errors import (
    BlockNotFoundError,
    BlockTooLargeError,
    CARFormatError,
    IntegrityError,
    IPFSError,
    SourceError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from torch_ipfs.sources.base import MAX_BLOCK_SIZE, BlockSource, fetch_in_order
from torch_ipfs.sources.retry import OutageLog, Refused, backoff_delay

__all__ = ["ACCEPT_CAR", "ACCEPT_RAW", "GatewayHealth", "GatewaySource", "parse_retry_after"]

log = logging.getLogger(__name__)

ACCEPT_RAW = "application/vnd.ipld.raw"
ACCEPT_CAR = "application/vnd.ipld.car; version=1; order=dfs; dups=y"
#: The empty identity CID: every trustless gateway answers it with 200 and no body.
PROBE_CID = "bafkqaaa"
#: A gateway that sent bad bytes is avoided for this long (it still serves as a last resort).
INTEGRITY_PENALTY = 60.0
_EWMA_ALPHA = 0.2

T = TypeVar("T")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date);
    None when absent or unparseable. Never negative."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class GatewayHealth:
    """What we know about one gateway: recent failures, typical latency, back-off."""

    url: str
    consecutive_failures: int = 0
    latency: float | None = None  # EWMA of time-to-answer in seconds
    backoff_until: float = 0.0  # time.monotonic() before which the gateway is avoided
    retry_at: float = 0.0  # time.monotonic() its last Retry-After asked us to wait for
    successes: int = 0
    failures: int = 0

    def rank(self, now: float) -> tuple[bool, int, float]:
        """Sort key: gateways not backing off first, then fewest failures, then fastest."""
        return (self.backoff_until > now, self.consecutive_failures, self.latency or 0.0)


class _RetryLater(SourceUnavailableError):
    """A 429/503 answer; ``retry_after`` is the wait the gateway asked for, if any."""

    def __init__(self, message: str, *, source: str, cid: object, retry_after: float | None) -> None:
        self.retry_after = retry_after
        super().__init__(message, source=source, cid=cid)


#: Answers that are final for one gateway for this request: asking it again will not help.
_DEFINITIVE = (BlockNotFoundError, IntegrityError, BlockTooLargeError, CARFormatError, Refused)


class GatewaySource(BlockSource):
    """Verified blocks and DAGs from one or more trustless HTTP gateways.

    Args:
        urls: gateway base URLs (``http://host:8080``), a list or a comma-separated string.
        timeout: overall limit for one attempt at one block (s).
        connect_timeout: limit for opening a connection (s).
        stall_timeout: abort an attempt when no new bytes arrived for this long (s): the
            read timeout.
        max_connections: size of the connection pool and of the parallel fetches.
        retry_budget: how long (s) one block keeps being retried, in rounds over all
            gateways, while they fail for reasons that may pass (refused connections,
            5xx, 429, stalls); 0 = one round. Definitive answers are never retried.
        retries: optional cap on the extra rounds within the budget (None: no cap).
        backoff: first retry delay (s); doubles each round, with jitter (50-100 %) so
            many readers do not retry in lockstep.
        max_retry_wait: cap on any one wait, including a gateway's ``Retry-After`` (s).
        hedge_after: if set, ask the next gateway in parallel when the first has not
            answered after this many seconds; the first verified answer wins.
        headers: extra request headers (e.g. ``Authorization`` for a private gateway).
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        timeout: float = 30.0,
        connect_timeout: float = config.DEFAULT_CONNECT_TIMEOUT,
        stall_timeout: float = config.DEFAULT_READ_TIMEOUT,
        max_connections: int = 16,
        retry_budget: float = config.DEFAULT_RETRY_BUDGET,
        retries: int | None = None,
        backoff: float = 0.1,
        max_retry_wait: float = 5.0,
        hedge_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if isinstance(urls, str):
            urls = [u for u in urls.split(",")]
        cleaned = [u.strip().rstrip("/") for u in urls if u and u.strip()]
        if not cleaned:
            raise ValueError("GatewaySource needs at least one gateway URL (none is contacted by default)")
        for url in cleaned:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"gateway URL {url!r} must start with http:// or https://")
        if (retries is not None and retries < 0) or max_connections < 1 or not retry_budget >= 0:
            raise ValueError("retries and retry_budget must be >= 0 and max_connections >= 1")
        self.urls = list(dict.fromkeys(cleaned))
        self.name = "gateway " + ", ".join(self.urls)
        # Enough blocks in flight to cover a round trip: 4x the connections keeps every
        # connection busy while the reader hashes what has arrived.
        self.prefetch_window = 4 * max_connections
        self.parallel_get_many = True
        self.timeout = timeout
        self.stall_timeout = stall_timeout
        self.max_connections = max_connections
        self.retries = retries
        self.retry_budget = retry_budget
        self.connect_timeout = connect_timeout
        self.backoff = backoff
        self.max_retry_wait = max_retry_wait
        self.hedge_after = hedge_after
        self.health = {url: GatewayHealth(url) for url in self.urls}
        self._lock = threading.Lock()
        self._random = random.Random()
        self._outage = OutageLog(log, self.name)
        self._client = httpx.Client(
            timeout=httpx.Timeout(
                connect=min(timeout, connect_timeout),
                read=stall_timeout,
                write=stall_timeout,
                pool=timeout,
            ),
            limits=httpx.Limits(
                max_connections=max_connections * 2,  # room for hedged duplicates
                max_keepalive_connections=max_connections * 2,
            ),
            headers={"Accept-Encoding": "identity", **(headers or {})},
            follow_redirects=False,  # a redirect could lead to a host nobody configured
            # Redirects are not followed, so only an https:// gateway can ever need TLS:
            # without one, skip loading the CA bundle (~20 ms in every DataLoader worker).
            verify=any(u.startswith("https://") for u in self.urls),
        )
        self._pool: ThreadPoolExecutor | None = None
        self._hedge_pool: ThreadPoolExecutor | None = None
        self._closed = False

    @classmethod
    def for_address(cls, address: str | IPFSPath, **options) -> tuple[GatewaySource, IPFSPath]:
        """A source for the gateway a pasted URL (``https://host/ipfs/CID/path``) points at,
        and the parsed address. The host is used trustlessly like any configured gateway."""
        path = parse_address(address)
        if not path.gateway:
            raise ValueError(f"{address!r} is not a gateway URL (expected http(s)://host/ipfs/CID/...)")
        return cls([path.gateway], **options), path

    # -- health ----------------------------------------------------------------------

    def ranked(self) -> list[GatewayHealth]:
        """The gateways, healthiest first."""
        now = time.monotonic()
        with self._lock:
            return sorted(self.health.values(), key=lambda g: g.rank(now))

    def _succeeded(self, gw: GatewayHealth, elapsed: float) -> None:
        with self._lock:
            gw.successes += 1
            gw.consecutive_failures = 0
            gw.backoff_until = 0.0
            gw.latency = elapsed if gw.latency is None else (
                _EWMA_ALPHA * elapsed + (1 - _EWMA_ALPHA) * gw.latency
            )

    def _failed(self, gw: GatewayHealth, error: Exception) -> None:
        if isinstance(error, BlockNotFoundError):
            return  # a 404 is an answer, not a sign of ill health
        now = time.monotonic()
        with self._lock:
            gw.failures += 1
            gw.consecutive_failures += 1
            if isinstance(error, (IntegrityError, BlockTooLargeError, CARFormatError)):
                wait_s = INTEGRITY_PENALTY
            elif isinstance(error, _RetryLater) and error.retry_after is not None:
                wait_s = min(error.retry_after, self.max_retry_wait)
                gw.retry_at = max(gw.retry_at, now + wait_s)
            else:
                wait_s = min(self.backoff * 2 ** (gw.consecutive_failures - 1), self.max_retry_wait)
            gw.backoff_until = max(gw.backoff_until, now + wait_s)
        log.debug("gateway %s failed: %s", gw.url, error)

    # -- single blocks ----------------------------------------------------------------

    def _get_raw(self, cid: CID) -> bytes:
        return self.get(cid)

    def get(self, cid: CID) -> bytes:
        """The verified block for ``cid`` from the first gateway that delivers it.

        Raises :class:`BlockNotFoundError` (every gateway said 404), :class:`IntegrityError`
        (only bad bytes came back), :class:`SourceTimeoutError` or
        :class:`SourceUnavailableError`; the message lists each gateway and its answer.
        """
        if cid.is_identity:
            return cid.digest
        return self._with_failover(cid, lambda gw: self._fetch_block(gw, cid))

    def _with_failover(self, cid: CID, attempt: Callable[[GatewayHealth], T]) -> T:
        errors: list[tuple[str, Exception]] = []
        finished: set[str] = set()  # gateways whose answer was definitive for this CID
        started = time.monotonic()
        deadline = started + self.retry_budget
        round_no = 0
        while True:
            candidates = [g for g in self.ranked() if g.url not in finished]
            if not candidates:
                break
            if round_no:
                if self.retries is not None and round_no > self.retries:
                    break
                if not self._sleep_before_retry(round_no, candidates, deadline, errors):
                    break
            ok, result = self._race(candidates, attempt, errors, finished)
            if ok:
                self._outage.ended()
                return result  # type: ignore[return-value]
            round_no += 1
        raise self._failure(cid, errors, waited=time.monotonic() - started if round_no > 1 else 0.0)

    def _sleep_before_retry(
        self, round_no: int, candidates: list[GatewayHealth], deadline: float,
        errors: list[tuple[str, Exception]],
    ) -> bool:
        """Wait before retry round ``round_no``: exponential back-off with jitter, at
        least what a ``Retry-After`` asked for, never past ``deadline``. False when the
        budget is spent."""
        now = time.monotonic()
        remaining = deadline - now
        if remaining <= 0:
            return False
        delay = backoff_delay(round_no, self.backoff, self.max_retry_wait, self._random)
        asked = min(g.retry_at for g in candidates) - now  # a Retry-After is honoured
        delay = min(max(delay, asked), self.max_retry_wait, remaining)
        if not self._outage.waiting:
            cause = "; ".join(f"{url}: {_short(e)}" for url, e in dict(errors).items())
            self._outage.started(cause, self.retry_budget)
        if delay > 0:
            time.sleep(delay)
        return True

    def _race(
        self,
        candidates: list[GatewayHealth],
        attempt: Callable[[GatewayHealth], T],
        errors: list[tuple[str, Exception]],
        finished: set[str],
    ) -> tuple[bool, T | None]:
        """Try ``candidates`` in order; with hedging, start the next one early when the
        current one is slow. Returns ``(True, result)`` for the first success."""

        def note(gw: GatewayHealth, e: Exception) -> None:
            errors.append((gw.url, e))
            if isinstance(e, _DEFINITIVE):
                finished.add(gw.url)

        if self.hedge_after is None or len(candidates) == 1:
            for gw in candidates:
                try:
                    return True, attempt(gw)
                except IPFSError as e:
                    note(gw, e)
            return False, None
        pool = self._executor("hedge")
        pending: dict[Future[T], GatewayHealth] = {}
        queue = deque(candidates)

        def launch() -> None:
            gw = queue.popleft()
            pending[pool.submit(attempt, gw)] = gw

        launch()
        while pending:
            done, _ = wait(pending, timeout=self.hedge_after if queue else None, return_when=FIRST_COMPLETED)
            if not done:  # the current gateway is slow: hedge with the next one
                log.debug("hedging: asking %s too", queue[0].url)
                launch()
                continue
            for fut in done:
                gw = pending.pop(fut)
                try:
                    result = fut.result()
                except IPFSError as e:
                    note(gw, e)
                else:
                    # Slower attempts still running finish on their own (bounded by timeouts).
                    return True, result
            if not pending and queue:
                launch()
        return False, None

    def _fetch_block(self, gw: GatewayHealth, cid: CID) -> bytes:
        """One attempt: ``GET /ipfs/{cid}?format=raw`` from ``gw``, verified."""
        url = f"{gw.url}/ipfs/{cid}"
        start = time.monotonic()
        try:
            with _translated(gw.url, cid), self._client.stream(
                "GET", url, params={"format": "raw"}, headers={"Accept": ACCEPT_RAW}
            ) as resp:
                self._check_status(resp, gw.url, cid)
                _check_raw_type(resp, gw.url, cid)
                declared = resp.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > MAX_BLOCK_SIZE:
                    raise BlockTooLargeError(cid, int(declared), MAX_BLOCK_SIZE, gw.url)
                data = self._read_capped(resp, cid, gw.url, start)
            if len(data) > MAX_BLOCK_SIZE:
                raise BlockTooLargeError(cid, len(data), MAX_BLOCK_SIZE, gw.url)
            verify_block(cid, data, gw.url)
        except IPFSError as e:
            self._failed(gw, e)
            raise
        self._succeeded(gw, time.monotonic() - start)
        return data

    def _read_capped(self, resp: httpx.Response, cid: CID, url: str, start: float) -> bytes:
        """The body, but never more than the block cap + 1 byte (enough to know it is
        too big), and never for longer than ``timeout`` overall."""
        parts: list[bytes] = []
        got = 0
        for chunk in resp.iter_bytes():
            parts.append(chunk)
            got += len(chunk)
            if got > MAX_BLOCK_SIZE:
                break
            if time.monotonic() - start > self.timeout:
                raise SourceTimeoutError(f"took longer than {self.timeout} s", source=url, cid=cid)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        return data[:MAX_BLOCK_SIZE + 1]

    def _check_status(self, resp: httpx.Response, url: str, cid: CID) -> None:
        status = resp.status_code
        if status == 200:
            return
        if status in (404, 410):
            raise BlockNotFoundError(cid, [url])
        if 300 <= status < 400:
            where = resp.headers.get("location", "")
            raise Refused(
                f"answered {status} (redirect{' to ' + where[:100] if where else ''}, not followed: "
                "configure the gateway's final URL)",
                source=url, cid=cid,
            )
        if status in (429, 503):
            wait_s = parse_retry_after(resp.headers.get("retry-after"))
            raise _RetryLater(
                f"answered {status}" + (f" (Retry-After {wait_s:.3g} s)" if wait_s is not None else ""),
                source=url,
                cid=cid,
                retry_after=wait_s,
            )
        if status == 504:
            raise SourceTimeoutError("answered 504 (gateway timeout)", source=url, cid=cid)
        if 400 <= status < 500:
            raise Refused(f"answered HTTP {status} {resp.reason_phrase}".rstrip(), source=url, cid=cid)
        answer = f"answered HTTP {status} {resp.reason_phrase}".rstrip()
        raise SourceUnavailableError(answer, source=url, cid=cid)

    def _failure(self, cid: CID, errors: list[tuple[str, Exception]], *, waited: float = 0.0) -> Exception:
        """The most informative error once every gateway failed for ``cid``: each gateway
        named once, with its last answer."""
        err: Exception
        last = dict(errors)  # insertion order of first failure, value of the last one
        tried = list(last) or list(self.urls)
        detail = "; ".join(f"{url}: {_short(e)}" for url, e in last.items())
        if waited:
            detail += f"; retried for {waited:.1f} s"
        if last and all(isinstance(e, BlockNotFoundError) for e in last.values()):
            return BlockNotFoundError(cid, tried)
        others = [e for e in last.values() if not isinstance(e, BlockNotFoundError)]
        if others and all(isinstance(e, BlockTooLargeError) for e in others):
            return others[0]
        if others and all(isinstance(e, CARFormatError) for e in others):
            err = CARFormatError(f"/ipfs/{cid}: no gateway sent a valid CAR (tried {detail})")
            err.__cause__ = others[-1]
            return err
        if others and all(isinstance(e, (IntegrityError, BlockTooLargeError)) for e in others):
            bad = [url for url, e in last.items() if isinstance(e, (IntegrityError, BlockTooLargeError))]
            err = IntegrityError(cid, ", ".join(bad), f"no gateway delivered verified bytes ({detail})")
        elif others and all(isinstance(e, SourceTimeoutError) for e in others):
            err = SourceTimeoutError(f"block {cid} timed out: {detail}", source=", ".join(tried), cid=cid)
        else:
            err = SourceUnavailableError(
                f"block {cid} unavailable: {detail}", source=", ".join(tried), cid=cid
            )
        err.__cause__ = others[-1] if others else None
        return err

    # -- many blocks ------------------------------------------------------------------

    def _executor(self, kind: str) -> ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise SourceUnavailableError(f"{self.name}: source is closed", source=self.name)
            if kind == "hedge":
                if self._hedge_pool is None:
                    self._hedge_pool = ThreadPoolExecutor(
                        self.max_connections * 2, thread_name_prefix="gateway-hedge"
                    )
                return self._hedge_pool
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_connections, thread_name_prefix="gateway-fetch")
            return self._pool

    def get_many(self, cids: Iterable[CID]) -> Iterator[tuple[CID, bytes]]:
        """Fetch blocks in parallel (at most ``max_connections`` in flight), yielding
        ``(cid, block)`` in the order given, each verified. The first failure is raised
        in order; requests not yet started are cancelled."""
        pool = self._executor("fetch")
        yield from fetch_in_order(cids, self.get, pool, window=2 * self.max_connections)

    # -- DAGs as CAR ------------------------------------------------------------------

    def fetch_car(
        self,
        root: CID | str,
        path: str = "",
        *,
        dag_scope: Scope = "all",
        entity_bytes: tuple[int, int | None] | str | None = None,
        fallback: bool = True,
    ) -> Iterator[tuple[CID, bytes]]:
        """Yield the verified blocks of ``/ipfs/{root}/{path}`` in DFS order.

        One ``?format=car`` request (``dag-scope``, ``entity-bytes=from:to`` inclusive)
        to the healthiest gateway that answers, checked block by block against our own
        walk of the DAG. If the CAR is cut short, out of order, missing a block or has a
        bad one (the status was 200 all the same), the gateway is marked unhealthy and,
        with ``fallback`` (default), the rest of the walk continues block by block with
        ``format=raw`` across all gateways; without it the :class:`CARFormatError` /
        :class:`IntegrityError` is raised. Blocks already yielded are never taken back,
        so the result is exactly the requested DAG, every block verified. We ask for
        ``dups=y``: a repeated block is yielded each time the walk meets it (once, if the
        gateway answers ``dups=n``, as its Content-Type then says).
        """
        root = CID.decode(root)
        params: dict[str, str] = {"format": "car", "dag-scope": dag_scope}
        if isinstance(entity_bytes, tuple):
            start, end = entity_bytes
            params["entity-bytes"] = f"{start}:{'*' if end is None else end}"
        elif entity_bytes is not None:
            params["entity-bytes"] = entity_bytes
        url_path = f"/ipfs/{root}" + (f"/{_quote_path(path)}" if path.strip("/") else "")
        errors: list[tuple[str, Exception]] = []
        verifier: CarBlockVerifier | None = None
        for gw in self.ranked():
            if verifier is not None and verifier.count:
                break  # a CAR cannot be resumed midway: finish the walk block by block
            verifier = None
            start_t = time.monotonic()
            try:
                with _translated(gw.url, root), self._client.stream(
                    "GET", gw.url + url_path, params=params, headers={"Accept": ACCEPT_CAR}
                ) as resp:
                    self._check_status(resp, gw.url, root)
                    dups = _content_type_param(resp.headers.get("content-type", ""), "dups", "y") == "y"
                    verifier = CarBlockVerifier(
                        root, path=path, scope=dag_scope, entity_bytes=entity_bytes, dups=dups,
                        on_block=_discard,
                    )
                    # the verifier hashes each block (and checks it is the one expected)
                    for cid, block in CarReader(resp.iter_bytes(), verify=False):
                        verifier.push(cid, block)
                        yield cid, block
                    verifier.finish()
                self._succeeded(gw, time.monotonic() - start_t)
                return
            except _DEFINITIVE + (SourceError,) as e:
                self._failed(gw, e)
                errors.append((gw.url, e))
                # a 404 is an answer (the caller raises it or falls back), not trouble to report
                level = logging.DEBUG if isinstance(e, BlockNotFoundError) else logging.WARNING
                log.log(level, "CAR of /ipfs/%s/%s from %s failed after %d blocks: %s",
                        root, path, gw.url, verifier.count if verifier else 0, e)
                if not fallback and verifier is not None and verifier.count:
                    raise self._failure(root, errors) from e
        root_missing = bool(errors) and all(isinstance(e, BlockNotFoundError) for _, e in errors)
        if not fallback or (root_missing and not path.strip("/")):
            raise self._failure(root, errors)  # a 404 for the root is final: no raw fallback
        if verifier is None:
            verifier = CarBlockVerifier(
                root, path=path, scope=dag_scope, entity_bytes=entity_bytes, dups=True, on_block=_discard
            )
        while not verifier.done:
            want = verifier.expected
            assert want is not None
            block = self.get(want)  # raises the typed error naming every gateway tried
            verifier.push(want, block)
            yield want, block

    def read_range(self, root: CID | str, offset: int, length: int, *, path: str = "") -> bytes:
        """Verified bytes ``[offset, offset + length)`` of the file at ``/ipfs/root/path``
        (fewer at the end of the file), in one ``entity-bytes`` CAR request: the gateway
        sends just the nodes on the paths to the covering leaves."""
        if offset < 0 or length < 0:
            raise ValueError(f"offset and length must be non-negative, got {offset}, {length}")
        from torch_ipfs.unixfs.reader import UnixFSFile, resolve_path

        root = CID.decode(root)
        layer = _VerifiedBlocks(self)
        if length == 0:
            file_cid = resolve_path(self, root, path) if path.strip("/") else root
            UnixFSFile(layer, file_cid)  # still checks that it is a file
            return b""
        wanted = (offset, offset + length - 1)
        for cid, block in self.fetch_car(root, path, dag_scope="entity", entity_bytes=wanted):
            layer.blocks[cid.multihash] = block
        file_cid = resolve_path(layer, root, path) if path.strip("/") else root
        return UnixFSFile(layer, file_cid).read_range(offset, length)

    def iter_range(
        self,
        root: CID | str,
        offset: int = 0,
        length: int | None = None,
        *,
        path: str = "",
        chunk_size: int = 8 * 1024 * 1024,
        parallel: int = 4,
    ) -> Iterator[bytes]:
        """Stream a file (or ``[offset, offset + length)`` of it) as verified chunks of up to
        ``chunk_size`` bytes, with up to ``parallel`` range requests in flight, so the
        round-trip time of each request is hidden behind the others' transfers."""
        from torch_ipfs.unixfs.reader import UnixFSFile, resolve_path

        root = CID.decode(root)
        file_cid = resolve_path(self, root, path) if path.strip("/") else root
        size = UnixFSFile(self, file_cid).size
        start = min(max(offset, 0), size)
        end = size if length is None else min(size, start + length)
        pool = self._executor("fetch")
        window: deque[Future[bytes]] = deque()
        pos = start
        try:
            while pos < end or window:
                while pos < end and len(window) < max(1, parallel):
                    n = min(chunk_size, end - pos)
                    window.append(pool.submit(self.read_range, file_cid, pos, n))
                    pos += n
                yield window.popleft().result()
        finally:
            for fut in window:
                fut.cancel()

    # -- probing and lifecycle ----------------------------------------------------------

    def probe(self) -> dict[str, Exception | None]:
        """Ask every gateway for the empty identity block (``/ipfs/bafkqaaa?format=raw``,
        which any trustless gateway answers 200 with an empty body). Returns, per URL,
        None if it answered correctly or the error it produced (a gateway that ignores
        ``?format=raw`` gets a "not a trustless gateway" :class:`SourceUnavailableError`);
        updates the health records."""
        results: dict[str, Exception | None] = {}
        cid = CID.decode(PROBE_CID)
        for gw in list(self.health.values()):
            start = time.monotonic()
            try:
                with _translated(gw.url, cid):
                    resp = self._client.get(
                        f"{gw.url}/ipfs/{PROBE_CID}", params={"format": "raw"}, headers={"Accept": ACCEPT_RAW}
                    )
                self._check_status(resp, gw.url, cid)
                ctype = resp.headers.get("content-type", "")
                if _media_type(ctype) != ACCEPT_RAW or resp.content:
                    raise Refused(
                        f"{gw.url} is not a trustless gateway: it answered /ipfs/{PROBE_CID}?format=raw "
                        f"with Content-Type {ctype or '(none)'!r} and {len(resp.content)} bytes "
                        f"(a trustless gateway sends {ACCEPT_RAW} and no bytes)",
                        source=gw.url, cid=cid,
                    )
            except IPFSError as e:
                self._failed(gw, e)
                results[gw.url] = e
            else:
                self._succeeded(gw, time.monotonic() - start)
                results[gw.url] = None
        return results

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pool, hedge_pool = self._pool, self._hedge_pool
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if hedge_pool is not None:
            # only losing hedged attempts can still be running: do not wait for them
            hedge_pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


class _VerifiedBlocks(BlockSource):
    """Blocks that a CAR verifier already checked, in front of the gateway source (which
    verifies whatever it still has to fetch). Lets the UnixFS reader assemble a range
    from one CAR response without hashing every block a second time."""

    def __init__(self, fallback: GatewaySource) -> None:
        self.fallback = fallback
        self.name = fallback.name
        self.blocks: dict[bytes, bytes] = {}

    def get(self, cid: CID) -> bytes:
        if cid.is_identity:
            return cid.digest
        block = self.blocks.get(cid.multihash)
        return block if block is not None else self.fallback.get(cid)

    def _get_raw(self, cid: CID) -> bytes:
        return self.get(cid)


def _discard(cid: CID, block: bytes) -> None:
    """``on_block`` for verifiers whose blocks are handed straight to the caller."""


def _short(error: Exception) -> str:
    """What one gateway answered, without the CID and URL the summary names already."""
    if isinstance(error, BlockNotFoundError):
        return "404 not found"
    if isinstance(error, IntegrityError):
        return "sent bytes that do not hash to the CID"
    text = str(error)
    return text if len(text) <= 200 else text[:197] + "..."


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _check_raw_type(resp: httpx.Response, url: str, cid: CID) -> None:
    """A 200 to ``?format=raw`` that is not ``application/vnd.ipld.raw`` comes from a
    gateway that ignored the request (an old path gateway sends the file or a
    directory listing): say so, instead of a "hash does not match" later."""
    ctype = resp.headers.get("content-type")
    if ctype is not None and _media_type(ctype) != ACCEPT_RAW:
        raise Refused(
            f"not a trustless gateway: answered ?format=raw with Content-Type {ctype[:80]!r}",
            source=url, cid=cid,
        )


def _content_type_param(content_type: str, name: str, default: str) -> str:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"').lower()
    return default


def _quote_path(path: str) -> str:
    from urllib.parse import quote

    return "/".join(quote(seg, safe="") for seg in path.split("/") if seg)


@contextlib.contextmanager
def _translated(url: str, cid: CID) -> Iterator[None]:
    """Map httpx's exceptions to ours, at this one boundary."""
    try:
        yield
    except httpx.TimeoutException as e:
        raise SourceTimeoutError(f"no data in time ({type(e).__name__})", source=url, cid=cid) from e
    except httpx.HTTPError as e:
        raise SourceUnavailableError(f"{type(e).__name__}: {e}", source=url, cid=cid) from e
