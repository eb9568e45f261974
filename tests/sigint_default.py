"""``python tests/sigint_default.py MODULE ARGS``: ``python -m MODULE ARGS`` with Ctrl-C (SIGINT)
raising KeyboardInterrupt, as at a terminal. A test run started in the background by a shell
without job control inherits SIGINT ignored, and so would the tools it starts."""
import os
import runpy
import signal
import sys

signal.signal(signal.SIGINT, signal.default_int_handler)
sys.argv = sys.argv[1:]
sys.path[0] = os.getcwd()  # as ``python -m`` sets it
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
