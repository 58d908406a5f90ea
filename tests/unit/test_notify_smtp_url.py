"""SMTP URLs: scheme, host, port, credentials and TLS mode."""

from __future__ import annotations

import pytest

from paperwire_notify.mailer import SmtpServer


def test_smtp_urls_name_host_port_credentials_and_tls() -> None:
    assert SmtpServer.from_url("smtp://127.0.0.1:2525") == SmtpServer("127.0.0.1", 2525)
    assert SmtpServer.from_url("smtps://u%40x:p%2Fw@mail.example:465") == SmtpServer(
        "mail.example", 465, username="u@x", password="p/w", use_tls=True
    )
    assert SmtpServer.from_url("smtp+starttls://mail.example") == SmtpServer(
        "mail.example", 587, start_tls=True
    )
    with pytest.raises(ValueError):
        SmtpServer.from_url("http://mail.example")
