"""Every command's --help documents every option (no option without a help text)."""
import argparse

import pytest

from flows.cli import build_parser


def _parsers():
    from commands import human_eval, lineage, predict
    from stages import common

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


def test_the_ephemeral_api_gets_time_to_start(monkeypatch):
    """Prefect's 20 s default made a first `vqvp run` fail on a loaded 2-core machine (its server's
    first start runs the database migrations); the CLI gives it 300 s unless told otherwise."""
    import importlib
    import os

    import flows.cli

    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", raising=False)
    importlib.reload(flows.cli)
    assert int(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]) >= 120
    from prefect.settings import get_current_settings

    assert get_current_settings().server.ephemeral.startup_timeout_seconds >= 120
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "45")
    importlib.reload(flows.cli)
    assert os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "45"  # the user's value wins
