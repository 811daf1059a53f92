"""MkDocs hook: the API reference is generated from the package's ``__all__`` lists.

* ``docs/api.md`` holds the marker ``<!-- api:package -->``, replaced at build time by one ``::: identifier``
  block (rendered by mkdocstrings) per name of ``expsolver.__all__``, grouped by the module that defines it.
* ``docs/api-modules.md`` holds ``<!-- api:modules -->``, replaced by one section per public submodule: its
  docstring and the names of its ``__all__`` that it defines and that the package page does not already show.

So every public object has exactly one entry, and a name added to an ``__all__`` appears without editing a page.
The names are read statically with griffe: building the docs imports nothing of the package.
"""

from __future__ import annotations

import os

import griffe

PACKAGE = "expsolver"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_MARKER = "<!-- api:package -->"
MODULES_MARKER = "<!-- api:modules -->"


def load(package: str = PACKAGE):
    return griffe.load(package, search_paths=[ROOT])


def package_entries(pkg) -> list[tuple[str, str, str]]:
    """``(name, identifier, defining module)`` for every name of the package's ``__all__``, in order.

    The identifier is ``package.name``, except where ``name`` is also a submodule that the import of the same
    name shadows at run time (the function ``expsolver.sample`` over the module ``expsolver.sample``): griffe
    resolves the dotted path to the module, so the function is addressed as ``package.name.name``.
    """
    if pkg.exports is None:
        raise ValueError(f"{pkg.path} has no __all__ that griffe can read statically")
    out = []
    for name in pkg.exports:
        member = pkg.members[name]
        if not member.is_alias and member.is_module and name in member.members:
            out.append((name, f"{pkg.path}.{name}.{name}", member.path))
        else:
            target = member.target_path if member.is_alias else member.path
            out.append((name, f"{pkg.path}.{name}", target.rsplit(".", 1)[0]))
    return out


def _canonical(obj) -> str:
    return obj.target_path if obj.is_alias else obj.path


def _modules(module):
    for member in module.members.values():
        if not member.is_alias and member.is_module and not member.name.startswith("_"):
            yield member
            yield from _modules(member)


def module_entries(pkg) -> list[tuple[str, list[str]]]:
    """``(module path, names)`` for every public submodule that the package page does not show whole: the names
    of its ``__all__`` (or, without one, its public members) defined in it and not shown on the package page."""
    entries = package_entries(pkg)
    shown = {f"{module}.{identifier.rsplit('.', 1)[-1]}" for _, identifier, module in entries}
    whole = {identifier for _, identifier, _ in entries}  # submodules exported whole by the package
    out = []
    for module in sorted(_modules(pkg), key=lambda m: m.path):
        if module.path in whole:
            continue
        names = module.exports if module.exports is not None else [n for n in module.members
                                                                   if not n.startswith("_")]
        own = [n for n in names if n in module.members and not module.members[n].is_alias
               and not module.members[n].is_module and f"{module.path}.{n}" not in shown]
        out.append((module.path, own))
    return out


def package_markdown(pkg) -> str:
    groups: dict[str, list[str]] = {}
    for _, identifier, module in package_entries(pkg):
        groups.setdefault(module, []).append(identifier)
    parts = []
    for module, identifiers in groups.items():
        # A submodule's section links to its entry on the modules page; names of the package itself have none.
        parts.append(f"## From `{module}`\n" if module == pkg.path else f"## From [`{module}`][{module}]\n")
        parts.extend(f"::: {identifier}\n" for identifier in identifiers)
    return "\n".join(parts)


def modules_markdown(pkg) -> str:
    parts = []
    for module, names in module_entries(pkg):
        members = "[" + ", ".join(names) + "]" if names else "false"
        parts.append(f"::: {module}\n    options:\n      heading_level: 2\n      show_root_full_path: true\n"
                     f"      members: {members}\n")
    return "\n".join(parts)


def on_page_markdown(markdown, page, **kwargs):
    for src, marker, make in (("api.md", PACKAGE_MARKER, package_markdown),
                              ("api-modules.md", MODULES_MARKER, modules_markdown)):
        if page.file.src_uri == src:
            if marker not in markdown:
                raise ValueError(f"docs/{src} must contain {marker!r}, where the generated entries go")
            return markdown.replace(marker, make(load()))
    return markdown
