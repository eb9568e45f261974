"""The speed table's pieces every benchmark's rows and section use (run_all.py puts them together)."""


def verdict(ok):
    return "PASS" if ok else "MISS"


def fmt_machine(m):
    return (f"{m.get('cpu')} ({m.get('cpu_count')} cores), {m.get('threads')} torch threads, torch {m.get('torch')}, "
            f"Python {m.get('python')}, {m.get('platform')}; {m.get('date')}")


def checked(area, what, figure, target, ok):
    """A targets row with a target: PASS or MISS."""
    return (area, what, figure, target, verdict(ok))


def reported(area, what, figure):
    """A targets row without a target: the figure is reported only."""
    return (area, what, figure, "(report)", "")


def table(rows, head):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out
