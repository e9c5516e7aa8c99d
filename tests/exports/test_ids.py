"""Ids from the buffered CSPRNG: the right shape, never repeated, and never shared with a
forked child (which inherits the buffer and must not hand out its parent's next ids)."""

from __future__ import annotations

import os
import warnings

from app.exports.service import EXPORT_ID, new_export_id
from app.platform import ids as randomness


def test_ids_have_the_contract_shape_and_do_not_repeat() -> None:
    ids = [new_export_id() for _ in range(5000)]  # crosses many 4 KiB refills
    assert all(EXPORT_ID.match(i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_sizes_beyond_the_buffer_come_straight_from_the_kernel() -> None:
    big = randomness.random_bytes(10_000)
    assert len(big) == 10_000 and len(set(big)) > 200


def test_a_forked_child_never_repeats_its_parents_next_ids() -> None:
    randomness.random_bytes(16)  # the buffer now holds bytes the parent has not used
    read, write = os.pipe()
    with warnings.catch_warnings():
        # 3.12+ warns about forking a process with threads (the suite's test servers); the
        # child only writes to a pipe and leaves.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent, then leave at once
        try:
            os.write(write, randomness.token_urlsafe(16).encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child_id = os.read(read, 100).decode()
    os.close(read)
    assert status == 0 and len(child_id) == 22
    assert randomness.token_urlsafe(16) != child_id
