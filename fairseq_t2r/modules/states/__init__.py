"""The state updates of converted self-attention (``--t2r-state``): ``base.py`` holds the interface
and the registry; every other module of this folder holds states and is imported here, in name
order, so a new state is one new file (its class, registered with ``@register_state_update``)."""
import importlib
import pkgutil

from .base import (  # noqa: F401
    NORMS,
    STATE_UPDATES,
    StateUpdate,
    build_state_update,
    option_choices,
    option_names,
    register_state_update,
    state_class,
    state_names,
)

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")
