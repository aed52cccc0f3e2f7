"""`vqvp human-eval serve DIR` / `vqvp human-eval analyze DIR`: run a rating study, print its table.

Judgments go to a SQLite file BESIDE the study folder, named after the study's content
(`DIR.judgments-<digest>.sqlite`, vqvp_core/human_eval/store.py): the one place the package
builder, the server and the analysis use too.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def default_db(folder: Path) -> Path:
    from vqvp_core.human_eval.store import judgments_path

    try:
        return judgments_path(folder)
    except ValueError as exc:
        raise SystemExit(f"vqvp human-eval: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vqvp human-eval", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the study to raters (blocking)")
    serve.add_argument("dir", type=Path, help="the study folder (data/human_eval after the pipeline)")
    serve.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to let other machines rate")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default %(default)s)")
    serve.add_argument("--db", type=Path, default=None, help="judgments file (default: beside DIR)")
    analyze = sub.add_parser("analyze", help="print the paper's Table 1 with 95%% confidence intervals")
    analyze.add_argument("dir", type=Path, help="the study folder")
    analyze.add_argument("--db", type=Path, default=None, help="judgments file (default: beside DIR)")
    analyze.add_argument("--bootstrap", action="store_true", help="bootstrap over pairs instead of Wilson intervals")
    analyze.add_argument("--csv", type=Path, default=None, help="results CSV (default: beside DIR)")
    args = ap.parse_args(argv)
    db = args.db or default_db(args.dir)
    if args.command == "serve":
        from vqvp_core.human_eval.server import serve as run_server

        print(f"vqvp human-eval: http://{args.host}:{args.port}/  (judgments in {db})")
        run_server(args.dir, host=args.host, port=args.port, db_path=db)
        return 0
    from vqvp_core.human_eval.analysis import analyze as run_analysis
    from vqvp_core.human_eval.analysis import format_table

    if not db.exists():
        print(f"vqvp human-eval: no judgments yet ({db} does not exist)", file=sys.stderr)
        return 3
    csv = args.csv or db.with_name(db.name.replace(".judgments-", ".results-").removesuffix(".sqlite") + ".csv")
    table = run_analysis(args.dir, db_path=db, method="bootstrap" if args.bootstrap else "wilson", results_path=csv)
    print(format_table(table))
    print(f"\nwritten: {csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
