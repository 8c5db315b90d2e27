"""How the tools end on a config naming a type no registry knows: one line with the closest
registered names, rather than mmengine's traceback and KeyError."""
from __future__ import annotations

import difflib
import importlib
import re
import sys
from collections.abc import Callable

# mmengine's wording: "<Type> is not in the <scope>::<registry> registry. Please check ..."
_UNREGISTERED = re.compile(r'(?P<name>[\w.]+) is not in the (?P<scope>\w+)::(?P<registry>[\w ]+) '
                           r'registry')


def _registered_names(scope: str, registry_name: str) -> set[str]:
    """Every type the scope's registry of that name can build, its parents' included."""
    from mmengine.registry import Registry

    try:
        module = importlib.import_module(f'{scope}.registry')
    except ImportError:
        return set()
    names: set[str] = set()
    for registry in vars(module).values():
        while isinstance(registry, Registry) and registry.name == registry_name:
            names.update(registry.module_dict)
            registry = registry.parent
    return names


def unknown_type_message(err: KeyError) -> str | None:
    """The one-line message for mmengine's unknown-type KeyError; None for any other."""
    match = _UNREGISTERED.search(str(err.args[0]) if err.args else '')
    if match is None:
        return None
    name, scope, registry = match['name'], match['scope'], match['registry']
    close = difflib.get_close_matches(name, _registered_names(scope, registry), n=3, cutoff=0.7)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ''
    return (f"type {name!r} is not in {scope}'s {registry} registry{hint} (the plugin's "
            f"types are registered by custom_imports=dict(imports=['plugin']) in the config)")


def explaining_unknown_types(run: Callable[[], int]) -> int:
    """``run()``; a misspelt or unregistered type in the config ends in one line, status 2."""
    try:
        return run()
    except KeyError as err:
        message = unknown_type_message(err)
        if message is None:
            raise
        print(f'error: {message}', file=sys.stderr)
        return 2
