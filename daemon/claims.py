"""Claims, fences and the rules by which a changelog partition is read (docs/cluster-design.md
sections 3.1 and 3.3). Pure: records in, the partition's valid state out.

A daemon that takes a requests partition writes a claim (key ``~owner``) to the matching
changelog partition, with a fence greater than every claim before it; each record it writes
after that carries its fence in the header ``fence``. Reading the partition in order:

- a claim whose fence is greater than the current one is accepted (it becomes current);
  one that is not is a stale claimant's, and ignored;
- any other record whose fence is the current one or greater is valid: it replaces its
  key's value (a tombstone removes it);
- a record with a smaller fence was written by an owner after a newer claim (a zombie):
  skipped, and its key reported, so that the current owner writes the key again.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from daemon.changelog import commands_offset, parse_key
from daemon.store.partitions import COMMANDS_KEY

OWNER_KEY = "~owner"
FENCE_HEADER = "fence"
NO_FENCE = -1  # a record without a readable fence header: valid only before any claim


@dataclass(frozen=True)
class Claim:
    fence: int
    store_id: str
    generation: int = -1
    member_id: str = ""
    host: str = ""
    claimed_at: float = 0.0
    offset: int = -1  # where it is in the partition, once read

    def to_bytes(self, previous: Claim | None) -> bytes:
        record = {
            "v": 1,
            "fence": self.fence,
            "generation": self.generation,
            "member_id": self.member_id,
            "store_id": self.store_id,
            "host": self.host,
            "claimed_at": self.claimed_at,
            "previous": None
            if previous is None
            else {"fence": previous.fence, "store_id": previous.store_id},
        }
        return json.dumps(record, separators=(",", ":")).encode()


def new_claim(store_id: str, generation: int, member_id: str, previous: Claim | None) -> Claim:
    """The claim a member of ``generation`` writes: its fence grows with the generation and
    is greater than the previous claim's (a group's generations start again at 0 when it
    is deleted)."""
    return Claim(
        fence=max(generation, 0 if previous is None else previous.fence + 1),
        store_id=store_id,
        generation=generation,
        member_id=member_id,
        host=socket.gethostname(),
        claimed_at=time.time(),
    )


def parse_claim(value: bytes | None, offset: int) -> Claim | None:
    """The claim in a ``~owner`` record; None for a value that is not one."""
    try:
        record = json.loads(value or b"")
        return Claim(
            fence=int(record["fence"]),
            store_id=str(record["store_id"]),
            generation=int(record.get("generation", -1)),
            member_id=str(record.get("member_id", "")),
            host=str(record.get("host", "")),
            claimed_at=float(record.get("claimed_at", 0.0)),
            offset=offset,
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def fence_of(headers: Sequence[tuple[str, bytes]] | None) -> int:
    for name, value in headers or ():
        if name == FENCE_HEADER:
            try:
                return int(value)
            except (TypeError, ValueError):
                return NO_FENCE
    return NO_FENCE


def fence_header(fence: int) -> list[tuple[str, bytes]]:
    return [(FENCE_HEADER, str(fence).encode())]


@dataclass
class PartitionLog:
    """One changelog partition as read so far: the current claim, the latest valid value
    of every job key (in the order they were last written), the keys whose latest record
    was invalid (to be corrected), and the offset read to."""

    claim: Claim | None = None
    values: dict[str, bytes | None] = field(default_factory=dict)
    invalid: set[str] = field(default_factory=set)
    commands_offset: int = 0
    last_offset: int = -1
    claims_ignored: int = 0
    keep_values: bool = True  # False: a tail reader, which needs the claims only

    def forget_values(self) -> None:
        self.values.clear()
        self.keep_values = False

    def feed(
        self,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None,
    ) -> str:
        """Apply one record, in partition order; returns what it was: ``claim`` (accepted),
        ``stale`` (a claim ignored), ``valid``, ``invalid`` or ``other`` (not a record of
        ours: no key, or a key no job has)."""
        self.last_offset = offset
        name = key.decode(errors="replace") if key is not None else None
        if name == OWNER_KEY:
            return self._claim(parse_claim(value, offset))
        if name is None or not _is_ours(name):
            return "other"
        fence = fence_of(headers)
        if self.claim is not None and fence < self.claim.fence:
            self.invalid.add(name)
            return "invalid"
        self.invalid.discard(name)
        if name == COMMANDS_KEY:
            read = commands_offset(value)
            if read is not None:
                self.commands_offset = read
            return "valid"
        if self.keep_values:
            self.values.pop(name, None)
            self.values[name] = value
        return "valid"

    def _claim(self, claim: Claim | None) -> str:
        if claim is None:
            return "other"
        if self.claim is not None and claim.fence <= self.claim.fence:
            self.claims_ignored += 1
            return "stale"
        self.claim = claim
        return "claim"

    def feed_all(
        self, records: Iterable[tuple[int, bytes | None, bytes | None, Sequence[tuple[str, bytes]]]]
    ) -> None:
        for offset, key, value, headers in records:
            self.feed(offset, key, value, headers)

    def jobs(self) -> set[str]:
        return {parse_key(key).job_id for key in self.values}


def _is_ours(name: str) -> bool:
    if name == COMMANDS_KEY:
        return True
    try:
        parse_key(name)
    except ValueError:
        return False
    return True
