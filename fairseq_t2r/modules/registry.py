"""Name -> class registries of the pluggable parts (feature maps, state updates)."""
from typing import Dict


def registrar(table: Dict[str, type], what: str):
    """A class decorator factory: ``@register(name)`` puts the class in ``table`` under ``name``
    (refusing a name twice) and sets its ``name``."""

    def register(name: str):
        def wrap(cls):
            if name in table:
                raise ValueError(f"{what} {name!r} registered twice")
            table[name] = cls
            cls.name = name
            return cls

        return wrap

    return register
