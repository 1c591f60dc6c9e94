"""`make bench-instructions` reads callgrind's dumps: the window's name and every event's total."""

import pytest

from bench.instructions import parse_dump

DUMP = """\
# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 9318
cmd:  .venv/bin/python -m bench.floor
part: 2

desc: I1 cache: 65536 B, 64 B, 8-way associative
desc: Trigger: dump get-idle

positions: line
events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim
summary: 681440 197853 115397 20372 9459 2895 1 2 3 88242 9925 20580 9714
"""


def test_a_named_window_and_its_totals() -> None:
    trigger, totals = parse_dump(DUMP)
    assert trigger == "get-idle"
    assert totals["Ir"] == 681440 and totals["DLmw"] == 3 and totals["Bim"] == 9714 and len(totals) == 13


def test_the_dump_at_exit_has_no_window() -> None:
    at_exit = DUMP.replace("dump get-idle", "Program termination")
    assert parse_dump(at_exit)[0] is None


def test_not_a_dump() -> None:
    with pytest.raises(ValueError):
        parse_dump("strace: Process 12 attached\n")
