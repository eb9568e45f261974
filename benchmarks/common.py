"""What every benchmark records about the machine it ran on: the description the demo's report
uses too (``fairseq_t2r/machine.py``)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fairseq_t2r.machine import machine  # noqa: E402,F401
