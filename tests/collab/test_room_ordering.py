"""RoomOrder, a room's seqs and counts, on its own: each method keeps the invariants its
module states (synced <= durable <= last; every logged seq up to synced is in the document;
own appends above synced wait for the gap below them)."""

from __future__ import annotations

import pytest

from collab.sync.ordering import Logged, RoomOrder


def _check(order: RoomOrder) -> None:
    assert order.synced <= order.durable <= order.last
    assert all(order.synced < seq <= order.durable for seq in order.waiting)
    assert order.accepted >= 0
    assert order.tail_length >= 0


def _append(order: RoomOrder, *updates: bytes) -> list[int]:
    """Accept and number ``updates`` as the room and its writer do."""
    for _ in updates:
        order.accept()
    return [order.assign(update) for update in updates]


def test_a_fresh_order_starts_at_the_stored_head() -> None:
    order = RoomOrder(last_seq=7, tail_length=3)
    assert (order.last, order.durable, order.synced, order.tail_length) == (7, 7, 7, 3)
    assert order.all_durable
    assert order.accepted == 0


def test_accepted_updates_are_durable_only_once_persisted() -> None:
    order = RoomOrder(last_seq=0)
    assert order.accept() == 1
    assert order.accept() == 2
    assert not order.all_durable
    seqs = [order.assign(b"a"), order.assign(b"b")]
    assert seqs == [1, 2]
    assert (order.last, order.durable, order.synced) == (2, 0, 0)
    assert not order.durable_through(1)
    order.persisted(seqs[:1])
    assert order.durable_through(1)
    assert not order.durable_through(2)
    assert not order.all_durable
    order.persisted(seqs[1:])
    assert order.all_durable
    assert (order.last, order.durable, order.synced, order.tail_length) == (2, 2, 2, 2)
    _check(order)


def test_persisting_nothing_changes_nothing() -> None:
    order = RoomOrder(last_seq=3, tail_length=1)
    order.persisted([])
    assert (order.durable, order.synced, order.tail_length) == (3, 3, 1)


def test_reassigned_seqs_follow_the_other_writers_head() -> None:
    order = RoomOrder(last_seq=4)
    seqs = _append(order, b"a", b"b")
    assert seqs == [5, 6]
    again = order.reassign([(5, b"a"), (6, b"b")], after=9)
    assert again == [10, 11]
    assert order.last == 11
    # The old seqs are no longer ours: another server's rows 5 and 6 are theirs.
    assert order.classify(5, b"a") is Logged.THEIRS
    assert order.reassign([], after=20) == []
    assert order.last == 11
    _check(order)


def test_own_appends_above_a_gap_wait_until_it_is_filled() -> None:
    order = RoomOrder(last_seq=0)
    # Another server appended seq 1 first; ours were renumbered to 2 and 3.
    ours = order.reassign([(1, b"a"), (2, b"b")], after=1)
    assert ours == [2, 3]
    order.accept(), order.accept()
    order.persisted(ours)
    # Durable, but row 1 is not in the document: synced stays below it.
    assert (order.durable, order.synced) == (3, 0)
    assert order.waiting == {2, 3}
    assert order.classify(2, b"a") is Logged.GAP
    assert order.classify(1, b"x") is Logged.THEIRS
    order.adopt(1, Logged.THEIRS)
    # The gap filled, our waiting appends follow at once.
    assert order.synced == 3
    assert order.waiting == set()
    assert order.classify(2, b"a") is Logged.HAVE
    assert order.classify(3, b"b") is Logged.HAVE
    _check(order)


def test_a_row_of_ours_is_recognised_before_and_after_it_is_persisted() -> None:
    order = RoomOrder(last_seq=0)
    first, second = _append(order, b"a", b"b")
    # The notice of our append can come before the writer says it is persisted.
    assert order.classify(first, b"a") is Logged.OURS
    # Same seq, other bytes: another server's row took it first.
    assert order.classify(first, b"other") is Logged.THEIRS
    order.adopt(first, Logged.OURS)
    assert order.synced == 1
    assert order.waiting == set()
    assert order.tail_length == 0
    order.persisted([first, second])
    assert order.synced == 2  # the second was ours, next after synced
    assert order.waiting == set()  # the first, adopted already, does not wait
    assert order.tail_length == 2
    _check(order)


def test_adopting_another_servers_rows_grows_every_seq_and_the_tail() -> None:
    order = RoomOrder(last_seq=2, tail_length=2)
    for seq in (3, 4):
        kind = order.classify(seq, b"x")
        assert kind is Logged.THEIRS
        order.adopt(seq, kind)
    assert (order.last, order.durable, order.synced, order.tail_length) == (4, 4, 4, 4)
    assert order.all_durable  # nothing of ours is waiting
    _check(order)


def test_adopt_refuses_a_row_that_is_not_next() -> None:
    order = RoomOrder(last_seq=2)
    with pytest.raises(AssertionError):
        order.adopt(4, Logged.THEIRS)
    with pytest.raises(AssertionError):
        order.adopt(3, Logged.GAP)


def test_a_snapshot_moves_synced_and_drops_own_appends_it_covers() -> None:
    order = RoomOrder(last_seq=0)
    ours = order.reassign([(1, b"a"), (2, b"b"), (3, b"c")], after=4)
    assert ours == [5, 6, 7]
    for _ in ours:
        order.accept()
    order.persisted(ours)
    assert order.synced == 0
    assert not order.takes_snapshot(0)
    assert order.takes_snapshot(5)
    order.adopt_snapshot(5)
    # 5 is in the snapshot, 6 and 7 (ours, waiting) are next: synced follows them.
    assert (order.synced, order.durable, order.last) == (7, 7, 7)
    assert order.tail_length == 2
    assert not order.takes_snapshot(7)
    _check(order)


def test_a_snapshot_past_everything_known_leaves_no_tail() -> None:
    order = RoomOrder(last_seq=3, tail_length=3)
    order.adopt_snapshot(10)
    assert (order.synced, order.durable, order.last, order.tail_length) == (10, 10, 10, 0)


def test_compaction_counts_the_tail_from_the_durable_head() -> None:
    order = RoomOrder(last_seq=0)
    seqs = _append(order, b"a", b"b", b"c")
    order.persisted(seqs)
    assert order.tail_length == 3
    order.compacted(snapshot_seq=1)
    assert order.tail_length == 2
    order.compacted(snapshot_seq=9)  # another server compacted further
    assert order.tail_length == 0
    order.persisted([order.assign(b"d")])
    assert order.tail_length == 1
    order.forget_tail()
    assert order.tail_length == 0


def test_abandoning_releases_whoever_waits_for_durability() -> None:
    order = RoomOrder(last_seq=0)
    _append(order, b"a")
    order.accept()
    assert not order.all_durable
    order.abandon()
    assert order.all_durable
    assert order.durable_through(order.accepted)
    assert order.durable == 0  # nothing was persisted
