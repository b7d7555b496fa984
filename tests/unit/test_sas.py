"""The SAS state machine (bot.policy.sas, bot.policy.sas_flows) against a second machine as the
peer, with real olm.Sas crypto: the happy paths both ways and both transports, every message out
of order, timeouts, hostile contents, and the bounds."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest

from bot.matrix.verification import OlmSasCrypto
from bot.policy.sas import (
    ACCEPT,
    CANCEL,
    DONE,
    KEY,
    MAC,
    READY,
    REQUEST,
    START,
    Code,
    Inbound,
    Outgoing,
    Party,
    SasFlow,
    State,
    Step,
)
from bot.policy.sas_content import short_code
from bot.policy.sas_flows import KEEP_ENDED_SECONDS, Kind, SasFlows

BOT = Party("@bot:hs", "BOTDEV")
ALICE = Party("@alice:hs", "ALICEDEV")
NOW_MS = 1_800_000_000_000
ROOM = "!dm:hs"
REQ_EVENT = "$request"


@dataclass
class Peer:
    """The other side: a pure SasFlow of its own, fed what the bot sends."""

    flow: SasFlow
    inbox: list[Outgoing] = field(default_factory=list)


def keys_of(party: Party, crypto_key: str = "K") -> dict[str, str]:
    return {f"ed25519:{party.device_id}": f"{party.device_id}-edkey"}


def bot_flows() -> SasFlows:
    return SasFlows(BOT)


def msg(type_: str, content: Any, sender: str = ALICE.user_id, room: bool = False) -> Inbound:
    if room:
        return Inbound(type_, sender, content, room_id=ROOM, event_id="$e", ts_ms=NOW_MS)
    return Inbound(type_, sender, content)


def to_inbound(out: Outgoing, sender: str) -> Inbound:
    return Inbound(out.type, sender, copy.deepcopy(out.content), room_id=out.room_id)


def take_on(flows: SasFlows, m: Inbound, now: float = 0.0) -> tuple[SasFlow, Step]:
    route = flows.classify(m, now, NOW_MS)
    assert route.kind is Kind.NEW, route
    flow, step = flows.open_incoming(m, route, OlmSasCrypto(), now, keys_of(BOT))
    assert flow is not None
    return flow, step


def run_to_sas(room: bool = False) -> tuple[SasFlows, SasFlow, SasFlow, list[Outgoing]]:
    """Alice requests, the bot readies, Alice starts; returns when both have the short code."""
    flows = bot_flows()
    txn = REQ_EVENT if room else "txn1"
    alice = SasFlow(
        txn=txn,
        us=ALICE,
        peer_user=BOT.user_id,
        peer_device=BOT.device_id,
        crypto=OlmSasCrypto(),
        now=0,
        room_id=ROOM if room else None,
        our_keys=keys_of(ALICE),
        we_requested=True,
    )
    alice.their_keys = keys_of(BOT)
    if room:
        request = Inbound(
            REQUEST,
            ALICE.user_id,
            {"from_device": ALICE.device_id, "methods": ["m.sas.v1"], "to": BOT.user_id},
            room_id=ROOM,
            event_id=REQ_EVENT,
            ts_ms=NOW_MS,
        )
    else:
        request = msg(REQUEST, alice.request_content(NOW_MS))
    flow, step = take_on(flows, request)
    assert step.started and [o.type for o in step.send] == [READY]
    flow.their_keys = keys_of(ALICE)
    pending = list(step.send)
    bot_sas = alice_sas = None
    while pending:
        out = pending.pop(0)
        alice_step = alice.receive(to_inbound(out, BOT.user_id), 1.0)
        alice_sas = alice_sas or alice_step.sas
        for reply in alice_step.send:
            bot_step = flow.receive(to_inbound(reply, ALICE.user_id), 1.0)
            bot_sas = bot_sas or bot_step.sas
            pending += bot_step.send
    assert flow.state is State.KEYS and alice.state is State.KEYS
    assert bot_sas is not None and bot_sas == alice_sas
    return flows, flow, alice, []


@pytest.mark.parametrize("room", [False, True], ids=["to-device", "in-room"])
def test_incoming_request_completes_only_after_the_operator_confirms(room: bool) -> None:
    _, flow, alice, _ = run_to_sas(room)
    alice_confirm = alice.confirm()  # Alice compared first: her MAC arrives early
    assert [o.type for o in alice_confirm.send] == [MAC]
    early = flow.receive(to_inbound(alice_confirm.send[0], ALICE.user_id), 2.0)
    assert early.send == [] and not early.done and flow.state is State.KEYS
    step = flow.confirm()
    assert [o.type for o in step.send] == [MAC, DONE]
    assert step.done and step.verified_keys == keys_of(ALICE)
    if room:
        assert all(o.room_id == ROOM for o in step.send)
        assert step.send[0].content["m.relates_to"] == {
            "rel_type": "m.reference",
            "event_id": REQ_EVENT,
        }
    else:
        assert step.send[0].content["transaction_id"] == "txn1"
    finish = alice.receive(to_inbound(step.send[0], BOT.user_id), 2.0)
    assert finish.done and finish.verified_keys == keys_of(BOT)


def test_operator_confirms_first_then_their_mac_finishes() -> None:
    _, flow, alice, _ = run_to_sas()
    step = flow.confirm()
    assert [o.type for o in step.send] == [MAC] and flow.state is State.CONFIRMED
    alice.receive(to_inbound(step.send[0], BOT.user_id), 2.0)
    theirs = alice.confirm()
    last = flow.receive(to_inbound(theirs.send[0], ALICE.user_id), 2.0)
    assert last.done and [o.type for o in last.send] == [DONE]
    assert flow.receive(to_inbound(theirs.send[-1], ALICE.user_id), 2.0).ignored


@pytest.mark.parametrize("room", [False, True], ids=["to-device", "in-room"])
def test_bot_initiated_flow(room: bool) -> None:
    flows = bot_flows()
    txn = REQ_EVENT if room else "bot-txn"
    flow = flows.open_outgoing(
        txn, ALICE.user_id, None, OlmSasCrypto(), 0.0, keys_of(BOT), ROOM if room else None
    )
    assert flow is not None
    flow.their_keys = keys_of(ALICE)
    alice = SasFlow(
        txn=txn,
        us=ALICE,
        peer_user=BOT.user_id,
        peer_device=BOT.device_id,
        crypto=OlmSasCrypto(),
        now=0,
        room_id=ROOM if room else None,
        our_keys=keys_of(ALICE),
    )
    alice.their_keys = keys_of(BOT)
    pending = alice.ready().send
    codes = []
    while pending:
        out = pending.pop(0)
        route = flows.classify(to_inbound(out, ALICE.user_id), 1.0, NOW_MS)
        assert route.kind is Kind.FLOW
        step = flow.receive(to_inbound(out, ALICE.user_id), 1.0)
        codes.append(step.sas)
        for reply in step.send:
            assert reply.device == ALICE.device_id
            a = alice.receive(to_inbound(reply, BOT.user_id), 1.0)
            codes.append(a.sas)
            pending += a.send
    assert flow.we_started and flow.state is State.KEYS
    assert len({c for c in codes if c is not None}) == 1
    alice_mac = alice.confirm().send[0]
    flow.receive(to_inbound(alice_mac, ALICE.user_id), 2.0)
    assert flow.confirm().done


def test_bare_to_device_start_is_taken_on_like_legacy_clients_send_it() -> None:
    flows = bot_flows()
    alice = SasFlow(
        txn="legacy",
        us=ALICE,
        peer_user=BOT.user_id,
        peer_device=BOT.device_id,
        crypto=OlmSasCrypto(),
        now=0,
    )
    alice._start(step := Step(), 0.0)
    flow, answer = take_on(flows, to_inbound(step.send[0], ALICE.user_id))
    assert answer.started and [o.type for o in answer.send] == [ACCEPT]
    assert flow.state is State.ACCEPTED


def test_mismatched_commitment_and_sas_mac_mismatch() -> None:
    # The bot started; Alice's key does not match her commitment.
    flows = bot_flows()
    flow = flows.open_outgoing("t", ALICE.user_id, None, OlmSasCrypto(), 0.0, keys_of(BOT))
    assert flow is not None
    flow.receive(
        msg(READY, {"from_device": "D", "methods": ["m.sas.v1"], "transaction_id": "t"}), 0
    )
    accept = {
        "key_agreement_protocol": "curve25519-hkdf-sha256",
        "hash": "sha256",
        "message_authentication_code": "hkdf-hmac-sha256.v2",
        "short_authentication_string": ["decimal", "emoji"],
        "commitment": "not-it",
        "transaction_id": "t",
    }
    assert [o.type for o in flow.receive(msg(ACCEPT, accept), 0).send] == [KEY]
    step = flow.receive(msg(KEY, {"key": OlmSasCrypto().public_key, "transaction_id": "t"}), 0)
    assert step.cancelled is Code.MISMATCHED_COMMITMENT
    assert step.send[0].content["code"] == "m.mismatched_commitment"


def test_a_forged_mac_is_a_key_mismatch() -> None:
    _, flow, alice, _ = run_to_sas()
    mac = copy.deepcopy(alice.confirm().send[0].content)
    key_id = next(iter(mac["mac"]))
    mac["mac"][key_id] = "A" * 43
    assert flow.receive(msg(MAC, mac), 2.0).cancelled is Code.KEY_MISMATCH


def test_a_mac_that_omits_the_device_key_is_refused() -> None:
    _, flow, alice, _ = run_to_sas()
    alice.our_keys = {"ed25519:SOMEONEELSE": "x"}
    mac = alice.confirm().send[0]
    assert flow.receive(to_inbound(mac, ALICE.user_id), 2.0).cancelled is Code.KEY_MISMATCH


def test_operator_rejects_with_mismatched_sas() -> None:
    _, flow, _, _ = run_to_sas()
    step = flow.cancel(Code.MISMATCHED_SAS)
    assert step.send[0].content["code"] == "m.mismatched_sas" and flow.state is State.CANCELLED
    assert flow.confirm().ignored  # nothing to confirm after a cancel


# -- every message out of order --------------------------------------------------------------

VALID: dict[str, dict[str, Any]] = {
    READY: {"from_device": ALICE.device_id, "methods": ["m.sas.v1"]},
    START: {
        "from_device": ALICE.device_id,
        "method": "m.sas.v1",
        "key_agreement_protocols": ["curve25519-hkdf-sha256"],
        "hashes": ["sha256"],
        "message_authentication_codes": ["hkdf-hmac-sha256.v2"],
        "short_authentication_string": ["decimal", "emoji"],
    },
    ACCEPT: {
        "key_agreement_protocol": "curve25519-hkdf-sha256",
        "hash": "sha256",
        "message_authentication_code": "hkdf-hmac-sha256.v2",
        "short_authentication_string": ["decimal"],
        "commitment": "c" * 43,
    },
    KEY: {"key": "k" * 43},
    MAC: {"mac": {"ed25519:ALICEDEV": "m" * 43}, "keys": "k" * 43},
    DONE: {},
    REQUEST: {"from_device": ALICE.device_id, "methods": ["m.sas.v1"], "timestamp": NOW_MS},
}

# State the bot's flow is in (reached as the peer answering a request) -> messages allowed.
ALLOWED = {
    State.READY: {START},
    State.ACCEPTED: {KEY},
    State.KEYS: {MAC},
}


def flow_in(state: State) -> SasFlow:
    _, flow, alice, _ = run_to_sas() if state is State.KEYS else (None, None, None, None)
    if flow is not None:
        return flow
    flows = bot_flows()
    flow, _ = take_on(flows, msg(REQUEST, {**VALID[REQUEST], "transaction_id": "txn1"}))
    if state is State.ACCEPTED:
        flow.receive(msg(START, {**VALID[START], "transaction_id": "txn1"}), 0)
    assert flow.state is state
    return flow


@pytest.mark.parametrize("state", list(ALLOWED), ids=lambda s: s.value)
@pytest.mark.parametrize("type_", [REQUEST, READY, START, ACCEPT, KEY, MAC, DONE])
def test_every_message_out_of_order_is_cancelled(state: State, type_: str) -> None:
    if type_ in ALLOWED[state]:
        pytest.skip("in order")
    flow = flow_in(state)
    step = flow.receive(msg(type_, {**VALID[type_], "transaction_id": "txn1"}), 1.0)
    assert step.cancelled is Code.UNEXPECTED_MESSAGE
    assert [o.type for o in step.send] == [CANCEL]
    assert flow.state is State.CANCELLED


def test_a_cancel_from_the_peer_ends_the_flow_without_an_answer() -> None:
    flow = flow_in(State.ACCEPTED)
    step = flow.receive(msg(CANCEL, {"code": "m.user", "transaction_id": "txn1"}), 1.0)
    assert step.cancelled is Code.USER and step.cancelled_by_peer and step.send == []
    weird = flow_in(State.READY).receive(msg(CANCEL, {"code": ["x"], "transaction_id": "t"}), 1)
    assert weird.cancelled is Code.USER and weird.send == []


# -- timeouts with a fake clock --------------------------------------------------------------


def test_a_request_nobody_starts_times_out_after_ten_minutes() -> None:
    flows = bot_flows()
    flow, _ = take_on(flows, msg(REQUEST, {**VALID[REQUEST], "transaction_id": "txn1"}))
    assert flows.expire(599.0) == []
    [(expired, step)] = flows.expire(600.0)
    assert expired is flow and step.cancelled is Code.TIMEOUT
    assert step.send[0].content == {
        "code": "m.timeout",
        "reason": "The verification took too long",
        "transaction_id": "txn1",
    }
    # Remembered a while (a late message is quiet), then forgotten.
    assert flows.classify(
        msg(KEY, {**VALID[KEY], "transaction_id": "txn1"}), 601, NOW_MS
    ).kind is (Kind.FLOW)
    flows.expire(600.0 + KEEP_ENDED_SECONDS)
    assert "txn1" not in flows.flows


def test_a_late_message_after_the_deadline_is_a_timeout() -> None:
    flow = flow_in(State.READY)
    step = flow.receive(msg(START, {**VALID[START], "transaction_id": "txn1"}), 700.0)
    assert step.cancelled is Code.TIMEOUT


def test_the_operator_wait_counts_against_the_flow_deadline() -> None:
    from datetime import UTC, datetime

    from bot.clock import FakeClock

    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    flows = bot_flows()
    flow, _ = take_on(flows, msg(REQUEST, {**VALID[REQUEST], "transaction_id": "txn1"}), 0.0)
    clock.advance(30)
    flow.receive(msg(START, {**VALID[START], "transaction_id": "txn1"}), clock.monotonic())
    clock.advance(599)
    assert flows.expire(clock.monotonic()) == []
    clock.advance(1)
    assert [s.cancelled for _, s in flows.expire(clock.monotonic())] == [Code.TIMEOUT]


@pytest.mark.parametrize(
    "sent_ms, kind",
    [(NOW_MS - 601_000, Kind.IGNORE), (NOW_MS + 301_000, Kind.IGNORE), (NOW_MS - 5_000, Kind.NEW)],
    ids=["too-old", "from-the-future", "fresh"],
)
def test_stale_requests_are_ignored(sent_ms: int, kind: Kind) -> None:
    content = {**VALID[REQUEST], "timestamp": sent_ms, "transaction_id": "t"}
    assert bot_flows().classify(msg(REQUEST, content), 0.0, NOW_MS).kind is kind


# -- routing, methods, mismatches ------------------------------------------------------------


def test_unknown_transaction_is_answered_to_device_and_ignored_in_a_room() -> None:
    flows = bot_flows()
    route = flows.classify(msg(KEY, {"key": "k", "transaction_id": "nope"}), 0.0, NOW_MS)
    assert route.kind is Kind.ANSWER and route.step is not None
    assert route.step.send[0].content["code"] == "m.unknown_transaction"
    again = flows.classify(msg(KEY, {"key": "k", "transaction_id": "nope2"}), 1.0, NOW_MS)
    assert again.kind is Kind.IGNORE  # one answer a minute per sender
    for type_ in (CANCEL, DONE):
        quiet = flows.classify(msg(type_, {"transaction_id": "x"}), 100.0, NOW_MS)
        assert quiet.kind is Kind.IGNORE
    related = {**VALID[KEY], "m.relates_to": {"rel_type": "m.reference", "event_id": "$other"}}
    assert flows.classify(msg(KEY, related, room=True), 200.0, NOW_MS).kind is Kind.IGNORE


@pytest.mark.parametrize(
    "field_, value",
    [
        ("method", "m.reciprocate.v1"),
        ("key_agreement_protocols", ["curve25519"]),
        ("hashes", ["sha512"]),
        ("message_authentication_codes", ["hmac-sha256"]),
        ("short_authentication_string", ["words"]),
    ],
)
def test_a_start_with_nothing_in_common_is_unknown_method(field_: str, value: Any) -> None:
    flow = flow_in(State.READY)
    step = flow.receive(msg(START, {**VALID[START], field_: value, "transaction_id": "t"}), 1)
    assert step.cancelled is Code.UNKNOWN_METHOD


def test_the_older_mac_method_is_chosen_when_it_is_all_the_peer_has() -> None:
    flow = flow_in(State.READY)
    start = {**VALID[START], "message_authentication_codes": ["hkdf-hmac-sha256"]}
    step = flow.receive(msg(START, {**start, "transaction_id": "t"}), 1)
    assert step.send[0].content["message_authentication_code"] == "hkdf-hmac-sha256"


def test_a_request_without_sas_is_new_but_marked_unknown_method() -> None:
    content = {**VALID[REQUEST], "methods": ["m.qr_code.show.v1"], "transaction_id": "t"}
    route = bot_flows().classify(msg(REQUEST, content), 0.0, NOW_MS)
    assert route.kind is Kind.NEW and route.reason == "unknown method"


def test_another_user_on_a_known_transaction() -> None:
    flows = bot_flows()
    take_on(flows, msg(REQUEST, {**VALID[REQUEST], "transaction_id": "txn1"}))
    mallory = msg(START, {**VALID[START], "transaction_id": "txn1"}, sender="@mallory:hs")
    route = flows.classify(mallory, 1.0, NOW_MS)
    assert route.kind is Kind.ANSWER and route.step is not None
    [out] = route.step.send
    assert out.user == "@mallory:hs" and out.content["code"] == "m.user_mismatch"
    assert flows.flows["txn1"].state is State.READY  # the real flow goes on
    # The flow itself refuses a stranger too (defence in depth).
    assert flows.flows["txn1"].receive(mallory, 1.0).cancelled is Code.USER_MISMATCH


def test_a_start_from_another_device_of_the_same_user_is_a_user_mismatch() -> None:
    flow = flow_in(State.READY)
    other = {**VALID[START], "from_device": "OTHER", "transaction_id": "txn1"}
    assert flow.receive(msg(START, other), 1.0).cancelled is Code.USER_MISMATCH


def test_a_second_device_readying_our_request_gets_m_accepted() -> None:
    flows = bot_flows()
    flow = flows.open_outgoing("t", ALICE.user_id, None, OlmSasCrypto(), 0.0, keys_of(BOT))
    assert flow is not None
    flow.receive(msg(READY, {**VALID[READY], "transaction_id": "t"}), 0.0)
    late = msg(READY, {**VALID[READY], "from_device": "PHONE", "transaction_id": "t"})
    route = flows.classify(late, 1.0, NOW_MS)
    assert route.kind is Kind.ANSWER and route.step is not None
    [out] = route.step.send
    assert out.device == "PHONE" and out.content["code"] == "m.accepted"


def test_simultaneous_starts_the_lower_user_wins() -> None:
    flows = bot_flows()
    flow = flows.open_outgoing("t", ALICE.user_id, None, OlmSasCrypto(), 0.0, keys_of(BOT))
    assert flow is not None
    flow.receive(msg(READY, {**VALID[READY], "transaction_id": "t"}), 0.0)
    assert flow.state is State.STARTED
    # "@alice" < "@bot": Alice's start wins and the bot becomes the accepting side.
    step = flow.receive(msg(START, {**VALID[START], "transaction_id": "t"}), 0.0)
    assert [o.type for o in step.send] == [ACCEPT] and not flow.we_started


def test_requests_in_a_room_for_someone_else_are_not_ours() -> None:
    content = {"from_device": "D", "methods": ["m.sas.v1"], "to": "@carol:hs"}
    route = bot_flows().classify(msg(REQUEST, content, room=True), 0.0, NOW_MS)
    assert route.kind is Kind.IGNORE and route.reason == "request for someone else"


def test_a_newer_request_supersedes_the_users_open_flow() -> None:
    flows = bot_flows()
    old, _ = take_on(flows, msg(REQUEST, {**VALID[REQUEST], "transaction_id": "a"}))
    _, step = take_on(flows, msg(REQUEST, {**VALID[REQUEST], "transaction_id": "b"}))
    assert old.state is State.CANCELLED
    assert [(o.type, o.content.get("transaction_id")) for o in step.send] == [
        (CANCEL, "a"),
        (READY, "b"),
    ]


def test_open_flows_are_bounded() -> None:
    flows = SasFlows(BOT, max_flows=3)
    for i in range(3):
        sender = f"@u{i}:hs"
        take_on(flows, msg(REQUEST, {**VALID[REQUEST], "transaction_id": f"t{i}"}, sender=sender))
    m = msg(REQUEST, {**VALID[REQUEST], "transaction_id": "t9"}, sender="@u9:hs")
    route = flows.classify(m, 0.0, NOW_MS)
    flow, step = flows.open_incoming(m, route, OlmSasCrypto(), 0.0, keys_of(BOT))
    assert flow is None and step.send[0].content["code"] == "m.user"
    assert flows.open_count() == 3
    assert flows.open_outgoing("x", "@v:hs", None, OlmSasCrypto(), 0.0, {}) is None


# -- hostile contents ------------------------------------------------------------------------

HOSTILE: list[Any] = [
    None,
    [],
    "string",
    42,
    {"transaction_id": ["list"]},
    {"transaction_id": "t" * 10_000},
    {"transaction_id": "txn1", "from_device": None},
    {"transaction_id": "txn1", "from_device": "D" * 1000, "methods": ["m.sas.v1"]},
    {"transaction_id": "txn1", "methods": "m.sas.v1", "from_device": "D"},
    {"transaction_id": "txn1", "methods": ["x"] * 1000, "from_device": "D"},
    {"transaction_id": "txn1", "key": {"nested": True}},
    {"transaction_id": "txn1", "key": "k" * 100_000},
    {"transaction_id": "txn1", "mac": "notadict", "keys": "k"},
    {"transaction_id": "txn1", "mac": {str(i): "m" for i in range(1000)}, "keys": "k"},
    {"transaction_id": "txn1", "mac": {"ed25519:X": 5}, "keys": "k"},
    {"transaction_id": "txn1", "\ud800": "\x00", "timestamp": True},
    {"transaction_id": "txn1", "m.relates_to": "x"},
]


@pytest.mark.parametrize("content", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize("type_", [REQUEST, READY, START, ACCEPT, KEY, MAC, DONE, CANCEL])
@pytest.mark.parametrize("state", [State.READY, State.ACCEPTED, State.KEYS], ids=str)
def test_hostile_contents_never_raise(content: Any, type_: str, state: State) -> None:
    flows = bot_flows()
    flow = flow_in(state)
    flows.flows["txn1"] = flow
    for room in (False, True):
        route = flows.classify(msg(type_, content, room=room), 1.0, NOW_MS)
        if route.kind is Kind.FLOW:
            assert route.flow is not None
            step = route.flow.receive(msg(type_, content), 1.0)
            if step.cancelled is not None and not step.cancelled_by_peer:
                assert step.cancelled in set(Code)
        elif route.kind is Kind.NEW:
            flows.open_incoming(
                msg(type_, content, room=room), route, OlmSasCrypto(), 1.0, keys_of(BOT)
            )


def test_a_key_that_is_not_a_curve25519_key_is_an_invalid_message() -> None:
    flow = flow_in(State.ACCEPTED)
    step = flow.receive(msg(KEY, {"key": "not base64 !!", "transaction_id": "txn1"}), 1.0)
    assert step.cancelled is Code.INVALID_MESSAGE


def test_short_code_matches_the_spec_bit_layout() -> None:
    code = short_code(bytes([0b00000100, 0b00100000, 0, 0, 0, 0]))
    # 6-bit groups: 000001 000010 000000 ... -> Cat, Lion, Dog, ...
    assert [name for _, name in code.emoji] == ["Cat", "Lion", "Dog", "Dog", "Dog", "Dog", "Dog"]
    # 13-bit groups: 0000010000100 = 132; then zeros
    assert code.decimals == (1132, 1000, 1000)
    assert short_code(b"\xff" * 6).decimals == (9191, 9191, 9191)


def test_short_code_matches_vodozemac_on_the_same_bytes() -> None:
    # Vector from vodozemac's EstablishedSas.bytes(): these SAS bytes gave emoji indices
    # 7 26 9 45 32 25 38 and decimals 1948 3486 1204 (a second implementation agrees).
    code = short_code(bytes([29, 162, 109, 129, 153, 138]))
    from bot.policy.sas import EMOJI

    assert code.emoji == tuple(EMOJI[i] for i in (7, 26, 9, 45, 32, 25, 38))
    assert code.decimals == (1948, 3486, 1204)
