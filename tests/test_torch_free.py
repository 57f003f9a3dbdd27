"""The runtime never imports torch (nor diffusers / transformers): importing every edge_cer module and running
a full CPU generation happen in a fresh interpreter where importing torch raises."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "diffusers", "transformers"):
                raise ImportError(f"runtime imported {name}")
    sys.meta_path.insert(0, Block())
""")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)


def test_every_runtime_module_imports_without_torch():
    r = _run("""
        import importlib, pkgutil, edge_cer
        names = [m.name for m in pkgutil.walk_packages(edge_cer.__path__, "edge_cer.")]
        for name in names:
            importlib.import_module(name)
        print(len(names))
    """)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[-1]) > 10


def test_full_cpu_generation_without_torch(tiny_export, stimulus_png, tmp_path):
    export = tiny_export("tiny-sd15", "plus")
    out = tmp_path / "out.png"
    r = _run(f"""
        from edge_cer.cli import main
        rc = main(["generate", "--engines", {str(export)!r}, "--image", {str(stimulus_png)!r},
                   "--prompt", "he will recover", "--out", {str(out)!r}, "--steps", "4", "--json"])
        import sys
        assert rc == 0, rc
        assert not any(m.split(".")[0] in ("torch", "diffusers", "transformers") for m in sys.modules)
    """)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 0
