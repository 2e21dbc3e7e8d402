"""Where the statement signing key is configured: BKR_STATEMENT_KEY_FILE, else `[statements]`."""

from pathlib import Path

import pytest

from bkr.domain.errors import InvalidInput
from bkr.settings import load_config, statement_key_file


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bkr.toml"
    path.write_text(text)
    return path


def test_a_relative_key_file_is_read_from_the_config_files_directory(tmp_path: Path) -> None:
    path = config(tmp_path, '[statements]\nsigning_key_file = "keys/statement.key"\n')

    assert statement_key_file(path, {}) == tmp_path / "keys" / "statement.key"
    load_config(path)  # the program's own reading accepts the section


def test_the_environment_wins_over_the_config(tmp_path: Path) -> None:
    path = config(tmp_path, '[statements]\nsigning_key_file = "/etc/bkr/old.key"\n')

    assert statement_key_file(path, {"BKR_STATEMENT_KEY_FILE": "/run/new.key"}) == Path("/run/new.key")
    assert statement_key_file(path, {"BKR_STATEMENT_KEY_FILE": ""}) == Path("/etc/bkr/old.key")


def test_without_either_no_key_is_configured(tmp_path: Path) -> None:
    assert statement_key_file(None, {}) is None
    assert statement_key_file(config(tmp_path, "[program]\n"), {}) is None


@pytest.mark.parametrize(("text", "message"), [
    ('[statements]\nsigning_key = "x"\n', "unknown setting(s) statements.signing_key"),
    ("[statements]\nsigning_key_file = 3\n", "is not a file name"),
])
def test_a_mistyped_statements_section_is_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        statement_key_file(config(tmp_path, text), {})
