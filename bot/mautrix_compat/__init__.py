"""Every place Chaperone relies on mautrix internals, for want of a public hook, one module
per need so that each imports only what it uses (the audit commands start without mautrix's
client and crypto).

Each use names the private mautrix code it depends on. `tests/unit/test_mautrix_compat.py`
checks that code still exists and behaves as relied on here, so a mautrix upgrade that changes
it fails that test (with a message saying what to look at) instead of silently undoing what the
override is for. mautrix's public API is used everywhere else: the 429 pacing in
`bot/matrix/ratelimit.py`, for one, is an aiohttp client middleware, not an HTTPAPI override.
"""
