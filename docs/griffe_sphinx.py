"""Griffe extension: the Sphinx markup of expsolver's docstrings, read by the API reference.

The docstrings are NumPy style with two pieces of Sphinx markup that mkdocstrings does not read:

* **Cross-reference roles** (``:func:`sample```, ``:class:`~expsolver.models.ModelWrapper```,
  ``:meth:`StepCoefficients.integrals```). Each becomes Markdown once the package is loaded. A target inside the
  package is resolved in the scope of the docstring's object (members and imports first, then the enclosing
  scopes), followed to the object's defining module, and becomes a required cross-reference
  ``[`name`][full.path]``: if the name resolves to nothing, ``mkdocs build --strict`` fails, so a stale
  reference is caught. A target that the API reference does not show becomes plain code: a private one (a path
  component starting with ``_``, or a module-level name missing from its module's ``__all__``) and one outside
  the package (``torch.no_grad``, ``analysis.sde_study``). ``~`` shows the last component only, as in Sphinx.
* **``#:`` comments** above a module or class attribute: its documentation, as Sphinx autodoc reads it.
"""

from __future__ import annotations

import re

import griffe

#: The package whose objects are documented on the site.
PACKAGE = "expsolver"
ROLE = re.compile(r":(?:py:)?(func|class|mod|data|meth|attr|obj|exc|const):`(~?)([\w.]+)`")


def lookup(root, path: str):
    """The object at ``path`` (a dotted path inside ``root``'s package), aliases followed; None if absent."""
    obj = root
    for part in path.split(".")[1:]:
        if obj.is_alias:
            obj = lookup(root, obj.target_path) if obj.target_path.startswith(PACKAGE + ".") else None
        if obj is None or part not in obj.members:
            return None
        obj = obj.members[part]
    if obj.is_alias:
        return lookup(root, obj.target_path) if obj.target_path.startswith(PACKAGE + ".") else None
    return obj


def resolve(obj, target: str, role: str) -> str | None:
    """The canonical path of ``target`` as named in ``obj``'s docstring, or None if it names nothing there.

    Where a submodule and the function imported over it share a name (``expsolver.sample``), a role other than
    ``:mod:`` means the function.
    """
    if target.split(".")[0] == PACKAGE:
        path = target
    else:
        first, _, rest = target.partition(".")
        try:
            path = obj.resolve(first)
        except griffe.NameResolutionError:
            return None
        path = f"{path}.{rest}" if rest else path
    if path.split(".")[0] != PACKAGE:
        return path
    found = lookup(obj.package, path)
    if found is None:
        return None
    if found.is_module and role != "mod" and found.name in found.members:
        found = lookup(obj.package, f"{found.path}.{found.name}") or found
    return found.path


def is_public(obj) -> bool:
    """Whether the API reference shows ``obj``: no private path component, and the module-level name it belongs
    to is in its module's ``__all__`` (where the module has one) or re-exported by the package's ``__all__``."""
    if any(part.startswith("_") for part in obj.path.split(".")):
        return False
    if obj.is_module:
        return True
    module = obj.module
    name = obj.path[len(module.path) + 1:].split(".")[0]
    if module.exports is None or name in module.exports:
        return True
    top = obj.package  # re-exported by the package's __all__ (expsolver.integrate, defined in expsolver.sample)
    defined = f"{module.path}.{name}"
    return any(top.members[n].is_alias and top.members[n].target_path == defined for n in top.exports or ())


def rewrite(obj, text: str) -> str:
    """``text`` with every Sphinx role replaced (see the module docstring)."""

    def replace(match: re.Match) -> str:
        role, short, target = match.groups()
        label = f"`{target.rsplit('.', 1)[-1] if short else target}`"
        path = resolve(obj, target, role)
        if path is None:
            if "." in target and target.split(".")[0] != PACKAGE:
                return label  # a dotted path outside the package that is not imported here (scipy.integrate)
            return f"[{label}][{target}]"  # names nothing: left to fail the strict build
        if path.split(".")[0] != PACKAGE or not is_public(lookup(obj.package, path)):
            return label
        return f"[{label}][{path}]"

    return ROLE.sub(replace, text)


def comment_docstring(attribute) -> str | None:
    """The ``#:`` comment lines directly above an attribute's assignment, joined, or None."""
    lines = attribute.lines_collection[attribute.filepath]
    i = (attribute.lineno or 0) - 2
    comment = []
    while 0 <= i < len(lines) and lines[i].strip().startswith("#:"):
        comment.insert(0, lines[i].strip()[2:].strip())
        i -= 1
    return "\n".join(comment) or None


class SphinxMarkup(griffe.Extension):
    """Read ``#:`` attribute comments and rewrite the roles of every docstring once the package is loaded."""

    def on_package(self, *, pkg, **kwargs) -> None:
        if pkg.path == PACKAGE:
            self._walk(pkg)

    def _walk(self, obj) -> None:
        if obj.is_attribute and obj.docstring is None:
            text = comment_docstring(obj)
            if text is not None:
                obj.docstring = griffe.Docstring(text, lineno=obj.lineno, parent=obj)
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj, obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member)
