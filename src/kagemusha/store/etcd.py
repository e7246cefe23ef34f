"""The ``etcd`` store: etcd v3 through its JSON gRPC gateway, for clusters of real machines.

Why the gateway and not gRPC: there is no maintained async Python etcd3 gRPC
client that works with current protobuf (``etcd3``/``aetcd3`` are abandoned and
pin protobuf 3; ``python-etcd`` speaks the v2 API that 3.4 disables). The v3
JSON gateway is part of etcd itself (``/v3/kv/range``, ``/v3/kv/txn``,
``/v3/lease/*``, ``/v3/watch``), stable since 3.4, and the same on every member,
so one ``httpx.AsyncClient`` (already a dependency, asyncio and trio alike)
covers it with nothing generated. Keys and values travel base64-encoded; int64
fields come back as JSON strings and fields at their default (``0``, ``false``,
``PUT``) are left out, which the parsing below relies on.

Mapping the contract onto etcd:

- ``cas`` is one txn comparing the key's ``mod_revision`` (``create_revision == 0``
  for ``expected_revision=0``), so etcd decides the race, not this client.
- Lease TTLs are whole seconds at etcd: asked TTLs are rounded up
  (``math.ceil``) and the TTL etcd actually granted is returned.
- A keepalive answered with no TTL, or a put/txn refused with "requested lease
  not found", raises ``LeaseExpired``.
- Watches stream from ``/v3/watch`` (newline-delimited JSON). When the
  connection drops, the watch reconnects, to the next endpoint if need be, and
  resumes at the last delivered revision + 1, so the caller sees no gap; a
  compacted start revision raises ``StoreUnavailable``.
- Every request asks for ``hasleader`` (gRPC metadata through the gateway), so a
  member cut off from its quorum answers "no leader" at once instead of
  serving stale data or hanging; reads and other idempotent calls then move on
  to the next endpoint.

Errors: every httpx error, timeout, 5xx and etcd error becomes
``StoreUnavailable`` naming the endpoint (never the password). Each call,
retries on other endpoints included, is bounded by ``timeout`` as a whole.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import anyio
import httpx

from kagemusha.errors import ConfigError, LeaseExpired, StoreUnavailable
from kagemusha.store._base import KeyValue, Lease, Store, StoreCapabilities, WatchEvent, WatchEventType
from kagemusha.store._open import StoreURL

__all__ = ["EtcdStore"]

#: Options ``from_url`` accepts, and the config key each one comes from (for error messages).
OPTION_KEYS: dict[str, str] = {
    "ca_file": "cluster.store_ca_file",
    "cert_file": "cluster.store_cert_file",
    "key_file": "cluster.store_key_file",
    "user": "cluster.store_user",
    "password": "cluster.store_password",
}

# gRPC status codes etcd's gateway puts in {"code": N}.
_NOT_FOUND = 5
_UNAUTHENTICATED = 16
#: gRPC codes after which the request certainly did not take effect or is safe to repeat elsewhere.
_RETRY_ELSEWHERE = {4, 14}  # DEADLINE_EXCEEDED, UNAVAILABLE ("no leader", "request timed out")

#: Sent on every request: gRPC metadata ``hasleader=true`` (see module docstring).
_REQUIRE_LEADER = {"Grpc-Metadata-hasleader": "true"}

#: What a request may raise besides an etcd answer. NB: a TLS alert arriving after the
#: handshake (TLS 1.3 rejecting a client certificate) surfaces as a bare ssl.SSLError,
#: not an httpx error; pinned by test_tls_with_client_certificate.
_TRANSPORT_ERRORS = (httpx.HTTPError, OSError, ValueError, TimeoutError, anyio.BrokenResourceError, anyio.EndOfStream)

_WATCH_BACKOFF_MIN = 0.05
_WATCH_BACKOFF_MAX = 0.5


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _unb64(data: str | None) -> str:
    # NB: keys written by other tools may not be UTF-8; one such key must not make a
    # whole get_prefix fail, so undecodable bytes are replaced instead of raising.
    return base64.b64decode(data or "").decode("utf-8", errors="replace")


def _prefix_end(prefix: str) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` (etcd's ``range_end``)."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b"\x00"  # all keys
    raw[-1] += 1
    return bytes(raw)


def _json_object(text: str) -> dict[str, Any]:
    """Decode one JSON object; anything else is a malformed answer (``ValueError``, mapped to ``StoreUnavailable``)."""
    doc = json.loads(text)
    if isinstance(doc, dict):
        return doc
    raise ValueError(f"unexpected answer {text[:100]!r}")


def _int(obj: dict[str, Any], name: str) -> int:
    return int(obj.get(name) or 0)


def _kv(raw: dict[str, Any]) -> KeyValue:
    lease = _int(raw, "lease")
    return KeyValue(
        key=_unb64(raw.get("key")),
        value=_unb64(raw.get("value")),
        mod_revision=_int(raw, "mod_revision"),
        create_revision=_int(raw, "create_revision"),
        lease=lease or None,
    )


class _EtcdError(Exception):
    """An error answer from etcd (inside this module only; mapped before leaving it)."""

    def __init__(self, endpoint: str, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status
        self.code = code
        self.message = message

    @property
    def is_lease_not_found(self) -> bool:
        return self.code == _NOT_FOUND and "lease not found" in self.message

    @property
    def is_bad_token(self) -> bool:
        return self.code == _UNAUTHENTICATED or "invalid auth token" in self.message

    @property
    def retry_elsewhere(self) -> bool:
        return self.code in _RETRY_ELSEWHERE or self.status >= 500

    @property
    def never_proposed(self) -> bool:
        """etcd refused before proposing (no leader): even a write may be sent to another member.

        NB: not every UNAVAILABLE is like this; "request timed out" may have been applied.
        """
        return "no leader" in self.message


def _parse_error(endpoint: str, status: int, text: str) -> _EtcdError:
    """Decode ``{"error": ..., "code": N}`` (unary) or ``{"error": {"grpc_code": N, ...}}`` (stream)."""
    code, message = 0, text.strip()[:200] or f"HTTP {status}"
    try:
        doc = json.loads(text.splitlines()[0]) if text.strip() else {}
    except ValueError:
        doc = {}
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict):
            code = int(err.get("grpc_code") or err.get("code") or 0)
            message = str(err.get("message") or message)
        elif err is not None:
            code = int(doc.get("code") or 0)
            message = str(doc.get("message") or err)
    return _EtcdError(endpoint, status, code, message)


def _check_file(errors: list[tuple[str, str]], option: str, path: str | None) -> str | None:
    if not path:
        return None
    if not os.path.isfile(path):
        errors.append((OPTION_KEYS[option], f"{path}: no such file"))
    elif not os.access(path, os.R_OK):
        errors.append((OPTION_KEYS[option], f"{path}: not readable"))
    return path


def _tls_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """Build the client TLS context; every problem becomes a ``ConfigError`` naming its key."""
    errors: list[tuple[str, str]] = []
    ca = _check_file(errors, "ca_file", ca_file)
    cert = _check_file(errors, "cert_file", cert_file)
    key = _check_file(errors, "key_file", key_file)
    if cert_file and not key_file:
        errors.append((OPTION_KEYS["key_file"], "required when cluster.store_cert_file is set"))
    if key_file and not cert_file:
        errors.append((OPTION_KEYS["cert_file"], "required when cluster.store_key_file is set"))
    if errors:
        raise ConfigError(errors)
    try:
        ctx = ssl.create_default_context(cafile=ca)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError([(OPTION_KEYS["ca_file"], f"{ca}: not a PEM CA certificate ({exc})")]) from exc
    if cert and key:
        try:
            ctx.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                [
                    (OPTION_KEYS["cert_file"], f"{cert} with key {key}: not a PEM certificate and matching key ({exc})"),
                ]
            ) from exc
    return ctx


class EtcdStore(Store):
    """Store on an etcd v3 cluster (3.4 or later), for agents on different machines.

    Usage::

        store = open_store("etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379", timeout=1.0,
                           ca_file="/etc/kagemusha/ca.pem", cert_file="node.pem", key_file="node-key.pem")
        lease = await store.grant_lease(5)      # etcd grants whole seconds: Lease(ttl=5.0)
        await store.cas("groups/g/owner", "n1", expected_revision=0, lease=lease.id)

    Args:
        endpoints: ``host:port`` of etcd members; calls go to the last one that
            answered and move on to the next when it cannot be reached, has no
            leader, or (reads, keepalives) does not answer in its share of ``timeout``.
        timeout: bound, in seconds, on each call as a whole (all endpoints tried).
        ca_file: CA bundle to verify the members with; any TLS option switches to https.
        cert_file: client certificate (with ``key_file``) for etcd's ``--client-cert-auth``.
        key_file: the client certificate's private key.
        user: etcd user, with ``password``; the token is fetched on first use and renewed
            when etcd reports it invalid.
        password: the user's password. Never logged nor put in an error message.
            NB: without TLS it crosses the network in clear text, as etcd's own clients do.
        watch_resume_timeout: how long a watch keeps reconnecting before it raises
            ``StoreUnavailable``; default ``max(10, 10 * timeout)`` seconds.
        watch_idle_timeout: a watch connection silent this long is dropped and
            resumed (etcd sends nothing on a quiet prefix, so this also bounds how
            long a half-open connection goes unnoticed).

    Raises:
        ConfigError: bad endpoints, timeout, or TLS/auth options; the message names the key.
    """

    capabilities: ClassVar[StoreCapabilities] = StoreCapabilities(spans_hosts=True, linearizable=True)

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = 1.0,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        user: str | None = None,
        password: str | None = None,
        watch_resume_timeout: float | None = None,
        watch_idle_timeout: float = 30.0,
    ) -> None:
        if not endpoints:
            raise ConfigError([("cluster.store", "etcd store needs at least one endpoint")])
        if not timeout > 0:
            raise ConfigError([("cluster.store_timeout", f"must be > 0, got {timeout}")])
        if bool(user) != bool(password):
            missing = "password" if user else "user"
            raise ConfigError([(OPTION_KEYS[missing], "user and password must be given together")])
        tls = bool(ca_file or cert_file or key_file)
        verify: ssl.SSLContext | bool = _tls_context(ca_file, cert_file, key_file) if tls else True
        self.endpoints = tuple(endpoints)
        self.timeout = timeout
        self._scheme = "https" if tls else "http"
        self._user = user or None
        self._password = password or None
        self._token: str | None = None
        self._current = 0
        self._closed = False
        self._watch_resume_timeout = (
            watch_resume_timeout if watch_resume_timeout is not None else max(10.0, 10 * timeout)
        )
        self._watch_idle_timeout = watch_idle_timeout
        # NB: the bound on a call is enforced in _call (anyio.fail_after per attempt);
        # httpx's own timeouts are per phase and would add up across endpoints.
        # Connects get a share of the budget so a blackholed first member leaves time for the next.
        self._client = httpx.AsyncClient(
            verify=verify, timeout=httpx.Timeout(timeout, connect=timeout / len(self.endpoints)), trust_env=False
        )

    @classmethod
    def from_url(cls, url: StoreURL, *, timeout: float = 1.0, **options: Any) -> EtcdStore:
        """Build the store from a parsed ``etcd://`` URL and the config's store options.

        Raises:
            ConfigError: an unknown option, or a TLS/auth option that cannot work
                (missing or unreadable file, user without password); names the key.
        """
        unknown = sorted(set(options) - set(OPTION_KEYS))
        if unknown:
            raise ConfigError([(f"cluster.store_{name}", "not an etcd store option") for name in unknown])
        opts = {name: (str(v) if v is not None else None) for name, v in options.items()}
        return cls(
            url.endpoints,
            timeout=timeout,
            ca_file=opts.get("ca_file"),
            cert_file=opts.get("cert_file"),
            key_file=opts.get("key_file"),
            user=opts.get("user"),
            password=opts.get("password"),
        )

    def __repr__(self) -> str:
        return f"EtcdStore({','.join(self.endpoints)!r}, user={self._user!r})"

    # -- plumbing ---------------------------------------------------------

    def _url(self, endpoint: str, path: str) -> str:
        return f"{self._scheme}://{endpoint}{path}"

    def _headers(self) -> dict[str, str]:
        if self._token:
            return {**_REQUIRE_LEADER, "Authorization": self._token}
        return dict(_REQUIRE_LEADER)

    def _skip(self, endpoint: str) -> None:
        """Start the next call at the endpoint after ``endpoint`` (it just failed)."""
        i = self.endpoints.index(endpoint)
        if self._current == i:
            self._current = (i + 1) % len(self.endpoints)

    async def _authenticate(self, endpoint: str) -> None:
        assert self._user is not None and self._password is not None
        resp = await self._client.post(
            self._url(endpoint, "/v3/auth/authenticate"),
            json={"name": self._user, "password": self._password},
            headers=_REQUIRE_LEADER,
        )
        if resp.status_code != 200:
            err = _parse_error(endpoint, resp.status_code, resp.text)
            if err.retry_elsewhere:  # "no leader" and the like: not the credentials' fault
                raise err
            raise StoreUnavailable(f"etcd {endpoint}: authentication as {self._user!r} failed: {err.message}")
        self._token = str(resp.json().get("token") or "") or None

    async def _post_once(self, endpoint: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One POST to one endpoint; raises httpx errors or ``_EtcdError`` as they come."""
        if self._user and not self._token:
            await self._authenticate(endpoint)
        for attempt in (1, 2):
            resp = await self._client.post(self._url(endpoint, path), json=body, headers=self._headers())
            if resp.status_code == 200:
                text = resp.text
                # Streaming RPCs (keepalive) answer with {"result": ...} or {"error": ...} lines.
                doc = _json_object(text.splitlines()[0]) if text.strip() else {}
                if isinstance(doc.get("error"), dict):
                    raise _parse_error(endpoint, resp.status_code, text)
                result = doc.get("result", doc)
                if isinstance(result, dict):
                    return result
                raise ValueError(f"unexpected answer {text[:100]!r}")
            err = _parse_error(endpoint, resp.status_code, resp.text)
            if attempt == 1 and self._user and err.is_bad_token:
                await self._authenticate(endpoint)  # token expired (auth-token-ttl); once
                continue
            raise err
        raise AssertionError("unreachable")

    async def _call(self, path: str, body: dict[str, Any], *, idempotent: bool) -> dict[str, Any]:
        """POST ``body`` to the cluster; the whole call, all endpoints, is bounded by ``timeout``.

        Connection failures move on to the next endpoint (the request never left).
        Other failures do so only for ``idempotent`` calls: a put or txn that timed
        out may have been applied, and repeating a cas could report a lost race
        that was in fact won. Idempotent calls are hedged (:meth:`_call_hedged`).

        Raises:
            _EtcdError: etcd refused the request (callers map lease-not-found first).
            StoreUnavailable: anything else.
        """
        if self._closed:
            raise StoreUnavailable("etcd store is closed")
        n = len(self.endpoints)
        if idempotent and n > 1:
            return await self._call_hedged(path, body)
        deadline = anyio.current_time() + self.timeout
        start = self._current
        failures: list[str] = []  # "endpoint: reason" for each endpoint tried
        last: BaseException | None = None
        for i in range(n):
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                break
            endpoint = self.endpoints[(start + i) % n]
            try:
                with anyio.fail_after(remaining):
                    result = await self._post_once(endpoint, path, body)
            except _EtcdError as exc:
                if exc.is_lease_not_found:
                    raise
                last = exc
                failures.append(f"{endpoint}: {exc.message}")
                self._skip(endpoint)
                if (idempotent and exc.retry_elsewhere) or exc.never_proposed:
                    continue
                break
            except _TRANSPORT_ERRORS as exc:
                last = exc
                timed_out = isinstance(exc, TimeoutError | httpx.TimeoutException)
                failures.append(f"{endpoint}: " + ("no answer in time" if timed_out else _describe(exc)))
                self._skip(endpoint)
                # A refused or timed-out connect never sent the request: safe to ask the next one.
                if idempotent or isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                    continue
                break
            self._current = self.endpoints.index(endpoint)
            return result
        if not failures:
            failures.append(f"{self.endpoints[start]}: no answer in time")
        raise StoreUnavailable(f"etcd {path} failed within {self.timeout:g}s: {'; '.join(failures)}") from last

    async def _call_hedged(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """An idempotent call, hedged across the members within one ``timeout``.

        The current member is asked first. When it has not answered after its share of the budget
        (``timeout / members``), the next one is asked too, *without* giving up on the first, and so
        on; a failure asks the next one at once; the first answer wins and the others are cancelled.
        So a member that accepts but never answers (a pooled connection into a partition) costs one
        share, and a uniformly slow link (every member slow, as on a congested store link) still
        gets the whole budget: an answer that comes within ``timeout`` is taken, as the timing rule
        assumes (docs/fencing.md). Sequential equal shares failed every renewal on a three-member
        cluster once a round trip took more than a third of ``timeout``.
        """
        n = len(self.endpoints)
        start = self._current
        t0 = anyio.current_time()
        deadline = t0 + self.timeout
        send, recv = anyio.create_memory_object_stream[tuple[str, str, Any]](n)
        failures: list[str] = []
        last: BaseException | None = None

        async def attempt(endpoint: str) -> None:
            try:
                result = await self._post_once(endpoint, path, body)
            except _EtcdError as exc:
                await send.send(("etcd", endpoint, exc))
            except _TRANSPORT_ERRORS as exc:
                await send.send(("transport", endpoint, exc))
            else:
                await send.send(("ok", endpoint, result))

        won: tuple[str, dict[str, Any]] | None = None
        refused: _EtcdError | None = None
        with anyio.move_on_after(self.timeout):
            async with anyio.create_task_group() as tg:
                launched = answered = 0
                while answered < n:
                    if launched < n and anyio.current_time() >= t0 + launched * self.timeout / n:
                        tg.start_soon(attempt, self.endpoints[(start + launched) % n])
                        launched += 1
                        continue
                    # wait for an answer, or until the next member is due to be asked
                    due = t0 + launched * self.timeout / n if launched < n else deadline
                    with anyio.move_on_after(max(0.0, due - anyio.current_time())):
                        kind, endpoint, value = await recv.receive()
                        answered += 1
                        if kind == "ok":
                            won = (endpoint, value)
                            break
                        last = value
                        if kind == "etcd":
                            if value.is_lease_not_found or not (value.retry_elsewhere or value.never_proposed):
                                refused = value
                                break
                            failures.append(f"{endpoint}: {value.message}")
                        else:
                            timed_out = isinstance(value, TimeoutError | httpx.TimeoutException)
                            failures.append(f"{endpoint}: " + ("no answer in time" if timed_out else _describe(value)))
                        self._skip(endpoint)
                        if launched < n:  # a failure: ask the next member now
                            tg.start_soon(attempt, self.endpoints[(start + launched) % n])
                            launched += 1
                tg.cancel_scope.cancel()
        if won is not None:
            self._current = self.endpoints.index(won[0])
            return won[1]
        if refused is not None:
            raise refused
        if not failures:
            failures.append(f"{self.endpoints[start]}: no answer in time")
        raise StoreUnavailable(f"etcd {path} failed within {self.timeout:g}s: {'; '.join(failures)}") from last

    @staticmethod
    def _revision(result: dict[str, Any]) -> int:
        return _int(result.get("header") or {}, "revision")

    # -- contract ---------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        result = await self._call("/v3/kv/range", {"key": _b64(key)}, idempotent=True)
        kvs = result.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        body = {"key": _b64(prefix or b"\x00"), "range_end": _b64(_prefix_end(prefix))}
        result = await self._call("/v3/kv/range", body, idempotent=True)
        # etcd returns a range sorted by key (bytes order, which is UTF-8 code point order).
        return [_kv(kv) for kv in result.get("kvs") or []], self._revision(result)

    async def put(self, key: str, value: str, *, lease: int | None = None) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        try:
            result = await self._call("/v3/kv/put", body, idempotent=False)
        except _EtcdError as exc:
            raise LeaseExpired(f"lease {lease} does not exist (etcd {exc.endpoint})") from exc
        return self._revision(result)

    async def cas(self, key: str, value: str, *, expected_revision: int, lease: int | None = None) -> bool:
        # NB: etcd checks the lease only on the branch taken, so a cas that loses the
        # race with a dead lease returns False rather than LeaseExpired; the next
        # keepalive reports the lease. Pinned by test_cas_lost_with_dead_lease_is_false.
        put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = str(lease)
        try:
            result = await self._call(
                "/v3/kv/txn",
                {"compare": [self._compare(key, expected_revision)], "success": [{"request_put": put}]},
                idempotent=False,
            )
        except _EtcdError as exc:
            raise LeaseExpired(f"lease {lease} does not exist (etcd {exc.endpoint})") from exc
        return bool(result.get("succeeded"))

    @staticmethod
    def _compare(key: str, expected_revision: int) -> dict[str, Any]:
        if expected_revision == 0:
            return {"target": "CREATE", "key": _b64(key), "result": "EQUAL", "create_revision": "0"}
        return {"target": "MOD", "key": _b64(key), "result": "EQUAL", "mod_revision": str(expected_revision)}

    async def delete(self, key: str, *, expected_revision: int | None = None) -> bool:
        try:
            if expected_revision is None:
                result = await self._call("/v3/kv/deleterange", {"key": _b64(key)}, idempotent=False)
                return _int(result, "deleted") > 0
            result = await self._call(
                "/v3/kv/txn",
                {
                    "compare": [self._compare(key, expected_revision)],
                    "success": [{"request_delete_range": {"key": _b64(key)}}],
                },
                idempotent=False,
            )
        except _EtcdError as exc:  # not a lease error here; nothing else reaches this far
            raise StoreUnavailable(f"etcd {exc.endpoint}: delete: {exc.message}") from exc
        if not result.get("succeeded"):
            return False
        responses = result.get("responses") or [{}]
        return _int(responses[0].get("response_delete_range") or {}, "deleted") > 0

    async def grant_lease(self, ttl: float) -> Lease:
        """Grant a lease of ``ceil(ttl)`` seconds, or etcd's minimum if that is longer.

        NB: etcd's minimum TTL is 1.5 election timeouts rounded up: 2 s with its
        defaults (heartbeat 100 ms, election 1 s), 1 s with the test fixture's
        (50 ms, 500 ms). The returned ``Lease.ttl`` is what etcd granted.
        """
        if not ttl > 0:
            raise ValueError("lease ttl must be > 0")
        try:
            # NB: not idempotent in etcd's eyes, but a repeated grant only leaves an
            # unused lease behind to expire; retrying elsewhere beats failing.
            result = await self._call("/v3/lease/grant", {"TTL": str(math.ceil(ttl))}, idempotent=True)
        except _EtcdError as exc:
            raise StoreUnavailable(f"etcd {exc.endpoint}: lease grant: {exc.message}") from exc
        if result.get("error"):
            raise StoreUnavailable(f"etcd: lease grant: {result['error']}")
        return Lease(id=_int(result, "ID"), ttl=float(_int(result, "TTL")))

    async def keepalive(self, lease_id: int) -> float:
        try:
            result = await self._call("/v3/lease/keepalive", {"ID": str(lease_id)}, idempotent=True)
        except _EtcdError as exc:
            raise LeaseExpired(f"lease {lease_id} has expired or was revoked (etcd {exc.endpoint})") from exc
        ttl = _int(result, "TTL")
        if ttl <= 0:  # etcd answers a keepalive of an unknown lease with TTL 0 (omitted)
            raise LeaseExpired(f"lease {lease_id} has expired or was revoked")
        return float(ttl)

    async def revoke(self, lease_id: int) -> None:
        try:
            await self._call("/v3/lease/revoke", {"ID": str(lease_id)}, idempotent=True)
        except _EtcdError:
            pass  # lease not found: already gone, which is what revoke wants

    async def watch(self, prefix: str, *, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        """Yield changes under ``prefix``; reconnects and resumes on connection loss.

        NB: like every async generator, the watch starts at the first ``__anext__``;
        without ``start_revision`` changes made before that are not seen. Callers
        that must not miss anything pass the revision from ``get_prefix`` + 1.
        """
        if self._closed:
            raise StoreUnavailable("etcd store is closed")
        key, end = _b64(prefix or b"\x00"), _b64(_prefix_end(prefix))
        next_rev = start_revision  # the first revision not yet delivered; None = "from now"
        failing_since: float | None = None
        backoff = _WATCH_BACKOFF_MIN
        last_error = "no endpoint answered"
        while True:
            endpoint = self.endpoints[self._current]
            create: dict[str, Any] = {"key": key, "range_end": end, "progress_notify": True}
            if next_rev is not None:
                create["start_revision"] = str(next_rev)
            established = False
            try:
                async with contextlib.AsyncExitStack() as stack:
                    # Until etcd confirms the watch (headers and the "created" line come
                    # together), a member gets the request timeout, not the idle one: a
                    # member that accepts but never answers must not hold the watch.
                    with anyio.fail_after(self.timeout):
                        if self._user and not self._token:
                            await self._authenticate(endpoint)
                        resp = await stack.enter_async_context(
                            self._client.stream(
                                "POST",
                                self._url(endpoint, "/v3/watch"),
                                json={"create_request": create},
                                headers=self._headers(),
                                timeout=httpx.Timeout(self.timeout, read=self._watch_idle_timeout),
                            )
                        )
                        if resp.status_code != 200:
                            body = (await resp.aread()).decode(errors="replace")
                            err = _parse_error(endpoint, resp.status_code, body)
                            if err.is_bad_token:
                                self._token = None
                            raise err
                        lines = resp.aiter_lines()
                        first = await anext(lines, None)
                    pending: str | None = first
                    while True:
                        if pending is not None:
                            line, pending = pending, None
                        else:
                            nxt = await anext(lines, None)
                            if nxt is None:
                                break
                            line = nxt
                        if not line.strip():
                            continue
                        doc = _json_object(line)
                        if isinstance(doc.get("error"), dict):
                            err = _parse_error(endpoint, 200, line)
                            if err.is_bad_token:
                                self._token = None
                            raise err
                        result = doc.get("result") or {}
                        if result.get("created"):
                            # Established: the outage, if any, is over.
                            established, failing_since, backoff = True, None, _WATCH_BACKOFF_MIN
                            if next_rev is None:
                                next_rev = self._revision(result) + 1
                            continue
                        compacted = _int(result, "compact_revision")
                        if compacted:
                            raise StoreUnavailable(
                                f"etcd {endpoint}: watch {prefix!r}: revision {next_rev} has been compacted "
                                f"(oldest available {compacted}); re-read and watch again"
                            )
                        if result.get("canceled"):
                            raise _EtcdError(endpoint, 200, 0, str(result.get("cancel_reason") or "watch canceled"))
                        events = result.get("events") or []
                        for ev in events:
                            kv = ev.get("kv") or {}
                            rev = _int(kv, "mod_revision")
                            is_delete = ev.get("type") == "DELETE"
                            # NB: one response carries whole revisions (a lease expiry deletes
                            # several keys at one revision), so advancing per event is safe:
                            # a disconnect can only fall between responses.
                            next_rev = rev + 1
                            yield WatchEvent(
                                type=WatchEventType.DELETE if is_delete else WatchEventType.PUT,
                                key=_unb64(kv.get("key")),
                                value="" if is_delete else _unb64(kv.get("value")),
                                revision=rev,
                            )
                        if not events and next_rev is not None:
                            # Progress notification: everything up to header.revision has been sent.
                            next_rev = max(next_rev, self._revision(result) + 1)
                    last_error = "stream closed by the server"
            except StoreUnavailable:
                raise
            except (*_TRANSPORT_ERRORS, _EtcdError) as exc:
                last_error = f"{endpoint}: {_describe(exc)}"
                if isinstance(exc, httpx.ReadTimeout) and established:
                    # Idle for watch_idle_timeout: resume at once, this is not an outage.
                    continue
            if self._closed:
                raise StoreUnavailable("etcd store is closed")
            self._skip(endpoint)
            now = anyio.current_time()
            if failing_since is None:
                failing_since = now
            elif now - failing_since > self._watch_resume_timeout:
                raise StoreUnavailable(
                    f"etcd {', '.join(self.endpoints)}: watch {prefix!r} could not be resumed at revision "
                    f"{next_rev} for {self._watch_resume_timeout:g}s; last error: {last_error}"
                )
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, _WATCH_BACKOFF_MAX)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._client.aclose()


def _describe(exc: BaseException) -> str:
    """A one-line reason for an error; httpx's messages can be empty (e.g. ReadTimeout)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
