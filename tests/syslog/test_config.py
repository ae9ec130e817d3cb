"""SyslogSinkConfig: strict validation, defaults, TLS context, and the loud verify=false."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from bridge import metrics
from bridge.sinks.relp import RelpClient
from bridge.sinks.syslog import SyslogSink, SyslogSinkConfig
from tests.syslog.conftest import Certs


def config(**overrides: Any) -> SyslogSinkConfig:
    return SyslogSinkConfig.model_validate(
        {"name": "siem", "type": "syslog", "host": "siem.example", **overrides})


def test_registered_as_an_entry_point() -> None:
    (entry,) = entry_points(group="bridge.sinks", name="syslog")
    assert entry.load() is SyslogSinkConfig


def test_defaults() -> None:
    tcp = config()
    assert (tcp.protocol, tcp.framing, tcp.format, tcp.rfc) == ("tcp", "octet_counting", "cef",
                                                               5424)
    assert (tcp.effective_port, tcp.effective_max_message_size, tcp.batch_size) == (514, None, 500)
    udp = config(protocol="udp")
    assert (udp.effective_port, udp.effective_max_message_size) == (514, 2048)
    assert config(rfc="3164").rfc == 3164  # as an environment override spells it
    tls = config(protocol="tls")
    assert (tls.effective_port, tls.verify) == (6514, True)
    assert isinstance(tls.build(), SyslogSink)
    relp = config(protocol="relp")
    assert (relp.effective_port, relp.relp_window, relp.uses_tls) == (2514, 1024, False)
    assert isinstance(relp.build().transport, RelpClient)
    relps = config(protocol="relp", tls=True, server_name="siem.internal", relp_window=64)
    assert (relps.uses_tls, relps.verify, relps.relp_window) == (True, True, 64)


@pytest.mark.parametrize("overrides", [
    {"ca_bundle": "/x"}, {"server_name": "x"}, {"verify": False},  # TLS settings on tcp
    {"protocol": "relp", "ca_bundle": "/x"},  # and on RELP without TLS
    {"tls": True}, {"protocol": "tls", "tls": True},  # `tls` is for RELP
    {"relp_window": 10}, {"protocol": "relp", "relp_window": 0},
    {"protocol": "tls", "client_cert": "/x"},  # a certificate without its key
    {"protocol": "udp", "max_message_size": 70000},
    {"max_message_size": 100},
    {"facility": "local9"}, {"facility": 24},
    {"severity_map": {"urgent": "err"}}, {"severity_map": {"high": "loud"}},
    {"rfc": 3164, "structured_data": True},
    {"protocol": "quic"}, {"format": "xml"}, {"rfc": 3165}, {"framing": "nul"},
    {"app_name": "has space"}, {"msgid": "x" * 33},
    {"unknown_key": 1}, {"connect_grace": 10, "connect_timeout": 5},
    {"cef": {"fields": {"act": "title"}}}, {"leef": {"delimiter": "=="}},
])
def test_invalid_settings_are_rejected(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        config(**overrides)


def test_missing_tls_files_fail_the_build_clearly(tmp_path: Path) -> None:
    cfg = config(protocol="tls", ca_bundle=str(tmp_path / "nope.pem"))
    with pytest.raises(ValueError, match="cannot load TLS files"):
        cfg.build()


def test_client_key_password_comes_from_a_file_and_stays_secret(
        certs: Certs, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("hunter2-hunter2\n")
    cfg = config(protocol="tls", ca_bundle=str(certs.ca), client_cert=str(certs.client_cert),
                 client_key=str(certs.client_key), client_key_password_file=str(secret))
    assert cfg.client_key_password is not None
    assert cfg.client_key_password.get_secret_value() == "hunter2-hunter2"
    assert "hunter2" not in repr(cfg)
    cfg.build()  # an unencrypted key ignores the password


def test_verify_false_is_loud() -> None:
    gauge = metrics.TLS_VERIFY_DISABLED.labels("insecure-siem")
    gauge.set(0)
    with capture_logs() as logs:
        config(name="insecure-siem", protocol="tls", verify=False).build()
    warning = next(e for e in logs if e["event"] == "tls_verification_disabled")
    assert warning["log_level"] == "warning" and warning["component"] == "insecure-siem"
    assert gauge._value.get() == 1
