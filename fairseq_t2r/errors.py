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


class RequiresUserDir:
    """Marker stored in every T2R checkpoint (see ``checkpoint.mark_state_dict``, key ``fairseq_t2r``).

    It is pickled by reference, as ``fairseq_t2r.errors.RequiresUserDir``, so loading a T2R
    checkpoint in a process that has not loaded the plugin ends up here:
    - fairseq's default ``torch.load`` (weights_only=True, torch >= 2.6) stops with
      "Unsupported global: GLOBAL fairseq_t2r.errors.RequiresUserDir" (instead of fairseq's
      ``KeyError: '_name'`` much later): the fix is ``--user-dir /path/to/fairseq_t2r``;
    - a full unpickle (weights_only=False, older torch or newer fairseq) imports
      ``fairseq_t2r`` inside fairseq, which registers the T2R models, so the checkpoint then simply
      loads wherever the plugin is installed; where it is not, Python says
      "No module named 'fairseq_t2r'".
    Do not rename or move it: every T2R checkpoint refers to it by this name. (It lives here, not
    in checkpoint.py, because this module imports nothing: unpickling it costs no import.)
    """
