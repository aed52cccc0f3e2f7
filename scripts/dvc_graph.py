"""dvc.yaml's code deps and params, checked against the code (and rewritten with --write).

* **deps**: every repository file a stage's command imports, found statically (``import`` and
  ``from ... import`` anywhere in a module, lazy imports inside functions included, with the
  ``__init__.py`` of every package on the way), starting from ``flows/cli.py`` (``vqvp stage``),
  ``stages/__init__.py`` and ``stages/<stage>.py``. Exact files, not whole packages: a change
  reruns only the stages that import it.
* **params**: the keys that change a stage's outputs; bookkeeping (MLflow names and aliases,
  logging, devices, checkpoint cadence, data-loader workers) is left out, so changing it reruns
  nothing. The checkpoint fingerprint reads the same list (stages/training.py).

    python scripts/dvc_graph.py           # exit 1 and a diff if dvc.yaml disagrees
    python scripts/dvc_graph.py --write   # rewrite the deps and params lists of dvc.yaml
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vqvp_core", "stages", "flows")
ENTRY = ("flows/cli.py", "stages/__init__.py")
# Leaf keys that never change a stage's outputs (README, 'Reruns').
BOOKKEEPING = {"register_as", "register_video_as", "alias", "log_videos", "device", "log_every", "ckpt_every", "keep_last",
               "num_workers", "workers"}
# The params sections each stage reads, besides its own (the stage's name without train_).
EXTRA_SECTIONS = {"evaluate": ["ingest.source", "ingest.synthetic"]}
OWN_SECTION = {"train_vqvae": "vqvae", "train_top_prior": "top_prior", "train_bottom_prior": "bottom_prior",
               "package_human_eval": "human_eval"}


def _module_file(name: str, root: Path) -> Path | None:
    base = root.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports(path: Path, root: Path, top_level_only: bool = False) -> set[str]:
    """Dotted names of the repository modules that ``path`` imports: anywhere in it, or only in
    its module body (for the command's entry files, whose other commands' lazy imports never run
    for `vqvp stage`)."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        pkg = ".".join(path.relative_to(root).parts[:-1])
    names: set[str] = set()
    for node in (tree.body if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] if node.level > 1 else parts)
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    return {n for n in names if n.split(".")[0] in PACKAGES}


def closure(starts: list[str], root: Path = ROOT, entries: tuple[str, ...] = ENTRY) -> set[str]:
    """Repository files (relative paths) imported, directly or not, by the files ``starts``
    (of ``entries``, only the module-level imports count)."""
    todo = [root / s for s in starts]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path, root, top_level_only=str(path.relative_to(root)) in entries):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # every package on the way is imported too
                f = _module_file(".".join(parts[:i]), root)
                if f is not None and f not in seen:
                    todo.append(f)
    return {str(p.relative_to(root)) for p in seen}


def code_deps(stage: str, root: Path = ROOT) -> list[str]:
    return sorted(closure([*ENTRY, f"stages/{stage}.py"], root))


def _leaves(d: dict, prefix: str) -> list[str]:
    out = []
    for k, v in d.items():
        key = f"{prefix}.{k}"
        out.extend(_leaves(v, key) if isinstance(v, dict) and v else [key])
    return out


def stage_params(stage: str, params: dict) -> list[str]:
    """The keys of params.yaml that change `stage`'s outputs: its section's subtrees and leaves,
    bookkeeping left out, plus what it reads of other sections."""
    section = OWN_SECTION.get(stage, stage)
    keys = []
    for k, v in params[section].items():
        if k in BOOKKEEPING:
            continue
        if isinstance(v, dict) and any(leaf.rsplit(".", 1)[-1] in BOOKKEEPING for leaf in _leaves(v, k)):
            keys += [leaf for leaf in _leaves(v, f"{section}.{k}") if leaf.rsplit(".", 1)[-1] not in BOOKKEEPING]
        else:
            keys.append(f"{section}.{k}")
    return keys + EXTRA_SECTIONS.get(stage, [])


def expected(dvc: dict, params: dict, root: Path = ROOT) -> dict:
    out = {}
    for name, spec in dvc["stages"].items():
        data = [d for d in spec.get("deps", []) if d.split("/")[0] in ("data", "models")]
        out[name] = {"deps": data + code_deps(name, root), "params": stage_params(name, params)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite dvc.yaml's deps and params")
    args = ap.parse_args(argv)
    path = ROOT / "dvc.yaml"
    dvc = yaml.safe_load(path.read_text())
    want = expected(dvc, yaml.safe_load((ROOT / "params.yaml").read_text()))
    wrong = {n: w for n, w in want.items() if any(dvc["stages"][n].get(k) != w[k] for k in w)}
    if args.write:
        header = "".join(line for line in path.read_text().splitlines(True) if line.startswith("#"))
        for name, w in want.items():
            dvc["stages"][name].update(w)
        path.write_text(header + yaml.safe_dump(dvc, sort_keys=False, width=120))
        print(f"dvc.yaml: {len(wrong)} stage(s) rewritten")
        return 0
    for name, w in wrong.items():
        for k in w:
            have = dvc["stages"][name].get(k) or []
            missing, extra = sorted(set(w[k]) - set(have)), sorted(set(have) - set(w[k]))
            if missing or extra:
                print(f"{name}.{k}: missing {missing}, not needed {extra}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
