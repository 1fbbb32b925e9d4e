"""The rules by which a changelog partition is read (docs/cluster-design.md section 3.3), on
an in-memory log that can be compacted: claims order the owners' tenures, a record counts
only if its writer's claim is the current one, a stale claimant is ignored, and compaction
never makes a reader accept what an owner's correction has not already replaced."""

from __future__ import annotations

from dataclasses import dataclass, field

from daemon.claims import (
    COMMANDS_KEY,
    OWNER_KEY,
    Claim,
    PartitionLog,
    fence_header,
    fence_of,
    new_claim,
    parse_claim,
)

Header = list[tuple[str, bytes]]


@dataclass
class Log:
    """One partition: records at growing offsets; ``compact`` keeps the latest of each key."""

    records: list[tuple[int, bytes | None, bytes | None, Header]] = field(default_factory=list)

    def claim(self, fence: int, store: str) -> int:
        claim = Claim(fence=fence, store_id=store)
        return self.append(OWNER_KEY, claim.to_bytes(None), fence)

    def append(self, key: str, value: bytes | None, fence: int | None) -> int:
        offset = self.records[-1][0] + 1 if self.records else 0
        headers = [] if fence is None else fence_header(fence)
        self.records.append((offset, key.encode(), value, headers))
        return offset

    def compact(self) -> None:
        latest = {key: offset for offset, key, _, _ in self.records}
        self.records = [r for r in self.records if latest[r[1]] == r[0]]

    def read(self) -> PartitionLog:
        log = PartitionLog()
        log.feed_all(self.records)
        return log


def test_records_of_the_current_owner_count_and_the_latest_of_a_key_wins():
    log = Log()
    log.claim(5, "a")
    log.append("j", b"1", 5)
    log.append("j/file/x", b"x1", 5)
    log.append("j", b"2", 5)
    log.append("j/file/x", None, 5)  # a tombstone: the file is gone
    read = log.read()
    assert read.claim is not None and (read.claim.fence, read.claim.store_id) == (5, "a")
    assert read.values == {"j": b"2", "j/file/x": None}
    assert read.invalid == set() and read.last_offset == 4


def test_a_zombies_records_after_a_newer_claim_are_skipped_and_reported():
    log = Log()
    log.claim(5, "a")
    log.append("j", b"a's state", 5)
    log.claim(6, "b")
    log.append("j", b"zombie a's late state", 5)  # a, paused, wrote with its old fence
    log.append("j/phase/DB", b"zombie", 5)
    read = log.read()
    assert read.values == {"j": b"a's state"}
    assert read.invalid == {"j", "j/phase/DB"}
    # the new owner corrects the keys: they are valid again, with its value
    log.append("j", b"b's state", 6)
    log.append("j/phase/DB", None, 6)
    read = log.read()
    assert read.values == {"j": b"b's state", "j/phase/DB": None} and read.invalid == set()


def test_a_stale_claimant_is_ignored_and_its_records_too():
    log = Log()
    log.claim(7, "b")
    log.claim(6, "a")  # assigned in an older generation, paused, and wrote its claim late
    log.append("j", b"a", 6)
    log.append("j", b"b", 7)
    read = log.read()
    assert read.claim is not None and read.claim.store_id == "b"
    assert read.claims_ignored == 1
    assert read.values == {"j": b"b"}


def test_compaction_that_hides_a_claim_keeps_the_older_tenures_records_valid():
    log = Log()
    log.claim(1, "a")
    log.append("j/file/x", b"written by a", 1)
    log.claim(2, "b")  # a's claim is compacted away: only b's is the latest ~owner
    log.append("j", b"b", 2)
    log.compact()
    read = log.read()
    assert read.values == {"j/file/x": b"written by a", "j": b"b"}
    assert read.invalid == set()


def test_compaction_never_resurrects_a_corrected_zombie_record():
    log = Log()
    log.claim(1, "a")
    log.claim(2, "b")
    log.append("j", b"zombie", 1)
    log.append("j", b"correction", 2)  # b's tail reader saw the zombie's record
    log.compact()  # the zombie's record and a's claim are gone
    assert log.read().values == {"j": b"correction"}


def test_a_group_whose_generations_start_again_still_gets_growing_fences():
    previous = Claim(fence=41, store_id="a")
    assert new_claim("b", 3, "m", previous).fence == 42  # generation 3 < 41: previous + 1
    assert new_claim("b", 50, "m", previous).fence == 50
    assert new_claim("b", 0, "m", None).fence == 0  # tansu's first generation
    assert new_claim("b", -1, "m", None).fence == 0


def test_records_without_a_fence_count_only_before_any_claim():
    log = Log()
    log.append("j", b"before", None)
    log.claim(0, "a")
    log.append("j/plan", b"after", None)
    read = log.read()
    assert read.values == {"j": b"before"} and read.invalid == {"j/plan"}


def test_keys_that_are_not_ours_and_garbled_claims_change_nothing():
    log = Log()
    log.claim(3, "a")
    log.append("~nobody", b"x", 3)
    log.append("", b"x", 3)
    log.records.append((99, None, b"no key", []))
    log.records.append((100, OWNER_KEY.encode(), b"not json", fence_header(9)))
    read = log.read()
    assert read.values == {} and read.claim is not None and read.claim.fence == 3
    assert read.last_offset == 100


def test_the_commands_position_is_read_like_any_record():
    log = Log()
    log.claim(1, "a")
    log.append(COMMANDS_KEY, b'{"v": 1, "offset": 7}', 1)
    log.claim(2, "b")
    log.append(COMMANDS_KEY, b'{"v": 1, "offset": 9}', 1)  # the zombie's: skipped
    assert log.read().commands_offset == 7


def test_a_claim_round_trips_and_a_fence_header_is_read_back():
    claim = new_claim("store", 4, "member-1", Claim(fence=2, store_id="x"))
    parsed = parse_claim(claim.to_bytes(Claim(fence=2, store_id="x")), 17)
    assert parsed is not None
    assert (parsed.fence, parsed.store_id, parsed.generation, parsed.member_id, parsed.offset) == (
        4,
        "store",
        4,
        "member-1",
        17,
    )
    assert fence_of(fence_header(12)) == 12
    assert fence_of([("fence", b"x")]) == -1 and fence_of(None) == -1
