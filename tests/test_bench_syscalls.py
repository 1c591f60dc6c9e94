"""`make bench-syscalls` reads strace's summary table: every call's count, the errors column or not."""

from bench.syscalls import summary_counts

SUMMARY = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 41.20    0.013515           9      1373       590 openat
  0.15    0.000712          12        55           getppid
  0.00    0.000000           0         1           restart_syscall
------ ----------- ----------- --------- --------- ----------------
100.00    0.014227          10      1429       590 total
"""


def test_each_call_counted_total_left_out() -> None:
    assert summary_counts(SUMMARY) == {"openat": 1373, "getppid": 55, "restart_syscall": 1}


def test_no_table_no_counts() -> None:
    assert summary_counts("strace: Process 12 attached with 7 threads\n") == {}
