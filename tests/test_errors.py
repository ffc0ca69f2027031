"""merc's error contract: a MercError (user-fixable) prints one line and exits 2; anything else is a bug and
raises with its traceback; ``MERC_DEBUG=1`` re-raises MercErrors too. Also the logging options."""
from __future__ import annotations

import logging
import sys

import pytest
from test_data_cli import write_jsonl_folder

import merc.cli
import merc.data.jsonl
from merc import errors
from merc.errors import ConfigError, InputError, MercError, MissingDependencyError


@pytest.fixture(autouse=True)
def only_data_command(monkeypatch):
    monkeypatch.setattr(merc.cli, "COMMANDS", {"data": "merc.data.cli"})
    monkeypatch.delenv("MERC_DEBUG", raising=False)


def test_bug_in_a_reader_raises_with_traceback(tmp_path, monkeypatch, capsys):
    folder = write_jsonl_folder(tmp_path / "corpus")

    def broken(*a, **k):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")
    monkeypatch.setattr(merc.data.jsonl, "read_jsonl", broken)
    with pytest.raises(TypeError, match="unsupported operand"):
        merc.cli.main(["data", "stats", "--dataset", "jsonl", "--data-dir", str(folder)])
    assert "error:" not in capsys.readouterr().err  # not dressed up as a user error


def test_user_error_is_one_line_exit_2_and_merc_debug_reraises(tmp_path, monkeypatch, capsys):
    folder = write_jsonl_folder(tmp_path / "corpus", bad=True)
    argv = ["data", "stats", "--dataset", "jsonl", "--data-dir", str(folder)]
    assert merc.cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("merc data: error: ") and "test.jsonl:2" in err[0]
    monkeypatch.setenv("MERC_DEBUG", "1")
    with pytest.raises(InputError, match="test.jsonl:2"):
        merc.cli.main(argv)


def test_a_plain_value_error_is_not_a_user_error(tmp_path, monkeypatch):
    folder = write_jsonl_folder(tmp_path / "corpus")
    monkeypatch.setattr(merc.data.jsonl, "read_jsonl", lambda *a, **k: int("x"))
    with pytest.raises(ValueError, match="invalid literal"):
        merc.cli.main(["data", "stats", "--dataset", "jsonl", "--data-dir", str(folder)])


@pytest.mark.parametrize("name", [n for n in errors.__all__ if isinstance(getattr(errors, n), type)])
def test_every_kind_is_a_merc_error_and_its_builtin(name):
    kind = getattr(errors, name)
    assert issubclass(kind, MercError)
    if kind is not MercError:
        assert len(kind.__mro__) > 3 and kind.__mro__[2] is not Exception  # MercError + a built-in


def test_missing_optional_package_names_the_install(monkeypatch):
    from merc.encoders import text
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails
    with pytest.raises(MissingDependencyError, match="pip install"):
        text._require_sentence_transformers()


def test_readers_and_options_raise_merc_errors(tmp_path):
    from merc.data import load_corpus
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_corpus("nope", tmp_path)
    with pytest.raises(InputError, match="train.jsonl"):
        load_corpus("jsonl", tmp_path)  # no train.jsonl
    corpus = load_corpus("jsonl", write_jsonl_folder(tmp_path / "c"))
    with pytest.raises(ConfigError) as e:
        corpus["dev"]
    assert isinstance(e.value, KeyError) and "has no split 'dev'" in str(e.value)


@pytest.mark.parametrize("flags, level", [([], logging.INFO), (["-v"], logging.DEBUG),
                                          (["--verbose"], logging.DEBUG), (["--quiet"], logging.WARNING)])
def test_verbosity_options_set_the_merc_log_level(tmp_path, capsys, flags, level):
    folder = write_jsonl_folder(tmp_path / "corpus")
    assert merc.cli.main([*flags, "data", "stats", "--dataset", "jsonl", "--data-dir", str(folder)]) == 0
    assert logging.getLogger("merc").getEffectiveLevel() == level
    logging.getLogger("merc.test").info("an info message")
    err = capsys.readouterr().err
    assert ("merc: an info message" in err) == (level <= logging.INFO)


def test_verbose_and_quiet_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        merc.cli.main(["-v", "--quiet", "data", "stats", "--dataset", "jsonl", "--data-dir", "x"])
