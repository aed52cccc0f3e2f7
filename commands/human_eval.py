"""`vqvp human-eval invite|raters|revoke|serve|analyze DIR`: invite raters, run a rating study, print its table.

Judgments and invitations go to a SQLite file BESIDE the study folder, named after the study's content
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


def _invite(args, db: Path) -> int:
    from vqvp_core.atomic import write_text
    from vqvp_core.human_eval.store import invite

    base = args.base_url.rstrip("/")
    try:
        links = [(rater, f"{base}/#token={token}") for rater, token in invite(db, args.n, args.label)]
    except ValueError as exc:
        raise SystemExit(f"vqvp human-eval invite: {exc}") from None
    text = "rater,link\n" + "".join(f"{r},{link}\n" for r, link in links)
    if args.out:
        write_text(args.out, text, mode=0o600)  # the links are the raters' passwords
        print(f"vqvp human-eval: {len(links)} invitation(s) written to {args.out} (mode 600; "
              f"each link is its rater's password: send each to one person)")
    else:
        print(text, end="")
    return 0


def _raters(db: Path) -> int:
    from vqvp_core.human_eval.store import list_raters

    rows = list_raters(db)
    print(f"{'rater':<12} {'judgments':>9}  {'created':<25} {'revoked':<25} label")
    for r in rows:
        print(f"{r['rater']:<12} {r['judgments']:>9}  {r['created']:<25} {r['revoked'] or '-':<25} {r['label'] or ''}")
    print(f"{len(rows)} rater(s), {sum(r['revoked'] is None for r in rows)} active")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vqvp human-eval", description=__doc__.splitlines()[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    sub = ap.add_subparsers(dest="command", required=True)
    inv = sub.add_parser("invite", help="issue rater invitations (one secret link each)")
    inv.add_argument("dir", type=Path, help="the study folder")
    inv.add_argument("-n", type=int, default=1, help="how many invitations (default %(default)s)")
    inv.add_argument("--base-url", default="http://127.0.0.1:8000",
                     help="the address raters open (default %(default)s)")
    inv.add_argument("--label", default=None, help="a note kept with these invitations (never served)")
    inv.add_argument("--out", type=Path, default=None, help="write rater,link CSV here (mode 600) instead of stdout")
    inv.add_argument("--db", type=Path, default=None, help="judgments file (default: beside DIR)")
    ras = sub.add_parser("raters", help="list the invited raters and how many pairs each has judged")
    ras.add_argument("dir", type=Path, help="the study folder")
    ras.add_argument("--db", type=Path, default=None, help="judgments file (default: beside DIR)")
    rev = sub.add_parser("revoke", help="revoke a rater's invitation (their judgments leave the analysis)")
    rev.add_argument("dir", type=Path, help="the study folder")
    rev.add_argument("rater", help="the rater id (as `raters` lists it)")
    rev.add_argument("--db", type=Path, default=None, help="judgments file (default: beside DIR)")
    serve = sub.add_parser("serve", help="serve the study to invited raters (blocking)")
    serve.add_argument("dir", type=Path, help="the study folder (data/human_eval after the pipeline)")
    serve.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to let other machines rate")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default %(default)s)")
    serve.add_argument("--db", type=Path, default=None, help="judgments file (default: beside DIR)")
    serve.add_argument("--public-origin", default=None,
                       help="scheme://host[:port] raters use, behind a reverse proxy (writes from other origins: 403)")
    serve.add_argument("--rate", type=float, default=10.0, help="requests per second per client (default %(default)s)")
    serve.add_argument("--burst", type=float, default=60.0, help="requests at once per client (default %(default)s)")
    serve.add_argument("--forwarded-allow-ips", default=None,
                       help="the reverse proxy's address: trust its X-Forwarded-For for the client address")
    serve.add_argument("--max-connections-per-client", type=int, default=None,
                       help="open connections per client address (default 16; off with --forwarded-allow-ips)")
    analyze = sub.add_parser("analyze", help="print the paper's Table 1 with 95%% confidence intervals")
    analyze.add_argument("dir", type=Path, help="the study folder")
    analyze.add_argument("--db", type=Path, default=None, help="judgments file (default: beside DIR)")
    analyze.add_argument("--bootstrap", action="store_true", help="bootstrap over pairs instead of Wilson intervals")
    analyze.add_argument("--csv", type=Path, default=None, help="results CSV (default: beside DIR)")


def run(args: argparse.Namespace) -> int:
    db = args.db or default_db(args.dir)
    if args.command == "invite":
        return _invite(args, db)
    if args.command == "raters":
        return _raters(db)
    if args.command == "revoke":
        from vqvp_core.human_eval.store import revoke

        if not revoke(db, args.rater):
            print(f"vqvp human-eval: no active rater {args.rater!r} in {db}", file=sys.stderr)
            return 2
        print(f"vqvp human-eval: revoked {args.rater}")
        return 0
    if args.command == "serve":
        from vqvp_core.human_eval.guard import origin_of
        from vqvp_core.human_eval.server import serve as run_server
        from vqvp_core.human_eval.store import list_raters

        if args.rate <= 0 or args.burst < 1:
            raise SystemExit("vqvp human-eval serve: --rate must be > 0 and --burst >= 1")
        if args.public_origin:
            try:
                origin_of(args.public_origin)
            except ValueError as exc:
                raise SystemExit(f"vqvp human-eval serve: --public-origin: {exc}") from None
        active = sum(r["revoked"] is None for r in list_raters(db))
        print(f"vqvp human-eval: http://{args.host}:{args.port}/  (judgments in {db}; {active} invited rater(s)"
              + ("" if active else "; nobody can vote yet: run `vqvp human-eval invite DIR -n N`") + ")")
        run_server(args.dir, host=args.host, port=args.port, db_path=db, public_origin=args.public_origin,
                   rate_per_s=args.rate, burst=args.burst, forwarded_allow_ips=args.forwarded_allow_ips,
                   max_per_client=args.max_connections_per_client)
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
