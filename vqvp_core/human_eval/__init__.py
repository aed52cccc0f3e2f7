"""The human evaluation of the paper (section 5.2, Table 1) as a self-contained rating study.

- :func:`build_package` (package.py): blinded side-by-side pairs (system A vs system B from the
  same conditioning frames, sides randomized with a seed), 64x64 WebM + GIF videos,
  ``pairs.json`` (public), ``key.json`` (private), ``study.json``.
- :func:`create_app` / :func:`serve` (server.py): a FastAPI app that serves the rating page
  and the videos and stores every judgment in ``judgments.sqlite`` (needs fastapi + uvicorn).
- :func:`analyze` / :func:`format_table` (analysis.py): the paper's Table 1 with 95% CIs.

Imports are lazy so that building or analysing a study does not import the web stack.
"""
from __future__ import annotations

__all__ = ["build_package", "create_app", "serve", "analyze", "format_table"]

_WHERE = {"build_package": "package", "create_app": "server", "serve": "server",
          "analyze": "analysis", "format_table": "analysis"}


def __getattr__(name):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
