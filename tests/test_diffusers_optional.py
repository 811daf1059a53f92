"""diffusers is an optional extra: expsolver imports without it, and the integration module says how to get it.
Runs with or without diffusers installed (a subprocess hides it)."""

import subprocess
import sys
from pathlib import Path

HIDE_DIFFUSERS = """
import sys

class HideDiffusers:
    def find_spec(self, name, path=None, target=None):
        if name == "diffusers" or name.startswith("diffusers."):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, HideDiffusers())
import expsolver
import expsolver.integrations
print("diffusers imported:", any(m == "diffusers" or m.startswith("diffusers.") for m in sys.modules))
try:
    import expsolver.integrations.diffusers
except ImportError as exc:
    print("ImportError:", exc)
"""


def test_expsolver_imports_without_diffusers_and_the_integration_names_the_extra():
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", HIDE_DIFFUSERS], cwd=root, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "diffusers imported: False" in out.stdout
    assert "ImportError:" in out.stdout and "pip install 'expsolver[diffusers]'" in out.stdout
