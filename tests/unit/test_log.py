"""Messages through logging (core/log.py): INFO on stdout, warnings on stderr, rank 0 only where asked, and the
launcher's console taking every record while it runs."""

import logging

from medtrain.core.log import get_logger, log_rank_zero, redirect_console, setup_logging


def test_the_console_splits_by_level_and_can_be_redirected(capsys):
    setup_logging()
    setup_logging()  # idempotent: one console, not two
    log = get_logger("medtrain.some.module")
    log.info("a note")
    log.warning("warning: a problem")
    out = capsys.readouterr()
    assert out.out == "a note\n" and out.err == "warning: a problem\n"
    taken: list[str] = []
    undo = redirect_console(taken.append)
    log.error("error: to the launcher's console")
    undo()
    log.info("back on stdout")
    assert taken == ["error: to the launcher's console"] and capsys.readouterr().out == "back on stdout\n"
    assert get_logger("bench.script").name == "medtrain.bench.script"


def test_log_rank_zero_is_silent_on_other_ranks(monkeypatch, caplog):
    log = get_logger(__name__)
    with caplog.at_level(logging.INFO, logger="medtrain"):
        monkeypatch.setenv("RANK", "3")
        log_rank_zero(log, "every rank knows this")
        monkeypatch.setenv("RANK", "0")
        log_rank_zero(log, "said once")
    assert caplog.messages == ["said once"]
