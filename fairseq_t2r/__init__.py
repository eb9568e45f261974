"""fairseq_t2r: load with ``--user-dir /path/to/fairseq_t2r`` in any fairseq tool.

Importing the package registers the T2R models, architectures and criteria with fairseq (and
applies ``patches``) as soon as fairseq is imported, whichever of the two comes first:
- fairseq first (its ``--user-dir`` import, or a full unpickle of a T2R checkpoint inside
  fairseq's loader through the checkpoint's marker ``fairseq_t2r.errors.RequiresUserDir``):
  registration happens here, now;
- the package first (``import fairseq_t2r.ops``, or a user's ``torch.load(t2r.pt,
  weights_only=False)`` before any fairseq import): nothing of fairseq is imported here, and a
  one-shot import hook (``_RegisterWhenFairseqImports``) registers right after fairseq's own
  ``__init__`` has run. fairseq's ``--user-dir`` import later finds the package in ``sys.modules``
  and skips it, so without the hook nothing would register.
So ``import fairseq_t2r.ops`` (pure tensor functions) or ``t2r-prepare-lm --help`` neither
imports nor patches fairseq.
"""
import importlib.abc
import importlib.util
import sys


def _register():
    from . import (
        criterions,  # noqa: F401  (registers t2r_attention_transfer, t2r_distillation)
        models,  # noqa: F401  (registers models and architectures; applies patches)
    )


class _RegisterWhenFairseqImports(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it wraps the real loaders of ``fairseq`` and of this package's modules.
    Once fairseq's ``__init__`` has run, ``_register`` runs -- at once, or, when one of this
    package's modules imported fairseq, after the outermost of them has finished (registering
    imports the package's modules, which must not be half-initialised then); then it removes
    itself."""

    def __init__(self):
        self._finding = False
        self._running = 0  # this package's modules being executed
        self._pending = False  # fairseq imported, registration waits for _running == 0

    def find_spec(self, name, path=None, target=None):
        if self._finding or not (name == "fairseq" or name.startswith(__name__ + ".")):
            return None
        self._finding = True  # the real finders' spec (this finder answers None meanwhile)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._finding = False
        if spec is not None and spec.loader is not None:
            spec.loader.exec_module = self._wrap(spec.loader.exec_module, name == "fairseq")
        return spec

    def _wrap(self, exec_module, is_fairseq):
        def exec_then_register(module):
            self._running += not is_fairseq
            try:
                exec_module(module)
            finally:
                self._running -= not is_fairseq
            self._pending = self._pending or is_fairseq
            if self._pending and self._running == 0 and self in sys.meta_path:
                sys.meta_path.remove(self)
                _register()

        return exec_then_register


if "fairseq" in sys.modules:
    _register()
elif not any(isinstance(f, _RegisterWhenFairseqImports) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenFairseqImports())
