"""Stops the quality benchmark's LM teacher once the plateau criterion of fairseq_t2r/demo/teachers.py
holds on its validation curve (and it has trained at least MIN_UPDATES), right after fairseq has
finished saving that validation's checkpoints (the 'saved checkpoint' log line)."""
import os, re, signal, sys, time
sys.path.insert(0, "/work/main")
from fairseq_t2r.demo import measure, teachers

LOG, PID, MIN_UPDATES = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# the session's CPU budget: stop at this update even when the criterion does not hold (reported as such)
MAX_UPDATES = int(sys.argv[4]) if len(sys.argv) > 4 else 10**9
SAVED = re.compile(r"Saved checkpoint .*@ (\d+) updates")
while True:
    time.sleep(10)
    try:
        os.kill(PID, 0)
    except ProcessLookupError:
        print("teacher ended by itself", flush=True); break
    curve = measure.valid_curve(LOG)
    if not curve or curve[-1]["updates"] < MIN_UPDATES:
        continue
    saved = [int(m.group(1)) for m in map(SAVED.search, open(LOG, errors="replace")) if m]
    c = teachers.converged(curve)
    if (c["held"] or curve[-1]["updates"] >= MAX_UPDATES) and saved and saved[-1] == curve[-1]["updates"]:
        os.kill(PID, signal.SIGTERM)
        why = "plateau criterion held" if c["held"] else f"CPU budget cap {MAX_UPDATES} reached, criterion NOT held"
        msg = f"stopped at update {curve[-1]['updates']}: {why}: {c}"
        print(msg, flush=True)
        open(os.path.join(os.path.dirname(LOG), "STOPPED_AT_PLATEAU"), "w").write(msg + "\n")
        break
