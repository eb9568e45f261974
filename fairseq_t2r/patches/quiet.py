"""The quiet-tools row of the table in ``patches/__init__.py``: fairseq's known-harmless notices
hidden unless FAIRSEQ_T2R_VERBOSE is set."""
import logging
import os
import warnings

VERBOSE_ENV = "FAIRSEQ_T2R_VERBOSE"
HOW_TO_SEE = f"fairseq's known-harmless warnings are hidden; set {VERBOSE_ENV}=1 to see them"
# (category, message pattern as warnings matches it: from the start, case-insensitive); each one is
# a notice about fairseq's own use of Hydra 1.0 / torch APIs, nothing the user can or should change
HARMLESS_WARNINGS = (
    (UserWarning, r"hydra\.experimental\.(initialize|compose)\(\) is no longer experimental"),
    (UserWarning, r"\s*The version_base parameter is not specified"),
    (UserWarning, r"In 'config': Usage of deprecated keyword in package header '# @package _group_'"),
    (UserWarning, r"\s*'config' is validated against ConfigStore schema with the same name"),
    (UserWarning, r"\s*The strict flag in the compose API is deprecated"),
    (UserWarning, r"'pin_memory' argument is set as true but no accelerator is found"),
    (FutureWarning, r"`torch\.cuda\.amp\.autocast\(args\.\.\.\)` is deprecated"),
    (DeprecationWarning, r"`torch\.jit\.script` is deprecated"),
)
# (logger, message start): fairseq's text_to_speech task logs this on every ``import fairseq``
HARMLESS_LOG_LINES = (("fairseq.tasks.text_to_speech", "Please install tensorboardX"),)


class _DropLines(logging.Filter):
    def __init__(self, start):
        super().__init__()
        self.start = start

    def filter(self, record):
        return not str(record.msg).startswith(self.start)


def hide_harmless_warnings():
    """Hide the notices above unless FAIRSEQ_T2R_VERBOSE is set (idempotent)."""
    if os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
        return
    for category, pattern in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)  # no duplicates: it dedupes
    for name, start in HARMLESS_LOG_LINES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines(start))


