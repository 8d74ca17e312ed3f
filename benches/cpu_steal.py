"""CPU steal for the peer benchmarks: the share of the CPUs' time a hypervisor gave to other guests
while a benchmark ran, from /proc/stat, as llmeff bench reports it beside its own figures."""


def cpu_times():
    """(steal, total) jiffies of all CPUs from /proc/stat, or None where it is unreadable."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (v[7] if len(v) > 7 else 0), sum(v)


def steal_pct(a, b):
    """Percent of the time between readings a and b that was stolen; None if unknown."""
    # Under 1 s of one CPU (100 ticks of 10 ms) a single tick would read as tens of percent.
    return round(100 * (b[0] - a[0]) / (b[1] - a[1]), 1) if a and b and b[1] - a[1] >= 100 else None
