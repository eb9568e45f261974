"""The forked tool runs' memory setting (fairseq_t2r/toolrun.py keep_freed_memory)."""
import resource

import pytest

from fairseq_t2r import toolrun

SIZE = 64 << 20  # bytes: above the largest mmap threshold glibc's adaptive rule reaches (32 MiB)
PAGES = SIZE // resource.getpagesize()


def faults_of_reallocating():
    """Page faults of filling a 64 MiB buffer three times more after a first one was freed."""
    buf = bytearray(SIZE)
    del buf
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        buf = bytearray(SIZE)
        buf[::resource.getpagesize()] = b"\1" * PAGES
        del buf
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)


def faults_in_child(tmp_path, env):
    out = tmp_path / "faults.txt"
    pid = toolrun.start(toolrun.Run(func=faults_of_reallocating, stdout=str(out), env=env))
    code, _ = toolrun.wait(pid, timeout=60)
    assert code == 0, out.read_text()
    return int(out.read_text().split()[-1])


@pytest.mark.skipif(toolrun.glibc_mallopt() is None, reason="a C library without mallopt (not glibc)")
def test_a_forked_run_reuses_freed_memory_unless_the_user_set_mallocs_own(tmp_path, monkeypatch):
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    kept = faults_in_child(tmp_path, {})
    # a user's own MALLOC_ variable is read by glibc at a process's start, not in a forked child: with it the
    # child keeps glibc's defaults, which map each 64 MiB buffer afresh and fault on every page of it
    mapped = faults_in_child(tmp_path, {"MALLOC_MMAP_THRESHOLD_": "131072"})
    assert kept < PAGES // 10 and mapped >= 3 * PAGES, (kept, mapped, PAGES)
