"""sdk.lru: a bounded map dropping its least recently used entry first."""

from __future__ import annotations

from sdk.lru import Lru


def test_a_rewritten_entry_is_the_newest() -> None:
    recent: Lru[str, int] = Lru(2)
    recent.put("a", 1)
    recent.put("b", 2)
    recent.put("a", 3)  # rewritten: now the newest
    recent.put("c", 4)
    assert ("a" in recent, "b" in recent, "c" in recent) == (True, False, True)
    assert recent.get("a") == 3 and len(recent) == 2
    recent.forget("a")
    assert recent.get("a") is None


def test_only_a_touched_hit_counts_as_used() -> None:
    used: Lru[str, int] = Lru(2)
    used.put("a", 1)
    used.put("b", 2)
    assert used.get("a") == 1  # read only: "a" stays the oldest
    used.put("c", 3)
    assert list(used) == ["b", "c"]
    used.touch("b")
    used.put("d", 4)
    assert list(used) == ["b", "d"]
