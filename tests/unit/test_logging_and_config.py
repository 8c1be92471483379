"""Structured logs and configuration defaults."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest

from tradewire.config import Settings, master_key_bytes, operator_token
from tradewire.errors import ConfigError
from tradewire.logging import JsonFormatter, bind, log


def record(logger: logging.Logger, caplog: pytest.LogCaptureFixture) -> dict[str, object]:
    line = JsonFormatter().format(caplog.records[-1])
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_json_lines_carry_the_bound_key_fields(caplog: pytest.LogCaptureFixture) -> None:
    """Inside ``bind``, every line carries userId, tradeId and symbol; extra fields too."""
    logger = logging.getLogger("tradewire.test")
    with caplog.at_level(logging.INFO), bind(userId=7, symbol="BTCUSDT"), bind(tradeId=42):
        log(logger, logging.INFO, "trade updated", event="SL_TRIGGERED")
    line = record(logger, caplog)
    assert line["userId"] == 7 and line["tradeId"] == 42 and line["symbol"] == "BTCUSDT"
    assert line["event"] == "SL_TRIGGERED" and line["msg"] == "trade updated"
    assert line["level"] == "info"


def test_context_does_not_leak_out_of_bind(caplog: pytest.LogCaptureFixture) -> None:
    """Fields bound in a block are gone after it."""
    logger = logging.getLogger("tradewire.test")
    with bind(userId=1):
        pass
    with caplog.at_level(logging.INFO):
        logger.info("outside")
    assert "userId" not in record(logger, caplog)


def test_exceptions_become_the_error_field(caplog: pytest.LogCaptureFixture) -> None:
    """A logged exception is reported in ``error`` with its type."""
    logger = logging.getLogger("tradewire.test")
    with caplog.at_level(logging.ERROR):
        try:
            raise TimeoutError("database did not answer")
        except TimeoutError:
            logger.exception("write failed")
    assert record(logger, caplog)["error"] == "TimeoutError: database did not answer"


def test_defaults_are_the_one_machine_deployment(tmp_path: Path) -> None:
    """Unset, the database is a SQLite file under data_dir and the exchange the simulator."""
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path}/tradewire.db"
    assert settings.bus_url == "embedded" and settings.lock_url == "memory"
    assert settings.uses_simulator and settings.ws_base_url == "ws://127.0.0.1:8090"
    assert Settings(data_dir=tmp_path, retry_delays_s="1,4,16").retry_delays_s == (1, 4, 16)


def test_master_key_is_generated_once_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without TRADEWIRE_MASTER_KEY a key is generated into data/ (mode 600), with a warning,
    and reused afterwards."""
    settings = Settings(data_dir=tmp_path)
    with caplog.at_level(logging.WARNING):
        first = master_key_bytes(settings)
    assert len(first) == 32 and "generated a new master key" in caplog.text
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600
    assert master_key_bytes(settings) == first
    assert operator_token(settings) == operator_token(settings)


def test_a_bad_master_key_is_a_clear_error(tmp_path: Path) -> None:
    """A master key that is not base64 of 32 bytes is refused with a message saying so."""
    short = base64.urlsafe_b64encode(b"x" * 16).decode()
    with pytest.raises(ConfigError, match="32 bytes"):
        master_key_bytes(Settings(data_dir=tmp_path, master_key=short))


def test_binding_fields_already_bound_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    from tradewire.logging import current

    with bind(userId=1, symbol="BTCUSDT"):
        outer = current()
        with bind(userId=1, symbol="BTCUSDT"):  # the same values: nothing copied
            assert current() == outer
            with bind(userId=True):  # equal to 1 but another type: bound
                assert current()["userId"] is True
        with bind(userId=8, tradeId=None):
            assert current() == {"userId": 8, "symbol": "BTCUSDT"}
        assert current() == outer
    assert current() == {}
