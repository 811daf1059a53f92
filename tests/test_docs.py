"""The documentation: strict site build, generated API reference, generated tables, runnable examples, README.

The site tests need the ``docs`` extra (``pip install -e ".[docs]"``) and are skipped without it; the table and
example tests need only the package.
"""

import copy
import importlib.util
import os
import re
import subprocess
import sys

import pytest

import expsolver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
PAGES = sorted(["README.md"] + [os.path.join("docs", f) for f in os.listdir(DOCS) if f.endswith(".md")])
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
#: A file of the repository included into a page by pymdownx.snippets.
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.M)


def _load(name: str):
    """A module of docs/ (they are scripts beside the pages, not an installed package)."""
    spec = importlib.util.spec_from_file_location(f"_docs_{name}", os.path.join(DOCS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read(page: str) -> str:
    with open(os.path.join(ROOT, page), encoding="utf-8") as fh:
        return fh.read()


# -- the site -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory):
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    return proc, out


def test_site_builds_strictly(site):
    """Any warning fails: a broken link or anchor, a page missing from the nav, a docstring reference that names
    nothing, a generated API entry that does not resolve."""
    proc, _ = site
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_api_page_lists_every_public_name(site):
    proc, out = site
    assert proc.returncode == 0, proc.stderr
    with open(out / "api" / "index.html", encoding="utf-8") as fh:
        ids = set(re.findall(r'id="([\w.]+)"', fh.read()))
    # A name that is also a submodule (expsolver.sample) is documented under the submodule: expsolver.sample.sample.
    missing = [n for n in expsolver.__all__ if f"expsolver.{n}" not in ids and f"expsolver.{n}.{n}" not in ids]
    assert not missing, f"not on the API page: {missing}"


def test_api_entries_follow_all():
    """The generated entries are exactly ``expsolver.__all__``, in order (no page lists names by hand)."""
    pytest.importorskip("griffe")
    hooks = _load("hooks")
    entries = hooks.package_entries(hooks.load())
    assert [name for name, _, _ in entries] == list(expsolver.__all__)
    assert "::: expsolver.VPLinear" in hooks.package_markdown(hooks.load())


# -- generated tables ---------------------------------------------------------------------------------------------
def test_generated_tables_match_committed_results():
    gen = _load("gen_tables")
    stale = gen.stale_pages()
    assert not stale, (f"generated blocks differ from docs/results in {[page for page, _, _ in stale]}: run "
                       f"python docs/gen_tables.py")


def test_generated_tables_follow_the_results():
    """The check can fail: a changed number in a results file changes the pages."""
    gen = _load("gen_tables")
    results = gen.load_results()
    changed = copy.deepcopy(results)
    changed["summary"]["order_agreement"]["n_agree"] -= 1
    changed["benchmark"]["overhead"][0]["ratio"] *= 2.0
    readme = _read("README.md")
    assert gen.render(readme, results) == readme
    assert gen.render(readme, changed) != readme
    performance = _read("docs/performance.md")
    assert gen.render(performance, changed) != performance


def test_every_generated_block_is_used_and_states_its_source():
    gen = _load("gen_tables")
    used = {name for page in gen.PAGES for name in re.findall(r"<!-- gen:([\w-]+) -->", _read(page))}
    assert used == set(gen.BLOCKS)
    results = gen.load_results()
    for name, block in gen.BLOCKS.items():
        text = block(results)
        assert "docs/results/" in text and re.search(r"\d{4}-\d{2}-\d{2}", text), name


def test_generator_rejects_unknown_blocks():
    gen = _load("gen_tables")
    with pytest.raises(ValueError, match="unknown generated block 'nope'"):
        gen.render("<!-- gen:nope -->\n<!-- /gen:nope -->", gen.load_results(), "page.md")


@pytest.mark.parametrize("value, digits, expected", [
    (0.08942, 2, "0.089"), (3.9, 2, "3.9"), (1.2e-5, 2, "1.2e-5"), (2.12e6, 3, "2.12e6"), (None, 2, "-"),
    (0.0, 2, "0"), (12.5, 3, "12.5"),
])
def test_number_format(value, digits, expected):
    assert _load("gen_tables").fmt(value, digits) == expected


# -- examples -----------------------------------------------------------------------------------------------------
EXAMPLE_PAGES = [p for p in PAGES if PYTHON_BLOCK.search(_read(p))]


@pytest.mark.parametrize("page", EXAMPLE_PAGES)
def test_python_examples_run(page, monkeypatch):
    """Every ```python block of a page runs, in order, in one namespace (as a reader would type them)."""
    if os.path.basename(page) == "diffusers.md" and importlib.util.find_spec("diffusers") is None:
        pytest.skip("the diffusers page's examples need the optional diffusers extra")
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__docs__"}
    for i, block in enumerate(PYTHON_BLOCK.findall(_read(page))):
        block = SNIPPET.sub(lambda m: _read(os.path.join(ROOT, m.group(1))), block)  # what the page shows
        exec(compile(block, f"{page} (python block {i + 1})", "exec"), namespace)  # noqa: S102 - the docs' code


# -- the README ---------------------------------------------------------------------------------------------------
def test_readme_shape():
    readme = _read("README.md")
    assert len(readme.splitlines()) <= 150
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```bash\n(.*?)^```$", quickstart, re.S | re.M)
    assert len(blocks) == 1 and len(blocks[0].strip().splitlines()) == 2, blocks


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_exist(page):
    """Links of the README (and of the pages, which mkdocs also checks) point at files of the repository."""
    folder = os.path.dirname(os.path.join(ROOT, page))
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", _read(page)):
        if "://" not in target:
            assert os.path.exists(os.path.join(folder, target)), f"{page}: {target}"



def test_api_entries_of_a_package_with_every_kind_of_export(tmp_path):
    """Re-exported names, a function that shadows its submodule, a submodule exported whole, and the modules page
    that shows each remaining public name once."""
    pytest.importorskip("griffe")
    pkg_dir = tmp_path / "pkg"
    (pkg_dir / "sub").mkdir(parents=True)
    (pkg_dir / "__init__.py").write_text(
        "from .run import run\nfrom .tools import Tool\nfrom . import sub\n__all__ = ['run', 'Tool', 'sub']\n")
    (pkg_dir / "run.py").write_text("__all__ = ['run', 'extra']\ndef run():\n    pass\ndef extra():\n    pass\n")
    (pkg_dir / "tools.py").write_text("__all__ = ['Tool', 'make']\nclass Tool:\n    pass\ndef make():\n    pass\n")
    (pkg_dir / "sub" / "__init__.py").write_text("__all__ = ['f']\ndef f():\n    pass\n")
    hooks = _load("hooks")
    import griffe

    pkg = griffe.load("pkg", search_paths=[str(tmp_path)])
    assert hooks.package_entries(pkg) == [("run", "pkg.run.run", "pkg.run"), ("Tool", "pkg.Tool", "pkg.tools"),
                                          ("sub", "pkg.sub", "pkg")]
    assert hooks.module_entries(pkg) == [("pkg.run", ["extra"]), ("pkg.tools", ["make"])]


def test_sphinx_roles_become_links_or_code(tmp_path, monkeypatch):
    pytest.importorskip("griffe")
    ext = _load("griffe_sphinx")
    import griffe

    monkeypatch.setattr(ext, "PACKAGE", "rolepkg")
    pkg_dir = tmp_path / "rolepkg"
    pkg_dir.mkdir()
    (pkg_dir / "__init__.py").write_text("from .mod import Thing\n__all__ = ['Thing']\n")
    (pkg_dir / "mod.py").write_text(
        "import torch\n__all__ = ['Thing', 'CONSTANT']\n#: A documented constant.\nCONSTANT = 1\n"
        "def hidden():\n    pass\nclass Thing:\n    def go(self):\n        pass\n")
    pkg = griffe.load("rolepkg", search_paths=[str(tmp_path)])
    thing = pkg["mod.Thing"]
    text = (":class:`Thing` :meth:`Thing.go` :data:`~rolepkg.mod.CONSTANT` :func:`hidden` :func:`torch.no_grad` "
            ":mod:`scipy.integrate` :func:`missing`")
    assert ext.rewrite(thing, text) == ("[`Thing`][rolepkg.mod.Thing] [`Thing.go`][rolepkg.mod.Thing.go] "
                                        "[`CONSTANT`][rolepkg.mod.CONSTANT] `hidden` `torch.no_grad` "
                                        "`scipy.integrate` [`missing`][missing]")
    assert ext.comment_docstring(pkg["mod.CONSTANT"]) == "A documented constant."
