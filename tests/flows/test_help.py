"""Every command's --help documents every option (no option without a help text)."""
import argparse

import pytest

from flows.cli import build_parser


def _parsers():
    from stages import STAGES, common, human_eval, lineage, predict  # noqa: F401

    captured = []
    real = argparse.ArgumentParser.parse_args

    def grab(self, args=None, namespace=None):
        captured.append(self)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = grab
    try:
        for main in (predict.main, lineage.main, human_eval.main):
            with pytest.raises(SystemExit):
                main(["-h"])
    finally:
        argparse.ArgumentParser.parse_args = real
    top = build_parser()
    subs = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)][0]
    return captured + [top, *subs.choices.values(), common.parser("ingest", "x")]


def _all(parser):
    yield parser
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for p in a.choices.values():
                yield from _all(p)


def test_every_option_has_help():
    missing = [f"{p.prog} {a.dest}" for top in _parsers() for p in _all(top) for a in p._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help]
    assert not missing, missing
