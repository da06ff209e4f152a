"""When a server may be alone (collab.sync.other_nodes), on a clock of the test's own."""

from __future__ import annotations

from collab.sync.other_nodes import OtherNodes


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_alone_only_after_listening_three_intervals_and_hearing_no_one() -> None:
    clock = Clock()
    nodes = OtherNodes(interval_s=2.0, clock=clock)
    assert nodes.may_exist  # not listening: it cannot know
    nodes.listening()
    clock.now += 5.9
    assert nodes.may_exist  # the others' "here" may still be on its way
    clock.now += 0.2
    assert not nodes.may_exist


def listened_alone(clock: Clock) -> OtherNodes:
    """Nodes that have listened long enough to know they are alone."""
    nodes = OtherNodes(interval_s=2.0, clock=clock)
    nodes.listening()
    clock.now += 10
    assert not nodes.may_exist
    return nodes


def test_another_server_counts_until_it_says_bye_or_stops_saying_here() -> None:
    clock = Clock()
    nodes = listened_alone(clock)
    nodes.heard("b")
    assert nodes.may_exist
    clock.now += 5.9
    assert nodes.may_exist
    nodes.heard("b")
    clock.now += 5.9
    assert nodes.may_exist
    clock.now += 0.2
    assert not nodes.may_exist  # crashed: silent for 3 intervals
    assert nodes.heard_from == 0
    nodes.heard("b")
    nodes.heard("c")
    assert nodes.heard_from == 2
    nodes.left("b")
    assert nodes.may_exist
    assert nodes.heard_from == 1
    nodes.left("c")
    assert not nodes.may_exist


def test_a_deaf_server_assumes_others_until_it_has_listened_again() -> None:
    clock = Clock()
    nodes = listened_alone(clock)
    nodes.deaf()
    assert nodes.may_exist
    clock.now += 100
    assert nodes.may_exist
    nodes.listening()
    assert nodes.may_exist
    clock.now += 6.1
    assert not nodes.may_exist
