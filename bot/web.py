"""HTTP endpoints: /health, /ready, /metrics, and the audit API behind a bearer token.

The server starts before the bot has its database (a warm standby answers /health and says
why it is not ready); `attach()` hands it the running parts once the bot is active.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from mautrix.util.async_db import Database
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.clock import Clock
from bot.config import HttpConfig
from bot.db.audit import AuditEntry, AuditLog
from bot.db.unit_of_work import record_audit
from bot.metrics import Metrics
from bot.service.audit_cli import FILTER_KEYS, FilterError, parse_filters
from bot.service.audit_tools import AuditTools, StreamedExport, export_lines
from bot.service.failures import error_reference
from bot.service.sync_loop import SyncLoop

log = logging.getLogger("chaperone.web")

JSONL = "application/x-ndjson"
STREAM_CHUNK = 64 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


UNAUTHORIZED_AUDIT_WINDOW = 60.0


@dataclass(frozen=True)
class BotParts:
    """What the endpoints read, available once the bot is active."""

    db: Database
    audit: AuditLog
    audit_tools: AuditTools
    sync_loop: SyncLoop


class WebServer:
    def __init__(
        self,
        config: HttpConfig,
        metrics: Metrics,
        clock: Clock,
        *,
        max_sync_lag: float = 90.0,
        db_timeout: float = 2.0,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.max_sync_lag = max_sync_lag
        self.db_timeout = db_timeout
        self.parts: BotParts | None = None
        self.waiting_reason = "starting"
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._refusals: dict[tuple[str, str], tuple[float, int]] = {}  # (remote, reason)
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/ready", self.ready)
        app.router.add_get("/metrics", self.metrics_text)
        app.router.add_get("/api/v1/audit", self._authorized(self.audit_export))
        app.router.add_get("/api/v1/audit/verify", self._authorized(self.audit_verify))
        self.app = app

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None)  # query strings carry user IDs
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("HTTP endpoints on %s:%d", self.config.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def attach(self, parts: BotParts) -> None:
        self.parts = parts

    # -- probes -----------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def ready(self, request: web.Request) -> web.Response:
        reasons = await self.not_ready_reasons()
        if reasons:
            return web.json_response({"ready": False, "reason": "; ".join(reasons)}, status=503)
        return web.json_response({"ready": True})

    async def not_ready_reasons(self) -> list[str]:
        parts = self.parts
        if parts is None:
            return [self.waiting_reason]
        reasons = []
        try:
            await asyncio.wait_for(parts.db.fetchval("SELECT 1"), self.db_timeout)
        except Exception as e:
            reasons.append(f"postgres unreachable ({type(e).__name__})")
        sync = parts.sync_loop
        lag = sync.lag_seconds()
        if sync.last_error:
            reasons.append(f"sync failing: {sync.last_error}")
        elif lag is None:
            reasons.append("sync: first batch not processed yet")
        elif lag > self.max_sync_lag:
            reasons.append(f"sync stalled: last batch {lag:.0f} s ago")
        return reasons

    async def metrics_text(self, request: web.Request) -> web.Response:
        if self.parts is not None:
            lag = self.parts.sync_loop.lag_seconds()
            if lag is not None:
                self.metrics.sync_lag.set(lag)
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    # -- the audit API ----------------------------------------------------------------------

    def _authorized(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            reason = self._token_problem(request.headers.get("Authorization", ""))
            if reason is not None:
                await self._audit_unauthorized(request, reason)
                return web.json_response(
                    {"error": "missing or invalid bearer token"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="chaperone"'},
                )
            if self.parts is None:
                return _error(503, f"not ready: {self.waiting_reason}")
            try:
                return await handler(request)
            except (asyncio.CancelledError, ConnectionResetError, _StreamBroken):
                raise  # mid-stream: the connection is dropped, never a clean (short) end
            except Exception:
                ref = error_reference()
                log.warning("%s failed (ref %s)", request.path, ref, exc_info=True)
                return _error(503, f"unavailable (reference {ref}); see /ready")

        return guarded

    def _token_problem(self, header: str) -> str | None:
        expected = self.config.api_token
        if not expected:
            return "no http.api_token configured"
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return "missing token"
        # aiohttp hands header bytes that are not UTF-8 over as lone surrogates
        # (surrogateescape), which encode() refuses: without this, a 500 and no audit row.
        try:
            token = given.strip().encode()
        except UnicodeEncodeError:
            return "malformed token"
        if not hmac.compare_digest(token, expected.encode()):
            return "wrong token"
        return None

    async def _audit_unauthorized(self, request: web.Request, reason: str) -> None:
        if self.parts is None:
            return
        # One row per address and reason per minute; the refusals in between are counted in
        # the next row: a client hammering the port must not grow the audit log without bound.
        remote = request.remote or "?"
        now = self.clock.monotonic()
        key = (remote, reason)
        since, suppressed = self._refusals.get(key, (None, 0))
        if since is not None and now - since < UNAUTHORIZED_AUDIT_WINDOW:
            self._refusals[key] = (since, suppressed + 1)
            return
        if len(self._refusals) > 10_000:  # many addresses: forget the quiet ones
            self._refusals = {
                k: v for k, v in self._refusals.items() if now - v[0] < UNAUTHORIZED_AUDIT_WINDOW
            }
        self._refusals[key] = (now, 0)
        log.warning("Refused %s %s: %s", request.method, request.path, reason)
        entry = AuditEntry(
            actor="system",
            action="http.unauthorized",
            details={
                "path": request.path,
                "reason": reason,
                "remote": remote,
                "refused_since_previous_row": suppressed,
            },
        )
        try:
            await record_audit(self.parts.audit, [entry])
        except Exception:
            log.warning("Could not audit a refused request (ref %s)", error_reference())

    async def audit_export(self, request: web.Request) -> web.StreamResponse:
        assert self.parts is not None
        unknown = [k for k in request.query if k not in FILTER_KEYS]
        if unknown:
            return _error(
                400, f"unknown parameter '{unknown[0]}'; expected any of {', '.join(FILTER_KEYS)}"
            )
        repeated = [k for k in request.query if len(request.query.getall(k)) > 1]
        if repeated:
            return _error(400, f"parameter '{repeated[0]}' is given twice; give it once")
        try:
            filters = parse_filters([f"{k}={v}" for k, v in request.query.items()])
        except FilterError as e:
            return _error(400, str(e))
        response = web.StreamResponse(headers={"Content-Type": JSONL})
        record = StreamedExport(
            self.parts.audit,
            "system",
            filters,
            "jsonl",
            extra={"via": "http", "remote": request.remote or "?"},
        )
        rows, sent, buffer, size = 0, 0, [], 0
        async with aclosing(export_lines(self.parts.audit, filters, "jsonl")) as lines:
            # The first row is read before the response starts: a database failure then
            # still gets a proper 503 rather than a cut-off 200. The export is on the record
            # before anything goes out, however it ends (the snapshot is already taken, so
            # that row is not part of this export).
            first = await anext(lines, None)
            await record.started()
            try:
                await response.prepare(request)
                if first is not None:
                    rows, buffer, size = 1, [first], len(first)
                    async for line in lines:
                        rows += 1
                        buffer.append(line)
                        size += len(line)
                        if size >= STREAM_CHUNK:
                            await response.write("".join(buffer).encode())
                            sent, buffer, size = rows, [], 0
                if buffer:
                    await response.write("".join(buffer).encode())
                    sent = rows
                await response.write_eof()
            except Exception as e:
                ref = error_reference()
                log.warning("Audit export broke off after %d rows (ref %s)", sent, ref)
                gone = isinstance(e, ConnectionError)  # aiohttp's reset errors are ones too
                reason = "client disconnected" if gone else f"failed ({type(e).__name__})"
                await self._record_cut_short(record, sent, reason)
                raise _StreamBroken(ref) from e
        await record.finished(rows)
        return response

    async def _record_cut_short(self, record: StreamedExport, sent: int, reason: str) -> None:
        try:
            await record.cut_short(sent, reason)
        except Exception:  # the started row stands; the log says why the outcome is missing
            log.warning("Could not audit a cut-short export (ref %s)", error_reference())

    async def audit_verify(self, request: web.Request) -> web.Response:
        assert self.parts is not None
        result = await self.parts.audit_tools.verify(
            actor="system", room_id=None, event_id=None, via="http"
        )
        if result.ok:
            return web.json_response({"ok": True, "rows": result.rows})
        body: dict[str, Any] = {"ok": False, "first_broken_seq": result.first_broken_seq}
        if result.truncated_after_seq is not None:
            body["truncated_after_seq"] = result.truncated_after_seq
        if result.checkpoint_mismatch_seq is not None:
            body["checkpoint_mismatch_seq"] = result.checkpoint_mismatch_seq
        return web.json_response(body, status=409)


class _StreamBroken(Exception):
    """The export failed after the 200 went out: the client must see a broken transfer."""


def _error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)
