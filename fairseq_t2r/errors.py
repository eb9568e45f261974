"""User-facing errors: one line on stderr, exit status 1, no traceback.

T2RUserError subclasses SystemExit on purpose: fairseq wraps checkpoint loading in
``except Exception`` and re-raises a generic message with a traceback; a SystemExit passes
through that unchanged, so the user sees only our line. In-process callers can still catch it.
"""


class T2RUserError(SystemExit):
    def __init__(self, message: str):
        super().__init__(f"fairseq_t2r: error: {message}")
        self.message = message

    def __str__(self):
        return self.message
