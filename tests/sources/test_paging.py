"""The list walkers (bridge/sources/paging.py) on their own: a streamed walk remembers hashes
of the keys it served, not the keys, and a hash shared by two keys can only make the pass
incomplete, never complete with a row missing."""

from __future__ import annotations

from collections.abc import Sequence

from bridge.sources.paging import Page, Pass, numbered


class Colliding(str):
    """A key whose hash every other `Colliding` key shares (SipHash collisions cannot be
    found on purpose; this stands in for one)."""

    __slots__ = ()

    def __hash__(self) -> int:
        return 42


def pages(*served: Sequence[str], total: int | None = None) -> list[Page[str]]:
    count = total if total is not None else len({k for page in served for k in page})
    return [Page(list(rows), count, len(served)) for rows in served]


async def walk(served: list[Page[str]], *, stream: bool) -> tuple[Pass[str], list[str]]:
    emitted: list[str] = []

    async def fetch(page: int) -> Page[str]:
        return served[page - 1]

    async def on_rows(rows: list[str]) -> None:
        emitted.extend(rows)

    out = await numbered(fetch, lambda row: row, what="findings", on_rows=on_rows if stream else None)
    return out, emitted


async def test_a_streamed_walk_hands_each_key_on_once_and_keeps_no_key_strings() -> None:
    # The list shifted: "b" is served again at the top of page 2.
    out, emitted = await walk(pages(["a", "b"], ["b", "c"], ["d"]), stream=True)
    assert emitted == ["a", "b", "c", "d"]
    assert out.complete, out.notes
    assert out.rows == {}
    assert out.keys == {hash(k) for k in "abcd"}


async def test_a_kept_walk_keeps_its_rows_by_key() -> None:
    out, _ = await walk(pages(["a", "b"], ["b", "c"]), stream=False)
    assert out.complete, out.notes
    assert list(out.rows) == ["a", "b", "c"]
    assert out.keys == {"a", "b", "c"}


async def test_two_keys_of_one_hash_leave_the_pass_incomplete_not_short() -> None:
    first, second = Colliding("finding-1"), Colliding("finding-2")
    out, emitted = await walk(pages([first, "x"], [second]), stream=True)
    assert emitted == [first, "x"], "the second key looked served already"
    assert not out.complete
    assert out.drift
    assert out.notes == ["drift: 2 unique findings but total says 3"]
    # Kept, the keys themselves are compared: nothing is lost.
    kept, _ = await walk(pages([first, "x"], [second]), stream=False)
    assert kept.complete and list(kept.rows) == [first, "x", second]
