"""Stale-lock storms (docs/design/lock.md): many processes find the same stale lock at once.

16 worker processes are released at the same instant (they block on a shared ``flock`` of a gate
file that the parent holds exclusively, then drops) onto one stale lock, round after round: 200
rounds (~30 s on 2 cores), the size the lock is specified to survive. The stale lock rotates through
every kind a writer can leave behind: a dead owner, a reused PID, another host with an old
heartbeat, an owner from an earlier boot of this machine (where it has a machine id), an empty
and a torn record, and a dead owner plus a breaker that died holding a claim.

Each round exactly one worker breaks the lock and holds it (until the parent says release), the
other 15 fail cleanly with `LockHeldError` within their wait (0 or 0.3 s) plus scheduling slack,
no claim file survives the round, epochs strictly increase, and the shared O_APPEND log never
shows two holders.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from _helpers import locks
from _helpers.proc import wait_for
from wrdsvault._storage.identity import own_identity

PROCESSES = 16
KINDS = (
    "dead",
    "reused",
    "foreign",
    *(("earlier-boot",) if own_identity()["machine_id"] is not None else ()),
    "empty",
    "garbage",
    "dead-claimer",
)
#: Why the winner found each kind stale (a substring of `WriterLock.broke`).
REASONS = {
    "dead": "is gone",
    "reused": "start time differs",
    "foreign": "no heartbeat from host 'elsewhere.invalid'",
    "earlier-boot": "ran in an earlier boot of this machine",
    "empty": "unreadable owner record",
    "garbage": "unreadable owner record",
    "dead-claimer": "is gone",
}
#: Losers' wait: 0 (fail at once, and name whom they met mid-break) or 0.3 s (poll, then fail),
#: alternating every len(KINDS) rounds so every kind meets both.
WAITS_S = (0.0, 0.3)
#: 16 Python processes on 2 cores: a loser may be descheduled for a while after its deadline.
SLACK_S = 3.0


def test_stale_lock_storms_have_exactly_one_winner(
    lock_path: Path, spawn, sleeper, tmp_path: Path
) -> None:
    """16 processes x 200 rounds on one stale lock: exactly one winner each round."""
    rounds = 200
    gates = [tmp_path / "gate-even", tmp_path / "gate-odd"]
    held = []
    for gate in gates:
        gate.touch()
        fd = os.open(gate, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.append(fd)
    log = tmp_path / "holders.log"
    cfg = {
        "path": str(lock_path),
        "log": str(log),
        "gates": [str(g) for g in gates],
        "rounds": rounds,
        "waits_s": [WAITS_S[(r // len(KINDS)) % 2] for r in range(rounds)],
    }
    workers = [spawn("storm", cfg) for _ in range(PROCESSES)]
    pids = {worker.proc.pid for worker in workers}
    epochs: list[int] = []
    longest_wait = 0.0
    lost_to_a_breaker = 0  # losers that met a live claim: the race on the claim was real
    try:
        for round_ in range(rounds):
            for worker in workers:
                assert worker.expect("ready", timeout_s=60)["round"] == round_
            kind = KINDS[round_ % len(KINDS)]
            locks.stale_lock(lock_path, kind, live_pid=sleeper.pid)
            gate = gates[round_ % 2]
            wait_for(
                lambda gate=gate: locks.flock_waiters(gate) >= pids,
                f"every worker to wait at the gate of round {round_}",
            )
            fcntl.flock(held[round_ % 2], fcntl.LOCK_UN)
            results = [worker.expect("won", "lost", timeout_s=60) for worker in workers]
            fcntl.flock(held[round_ % 2], fcntl.LOCK_EX)
            winners = [i for i, r in enumerate(results) if r["event"] == "won"]
            assert len(winners) == 1, f"round {round_} ({kind}): winners {winners}"
            won = results[winners[0]]
            assert won["broke"] is not None and REASONS[kind] in won["broke"], (kind, won)
            epochs.append(won["epoch"])
            waits = [r["waited_s"] for r in results if r["event"] == "lost"]
            lost_to_a_breaker += sum(
                r["event"] == "lost" and r["holder"].get("state") == "breaking a stale lock"
                for r in results
            )
            longest_wait = max(longest_wait, *waits)
            limit = cfg["waits_s"][round_] + SLACK_S
            assert max(waits) < limit, f"round {round_}: a loser was stuck {waits}"
            workers[winners[0]].send("release")
            workers[winners[0]].expect("released")
            assert not lock_path.exists()
            leftovers = [p.name for p in lock_path.parent.iterdir() if ".claim." in p.name]
            assert leftovers == [], f"round {round_} ({kind}) left claims {leftovers}"
        for worker in workers:
            assert worker.wait() == 0
    finally:
        for fd in held:
            os.close(fd)
    rows = locks.parse_log(log)
    assert len(rows) == 2 * rounds
    locks.assert_one_holder_at_a_time(rows)
    assert epochs == sorted(set(epochs))
    print(
        f"storm: {rounds} rounds x {PROCESSES} processes, 0 overlaps, {lost_to_a_breaker} losers "
        f"met a live breaker's claim, longest loser wait {longest_wait:.2f} s"
    )
