"""CPU time and memory of the processes a benchmark step involves, read from /proc.

CPU seconds are utime + stime (man 5 proc). PostgreSQL forks a backend per connection, and a
backend that exits takes its counters with it; its parent, the postmaster, then has them in its
cutime/cstime (children that were waited for). So the cluster's total is the postmaster's own and
waited-for children's time plus that of every live child: a delta of that total over a step
counts backends that came and went during it too.
"""

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid):
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def cpu_seconds(pid, waited_children=False):
    """utime + stime of a process (and of its waited-for children when asked); 0 when it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if waited_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def children(pid):
    """The pids whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(entry.name)
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def postmaster_pid(data_dir):
    """The postmaster of the cluster in `data_dir`: the postgres process started with `-D data_dir`
    (its backends rename their command lines, so only it still shows the option)."""
    wanted = str(data_dir)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [word.decode(errors="replace") for word in argv]
        if words and words[0].endswith("/postgres") and wanted in words:
            return int(entry.name)
    return None


def cluster_cpu_seconds(postmaster):
    """Every CPU second the cluster spent so far: see the module's docstring."""
    if postmaster is None:
        return 0.0
    return cpu_seconds(postmaster, waited_children=True) + sum(cpu_seconds(child) for child in children(postmaster))


def rss_mib(pid):
    """Resident memory (VmRSS) in MiB, or None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
