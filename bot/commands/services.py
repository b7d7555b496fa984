"""What command handlers may use: the services, built once by the composition root (bot.app).

Typed, so a handler using a service the app does not provide, or using it wrongly, is a type
error; a new service for commands is one field here and one argument where app.py builds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.clock import Clock
from bot.commands.registry import CommandRegistry
from bot.db.rooms import RoomsRepo
from bot.service.audit_tools import AuditTools
from bot.service.consent import ConsentService
from bot.service.consent_grants import ConsentGrants
from bot.service.policy import PolicyService
from bot.service.posture import PostureService
from bot.service.retention import RetentionService
from bot.service.room_new import RoomCreator
from bot.service.staff import StaffService
from bot.service.verification import VerificationService


class StatusSource(Protocol):
    """The lines of `status` (the app: sync, rooms, queues, retention, consent checks)."""

    async def status_lines(self) -> list[str]: ...


@dataclass(frozen=True)
class Services:
    registry: CommandRegistry
    prefix: str
    clock: Clock
    rooms: RoomsRepo
    policy: PolicyService
    posture: PostureService
    consent: ConsentService
    consent_grants: ConsentGrants
    staff_admin: StaffService
    audit_tools: AuditTools
    retention: RetentionService
    room_creator: RoomCreator
    verification: VerificationService
    status: StatusSource
    role_warning: str | None
    """Set when the bot's database role could rewrite the audit history."""
