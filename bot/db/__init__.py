"""Persistence: migrations (`bot.db.upgrade`) and one repository per table."""

from .audit import AuditEntry, AuditFilter, AuditLog, VerifyResult
from .database import Databases, EmbeddedPostgres, open_databases, transaction
from .identity import BotIdentity, IdentityStore
from .pending_decryption import PendingDecryption, PendingEvent
from .rooms import RoomsRepo
from .staff import StaffRepo
from .sync_state import SyncState

__all__ = [
    "AuditEntry",
    "AuditFilter",
    "AuditLog",
    "BotIdentity",
    "Databases",
    "EmbeddedPostgres",
    "IdentityStore",
    "PendingDecryption",
    "PendingEvent",
    "RoomsRepo",
    "StaffRepo",
    "SyncState",
    "VerifyResult",
    "open_databases",
    "transaction",
]
