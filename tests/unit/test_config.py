from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import Policy, load_settings
from pipelines.errors import ConfigError


def test_embedded_default_needs_no_file() -> None:
    s = load_settings(env={})
    assert s.data_dir == Path("./var")
    assert s.default_region == "CN"
    p = s.policy("GD")
    assert (p.freeze_days, p.suspend_days, p.min_effective_reminders, p.max_hold_days) == (90, 60, 2, 30)
    assert p.reminder_days() == (0, 30, 76)


def test_file_then_env_override(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'data_dir = "/srv/recycle"\n'
        "[policy.default]\nfreeze_days = 60\n"
        "[policy.GD]\nfreeze_days = 80\nmax_hold_days = 10\n"
        '[channels.smtp]\nhost = "mail.internal"\nport = 587\nstarttls = true\nfrom = "r@c.example"\n'
        '[channels.sms]\nurl = "http://sms.internal/send"\n'
    )
    s = load_settings(cfg, env={"RECYCLE_SMTP_PASSWORD": "s3cret", "RECYCLE_SMTP_PORT": "2525"})
    assert s.data_dir == Path("/srv/recycle")
    assert s.policy("GD").freeze_days == 80 and s.policy("GD").max_hold_days == 10
    # a province without its own table inherits the default, not the built-in
    assert s.policy("SD").freeze_days == 60
    # a province table inherits unspecified keys from [policy.default]
    assert s.policy("GD").suspend_days == 60
    assert s.smtp.host == "mail.internal" and s.smtp.port == 2525 and s.smtp.starttls
    assert s.smtp.sender == "r@c.example" and s.smtp.password == "s3cret"
    assert "s3cret" not in repr(s)
    assert s.sms.url == "http://sms.internal/send"


def test_config_path_from_env(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('default_region = "US"\n')
    assert load_settings(env={"RECYCLE_CONFIG": str(cfg)}).default_region == "US"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("colour = 1\n", "unknown key"),
        ("[policy.default]\nfreez_days = 60\n", "freez_days"),
        ("[policy.default]\nfreeze_days = 10\nreminder_offsets = [0, 30]\n", "outside"),
        ("[channels.fax]\nnumber = 1\n", "fax"),
        ("data_dir = \n", "config file"),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, text: str, match: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_settings(cfg, env={})


def test_bad_env_value() -> None:
    with pytest.raises(ConfigError, match="RECYCLE_SMTP_PORT"):
        load_settings(env={"RECYCLE_SMTP_PORT": "twenty-five"})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", env={})


def test_policy_reminder_days_resolve_negative_offsets() -> None:
    assert Policy(freeze_days=60, reminder_offsets=(0, 30, -14)).reminder_days() == (0, 30, 46)
