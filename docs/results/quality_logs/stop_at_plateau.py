"""Stops the quality benchmark's LM teacher (a fairseq-train process) once the plateau criterion of
fairseq_t2r/demo/teachers.py holds on its validation curve, or at MAX_UPDATES (the session's CPU
budget: reported as "criterion NOT held"), right after fairseq logged that it saved the
validation's checkpoints, so checkpoint_best.pt is complete.

    python stop_at_plateau.py TRAIN_LOG PID MIN_UPDATES [MAX_UPDATES]
"""
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
from fairseq_t2r.demo import measure, teachers  # noqa: E402

SAVED = re.compile(r"Saved checkpoint .*@ (\d+) updates")


def main(log, pid, min_updates, max_updates=10**9):
    while True:
        time.sleep(10)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print("teacher ended by itself", flush=True)
            return
        curve = measure.valid_curve(log)
        if not curve or curve[-1]["updates"] < min_updates:
            continue
        with open(log, errors="replace") as f:
            saved = [int(m.group(1)) for m in map(SAVED.search, f) if m]
        c = teachers.converged(curve)
        if (c["held"] or curve[-1]["updates"] >= max_updates) and saved and saved[-1] == curve[-1]["updates"]:
            os.kill(pid, signal.SIGTERM)
            why = "plateau criterion held" if c["held"] else f"CPU budget cap {max_updates} reached, criterion NOT held"
            print(f"stopped at update {curve[-1]['updates']}: {why}: {c}", flush=True)
            return


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *(int(x) for x in sys.argv[4:5]))
