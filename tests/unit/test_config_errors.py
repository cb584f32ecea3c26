"""A config file is plain YAML data: syntax errors and object tags are one-line messages naming
the file and line, and nothing in the file ever runs."""

from __future__ import annotations

import pytest

from atomgfm.config.schema import ConfigError, load_config, read_yaml


def _error(tmp_path, text: str | bytes, name: str = "c.yaml") -> str:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{path}: "), msg
    return msg[len(f"{path}: "):]


def test_python_object_tag_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    text = f"train:\n  lr: 0.1\nx: !!python/object/apply:os.system ['touch {marker}']\n"
    assert _error(tmp_path, text) == (
        "line 3: tag !!python/object/apply:os.system is not allowed: a config is plain YAML data "
        "(mappings, lists, strings, numbers, booleans, null), never Python objects")
    assert not marker.exists()
    assert _error(tmp_path, "model:\n  backbone: !!python/name:os.system\n").startswith(
        "line 2: tag !!python/name:os.system is not allowed")
    assert _error(tmp_path, "a: !custom 3\n").startswith("line 1: tag !custom is not allowed")


@pytest.mark.parametrize("text, expected", [
    ("train:\n  lr: 1\n  max_steps: 3: 4\n",
     "line 3: YAML syntax error: mapping values are not allowed here"),
    ("train:\n\tlr: 1\n", "line 2: YAML syntax error: found character '\\t' that cannot start "
                          "any token (while scanning for the next token)"),
    ("data:\n  datasets: [a, b\nmodel: {}\n",
     "line 3: YAML syntax error: expected ',' or ']', but got ':' (while parsing a flow sequence "
     "that starts on line 2)"),
    ("a: 'abc\nb: 2\n", "line 3: YAML syntax error: found unexpected end of stream (while "
                        "scanning a quoted scalar that starts on line 1)"),
    ("train:\n  lr: *nope\n", "line 2: YAML syntax error: found undefined alias 'nope'"),
    ("train: {}\nmodel: \x07\n", "line 2: special characters are not allowed (character '\\x07')"),
])
def test_yaml_syntax_errors_name_the_line(tmp_path, text, expected):
    assert _error(tmp_path, text) == expected


def test_not_a_text_file(tmp_path):
    msg = _error(tmp_path, b"train: {}\n\xff\xfe\x00")
    assert msg == "not a text file (invalid UTF-8 at byte 10)"


def test_a_directory_is_not_a_config(tmp_path):
    (tmp_path / "d.yaml").mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "d.yaml")
    assert str(info.value) == f"{tmp_path / 'd.yaml'}: is a directory, not a YAML file"


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_config(tmp_path / "no.yaml")
    assert str(info.value) == f"config file not found: {tmp_path / 'no.yaml'}"


def test_top_level_must_be_a_mapping(tmp_path):
    assert _error(tmp_path, "- train\n- model\n") == "top level must be a mapping, got list"
    assert _error(tmp_path, "just text\n") == "top level must be a mapping, got str"


def test_unknown_key_names_the_file_and_section(tmp_path):
    msg = _error(tmp_path, "train: {max_stepz: 3}\n")
    assert msg.startswith("config.train: unknown key(s) ['max_stepz']; allowed: [")


def test_keys_must_be_strings(tmp_path):
    assert _error(tmp_path, "train:\n  1: 2\n") == "config.train: key 1 is not a string"
    assert _error(tmp_path, "null: 3\n") == "config: key None is not a string"


def test_empty_file_is_all_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("# nothing set\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.train.max_steps == 1000 and cfg.data.root == str(tmp_path.resolve())


def test_non_string_root_is_a_type_error_not_a_crash(tmp_path):
    assert _error(tmp_path, "data: {root: 5}\n") == "config.data.root: expected a string, got 5"


def test_read_yaml_is_plain_data(tmp_path):
    (tmp_path / "d.yaml").write_text("a: [1, 2.5, true, null, x]\n")
    assert read_yaml(tmp_path / "d.yaml") == {"a": [1, 2.5, True, None, "x"]}


@pytest.mark.parametrize("text, expected", [
    ("x: !!python/object/apply:os.system ['true']\n",
     "line 1: tag !!python/object/apply:os.system is not allowed"),
    ("train:\n  lr: 1\n  max_steps: 3: 4\n",
     "line 3: YAML syntax error: mapping values are not allowed here\n"),
    ("- a\n", "top level must be a mapping, got list\n"),
    ("train: {max_stepz: 3}\n", "config.train: unknown key(s) ['max_stepz']"),
])
def test_cli_prints_config_errors_in_one_line(tmp_path, capsys, text, expected):
    from atomgfm.cli.main import main

    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"atomgfm train: error: {path}: {expected}")
    assert err.count("\n") == 1


# ---------------------------------------------------------------- the CLI's logging and errors


def _fake_verb(args) -> int:
    import logging

    lib = logging.getLogger("atomgfm.some.module")
    lib.debug("details")
    lib.info("resumed from last.pt at step 4")
    lib.warning("files of dataset 'a' changed since training")
    print('{"output": 1}')
    if getattr(args, "checkpoint", None) == "boom":
        raise KeyError("unknown head 'x'")
    return 0


@pytest.mark.parametrize("argv, expected", [
    (["info"], ["[atomgfm] resumed from last.pt at step 4",
                "[atomgfm] warning: files of dataset 'a' changed since training"]),
    (["-q", "info"], ["[atomgfm] warning: files of dataset 'a' changed since training"]),
    (["info", "--quiet"], ["[atomgfm] warning: files of dataset 'a' changed since training"]),
    (["info", "-v"], ["[atomgfm] debug: details", "[atomgfm] resumed from last.pt at step 4",
                      "[atomgfm] warning: files of dataset 'a' changed since training"]),
    (["--verbose", "info"], ["[atomgfm] debug: details",
                             "[atomgfm] resumed from last.pt at step 4",
                             "[atomgfm] warning: files of dataset 'a' changed since training"]),
])
def test_cli_shows_library_log_records_by_verbosity(monkeypatch, capsys, argv, expected):
    import logging

    from atomgfm.cli import main as cli
    from atomgfm.cli.verbs import info as info_verb

    monkeypatch.setattr(info_verb, "run", _fake_verb)
    logger = logging.getLogger("atomgfm")
    before = (logger.level, list(logger.handlers))
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert out == '{"output": 1}\n'  # command output stays on stdout
    assert err.splitlines() == expected
    assert (logger.level, list(logger.handlers)) == before  # main() leaves logging as it was


def test_cli_errors_are_one_line_and_verbose_adds_the_traceback(monkeypatch, capsys):
    from atomgfm.cli import main as cli
    from atomgfm.cli.verbs import info as info_verb

    monkeypatch.setattr(info_verb, "run", _fake_verb)
    assert cli.main(["-q", "info", "boom"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["[atomgfm] warning: files of dataset 'a' changed since training",
                                "atomgfm info: error: unknown head 'x'"]
    assert cli.main(["-v", "info", "boom"]) == 2
    err = capsys.readouterr().err
    assert ("[atomgfm] debug: traceback of the error below\n"
            "Traceback (most recent call last):") in err
    assert err.endswith("KeyError: \"unknown head 'x'\"\natomgfm info: error: unknown head 'x'\n")


def test_cli_quiet_and_verbose_exclude_each_other(capsys):
    from atomgfm.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["-q", "-v", "info"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_cli_names_an_unreadable_file(tmp_path, capsys):
    from atomgfm.cli.main import main

    path = tmp_path / "c.yaml"
    path.mkdir()
    assert main(["train", str(path)]) == 2
    assert capsys.readouterr().err == (f"atomgfm train: error: {path}: is a directory, not a YAML "
                                       "file\n")
