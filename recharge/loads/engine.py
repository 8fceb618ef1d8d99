"""The load steps that write: durably *loading* before the MAC2 leaves, post on a verified TAC, back to waiting
on a card's error status word, and the outcome of GET TRANSACTION PROVE — for any kind of load.

A kind of load (DD's orders, the wallet's loads) is a ``Book``: three groups of the group commit whose batch
functions change its own rows and move its money through the ledger (``recharge.ledger.transfers``, a pending
transfer reserved at creation: ``set_pending_timeouts`` holds it while loading, ``resolve_pending`` posts it).
The steps below are the same for every kind, and they always go through the shared ``LoadLanes``:

- ``mark_loading`` — the card's MAC1 verified (``pboc.credit``); the load is committed *loading* (its
  reservation can no longer time out or be voided) and only then may the CREDIT FOR LOAD script leave;
- ``finish`` — CREDIT FOR LOAD's reply: a verified TAC posts, an error status word releases (the card was not
  credited), anything else leaves the load *loading* for customer service;
- ``settle_proof`` — a lost outcome (DD21, the wallet's recover): the card's proof posts, ``9406`` releases,
  anything else stays loading.

The judgments (``judge_credit``, ``judge_proof``) only read the card's replies; ``settle`` writes a judged
outcome. Each writing step answers an ``Outcome`` naming what happened and the book's answer (the load, or its
refusal as a value).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from recharge.ledger.group_commit import Group
from recharge.loads import pboc
from recharge.loads.lanes import LoadLanes
from recharge.loads.pboc import CardStepError, InFlight, LoadKeys

L = TypeVar("L")  # a book's answer: its load as it is now, or the refusal


@dataclass(frozen=True, slots=True)
class Marking:
    """Mark ``load_id`` *loading* with what the proof covers; ``peer`` is where the MAC2 goes."""

    load_id: str
    load: InFlight
    peer: str | None = None


@dataclass(frozen=True, slots=True)
class Proven:
    """The card proved ``load_id`` credited: post it; ``balance_after`` is the card's balance."""

    load_id: str
    balance_after: int


@dataclass(frozen=True)
class Book(Generic[L]):
    """The groups of one kind of load: mark loading, post, release (back to paid / waiting)."""

    loading: Group[Marking, L]
    post: Group[Proven, L]
    release: Group[str, L]


class Result(StrEnum):
    POSTED = "posted"
    RELEASED = "released"  # the card was not credited: the load may be driven again
    LOADING = "loading"  # nothing proves either way: left loading, for recovery or customer service


@dataclass(frozen=True, slots=True)
class Outcome(Generic[L]):
    result: Result
    answer: L | None = None  # the book's answer (None: nothing was written)


def credit(keys: LoadKeys, card_no: str, amount: int, terminal_id: str, info: bytes,
           now: dt.datetime | None = None) -> pboc.Credit:
    """MAC1 verified and MAC2 made (``CardStepError`` otherwise); nothing written yet."""
    return pboc.credit(keys, card_no, amount, terminal_id, info, now or dt.datetime.now(dt.UTC))


async def mark_loading(lanes: LoadLanes, book: Book[L], load_id: str, made: pboc.Credit,
                       peer: str | None = None) -> L:
    """The load durably *loading* (committed): the caller sends ``made.script`` only when the answer is the
    load, not a refusal."""
    return await lanes.commit(book.loading, Marking(load_id, made.load, peer))


def judge_credit(keys: LoadKeys, load: InFlight, info: bytes) -> Result:
    """CREDIT FOR LOAD's reply list: a verified TAC (posted), an error status word (not credited: released), a
    ``9000`` whose TAC does not verify (still loading). ``CardStepError`` when it is malformed."""
    reply = pboc.single_reply(info)
    if reply.sw != pboc.SW_OK:
        return Result.RELEASED
    return Result.POSTED if pboc.tac_ok(keys, load, reply.body) else Result.LOADING


def judge_proof(keys: LoadKeys, load: InFlight | None, info: bytes) -> Result:
    """GET TRANSACTION PROVE's reply list: proven (posted), ``9406`` (not credited), else still loading.
    ``load`` None: what the proof covers was not stored, so only ``9406`` decides."""
    try:
        reply = pboc.single_reply(info)
    except CardStepError:
        return Result.LOADING
    if reply.sw == pboc.SW_NO_PROOF:
        return Result.RELEASED
    if load is not None and reply.sw == pboc.SW_OK and pboc.proof_ok(keys, load, reply.body):
        return Result.POSTED
    return Result.LOADING


async def settle(lanes: LoadLanes, book: Book[L], load_id: str, load: InFlight | None,
                 result: Result) -> Outcome[L]:
    """Write a judged outcome through the lanes: posted (the balance after of ``load``), released, or nothing
    (still loading)."""
    if result is Result.POSTED:
        assert load is not None
        posted: L = await lanes.commit(book.post, Proven(load_id, load.balance_after))
        return Outcome(result, posted)
    if result is Result.RELEASED:
        released: L = await lanes.commit(book.release, load_id)
        return Outcome(result, released)
    return Outcome(result)


async def finish(lanes: LoadLanes, book: Book[L], keys: LoadKeys, load_id: str, load: InFlight,
                 info: bytes) -> Outcome[L]:
    """CREDIT FOR LOAD's reply list. ``CardStepError`` (nothing written: still loading) when it is malformed."""
    return await settle(lanes, book, load_id, load, judge_credit(keys, load, info))


async def settle_proof(lanes: LoadLanes, book: Book[L], keys: LoadKeys, load_id: str, load: InFlight | None,
                       info: bytes) -> Outcome[L]:
    """The outcome of a lost load from the card's proof, written through the lanes (DD21, the wallet's
    recover)."""
    return await settle(lanes, book, load_id, load, judge_proof(keys, load, info))
