"""Which optional extra provides a module that is missing, read from the installed package's own metadata.

A runtime-only install (no extras) runs sessions, the TUI, generation and speech; `edge-cer export` needs the
`export` extra (torch), `edge-cer analyze` the `analysis` extra (pandas, pingouin, statsmodels, matplotlib).
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, requires

from edge_cer.errors import EdgeCerError

# The export extra's torch must be the CPU wheel, installed first; a bare `pip install 'edge-cer[export]'` would
# let the resolver pick a multi-GB CUDA build.
HOW_TO_INSTALL = {
    "export": "./setup.sh in a checkout, or pip install torch==2.13.0 (the CPU wheel) first, then "
              "pip install 'edge-cer[export]' (docs/export.md)",
}
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"\bextra\s*==\s*['\"]([A-Za-z0-9._-]+)['\"]")


def extra_providing(module: str, requirements: list[str] | None = None) -> str | None:
    """The extra whose requirement installs `module` (its top-level name), or None.

    A distribution name matches when, normalised, it is the module name or starts with it plus "_"
    (cuda-python -> cuda)."""
    if requirements is None:
        try:
            requirements = requires("edge-cer") or []
        except PackageNotFoundError:
            return None
    top = module.split(".")[0].lower()
    for line in requirements:
        match = _NAME.match(line)
        dist = re.sub(r"[-.]+", "_", match[1].lower()) if match else ""
        if dist == top or dist.startswith(top + "_"):
            extra = _EXTRA.search(line)
            if extra is None:  # a runtime requirement (an extra may repeat it with a tighter pin)
                return None
            return extra[1]
    return None


def missing_extra_error(command: str, exc: ModuleNotFoundError) -> EdgeCerError | None:
    """One line naming the missing module, its extra and the install command; None for a module no extra provides."""
    extra = extra_providing(exc.name or "")
    if extra is None:
        return None
    how = HOW_TO_INSTALL.get(extra, f"pip install 'edge-cer[{extra}]'")
    return EdgeCerError(f"`edge-cer {command}` needs {exc.name}, from the `{extra}` extra; install it with: {how}")
