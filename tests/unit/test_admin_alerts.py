"""Management-room alerts from committed audit rows and from the sync loop's health."""

from __future__ import annotations

from typing import Any, cast

from bot.db.audit import AuditEntry
from bot.metrics import Metrics
from bot.service.admin_alerts import AdminAlerts
from bot.service.sync_loop import SyncLoop


class RecordingAlerts:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, text: str) -> None:
        self.sent.append(text)


class SyncState:
    last_error: str | None = None
    last_success: float | None = None


def make() -> tuple[AdminAlerts, RecordingAlerts, Metrics]:
    alerts, metrics = RecordingAlerts(), Metrics()
    return AdminAlerts(cast(Any, alerts), metrics), alerts, metrics


async def test_one_notice_per_batch_and_failures_counted() -> None:
    admin_alerts, alerts, metrics = make()
    await admin_alerts.on_committed(
        [
            AuditEntry("@p:s", "message.sent", "!r", "$1", details={"hmac": "x"}),
            AuditEntry("@p:s", "decryption.failed", "!r", "$2", details={"reason": "withheld"}),
            AuditEntry(
                "@s:s", "disclosure.external_member", "!r", "$3", "@x:evil", {"server": "evil"}
            ),
        ]
    )
    assert len(alerts.sent) == 1
    assert "$2" in alerts.sent[0] and "@x:evil" in alerts.sent[0]
    assert metrics.registry.get_sample_value("chaperone_decryption_failures_total") == 1.0
    await admin_alerts.on_committed([AuditEntry("@p:s", "message.sent", "!r", "$4")])
    assert len(alerts.sent) == 1  # nothing alert-worthy: no notice


async def test_sync_failure_announced_once_and_recovery_once() -> None:
    admin_alerts, alerts, _ = make()
    sync = SyncState()
    loop = cast(SyncLoop, sync)
    await admin_alerts.check_sync(loop)
    sync.last_error = "ConnectionDoesNotExistError (ref AB12CD34)"
    await admin_alerts.check_sync(loop)
    await admin_alerts.check_sync(loop)
    sync.last_error, sync.last_success = None, 1.0
    await admin_alerts.check_sync(loop)
    await admin_alerts.check_sync(loop)
    assert len(alerts.sent) == 2
    assert "AB12CD34" in alerts.sent[0] and "recovered" in alerts.sent[1]
