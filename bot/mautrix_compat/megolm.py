"""mautrix's bookkeeping after a megolm decryption (see `bot.mautrix_compat`), for
`bot/matrix/megolm.py`, which decrypts over plain dicts the way mautrix's
`MegolmDecryptionMachine.decrypt_megolm_event` does over its event classes."""

from __future__ import annotations

from mautrix.crypto import InboundGroupSession, OlmMachine


async def ratchet_after_decrypt(
    machine: OlmMachine, session: InboundGroupSession, index: int
) -> None:
    """Record that message `index` of `session` was read, and ratchet or delete the session
    as mautrix's settings say.

    Relies on: `OlmMachine._ratchet_session(session, index)` (mautrix.crypto.decrypt_megolm),
    which `decrypt_megolm_event` calls after each decryption, and the session attributes
    `sender_key`, `signing_key` and `forwarding_chain` that `bot/matrix/megolm.py` reads for
    the sender's trust as mautrix does.
    """
    await machine._ratchet_session(session, index)
