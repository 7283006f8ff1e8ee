"""Start-up stays light: the core and `optkit plugins` import no heavy optional library."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("gpytorch", "botorch", "transformers", "peft", "gymnasium", "ray", "matplotlib")


def test_listing_plugins_imports_no_heavy_library() -> None:
    code = (
        "import sys, optkit\n"
        "from optkit.cli import main\n"
        "main(['plugins'])\n"
        f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout, done.stdout.splitlines()[-1]


def test_hookspecs_are_documented() -> None:
    import inspect

    from optkit import hookspecs

    hooks = [n for n, f in vars(hookspecs).items() if n.startswith("optkit_") and callable(f)]
    assert len(hooks) == 6
    for name in hooks:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert "register(" in doc, f"hookspec {name} has no usage in its docstring"
