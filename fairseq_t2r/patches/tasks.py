"""The task rows of the table in ``patches/__init__.py``: fairseq's multilingual release tasks
(``translation_from_pretrained_bart``, mBART; ``translation_multi_simple_epoch``, M2M-100 and
mBART-50) as fairseq 0.12.3 ships them."""
import functools

from ..errors import T2RUserError


def _settings(task):
    return task.cfg


def patch_release_tasks():
    """Idempotent: the mBART task's ``args``, and one-line errors for a missing language option."""
    from fairseq.tasks.translation_from_pretrained_bart import TranslationFromPretrainedBARTTask as MBart
    from fairseq.tasks.translation_multi_simple_epoch import TranslationMultiSimpleEpochTask as Multi

    if not hasattr(MBart, "args"):
        # its load_dataset and build_generator read self.args, which TranslationTask (a dataclass
        # task since fairseq 0.10) no longer sets: fairseq-train/-generate stop with AttributeError
        MBart.args = property(_settings)
    if not getattr(MBart.setup_task, "_fairseq_t2r_guarded", False):
        MBart.setup_task = classmethod(_guard(MBart.setup_task.__func__, _check_langs))
        Multi.setup_task = classmethod(_guard(Multi.setup_task.__func__, _check_lang_pairs))


def _guard(setup_task, check):
    @functools.wraps(setup_task)
    def guarded(cls, args, **kwargs):
        check(args)
        return setup_task(cls, args, **kwargs)

    guarded._fairseq_t2r_guarded = True
    return guarded


def _check_langs(args):
    """fairseq: ``AttributeError: 'NoneType' object has no attribute 'split'`` in the task's __init__."""
    if not getattr(args, "langs", None):
        raise T2RUserError(
            "--task translation_from_pretrained_bart needs --langs: the comma-separated languages of the mBART "
            "model's pretraining, in its order (e.g. --langs ar_AR,cs_CZ,de_DE,en_XX,...): its dictionary ends "
            "with one [xx_XX] token per language"
        )


def _check_lang_pairs(args):
    """fairseq: a ValueError with a traceback from MultilingualDatasetManager.prepare."""
    if getattr(args, "lang_pairs", None) is None:
        raise T2RUserError(
            "--task translation_multi_simple_epoch needs --lang-pairs: the pairs the model translates, e.g. "
            "--lang-pairs en-de,de-en (M2M-100: the pairs of its language_pairs file, comma-separated), with --encoder-langtok src "
            "--decoder-langtok and --lang-dict or --fixed-dictionary as the model was trained"
        )
