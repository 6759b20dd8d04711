from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipelines.config import Policy, Settings, load_settings
from pipelines.errors import ConfigError


def test_embedded_default_needs_no_file() -> None:
    s = load_settings(env={})
    assert s.data_dir == Path("./var")
    assert s.default_region == "CN"
    p = s.policy("GD")
    assert (p.freeze_days, p.suspend_days, p.min_effective_reminders, p.max_hold_days) == (90, 60, 2, 30)
    assert p.reminder_days() == (0, 30, 76)
    assert (p.hold_reminder_every_days, p.max_hold_reminders) == (7, 5)


def test_hold_escalation_is_configured_per_province_and_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[policy.GD]\nhold_reminder_every_days = 2\nmax_hold_reminders = 10\n")
    s = load_settings(cfg, env={})
    assert (s.policy("GD").hold_reminder_every_days, s.policy("GD").max_hold_reminders) == (2, 10)
    assert s.policy("SD").hold_reminder_every_days == 7
    for bad in ({"hold_reminder_every_days": 0}, {"max_hold_reminders": 0}):
        with pytest.raises(ConfigError, match="hold_reminder_every_days and max_hold_reminders"):
            Policy(**bad)  # type: ignore[arg-type]


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


def test_timezone_defaults_by_region_and_is_validated(tmp_path: Path) -> None:
    assert load_settings(env={}).timezone == "Asia/Shanghai"
    assert load_settings(env={"RECYCLE_DEFAULT_REGION": "US"}).timezone == "UTC"
    assert load_settings(env={}, default_region="US").timezone == "UTC"
    assert Settings().timezone == "Asia/Shanghai" and Settings(default_region="DE").timezone == "UTC"
    cfg = tmp_path / "c.toml"
    cfg.write_text('timezone = "Asia/Urumqi"\nreceipt_clock_skew_minutes = 3\n')
    s = load_settings(cfg, env={})
    assert (s.timezone, s.receipt_clock_skew_minutes) == ("Asia/Urumqi", 3)
    assert load_settings(cfg, env={"RECYCLE_TIMEZONE": "Europe/Berlin"}).timezone == "Europe/Berlin"
    cfg.write_text('timezone = "Mars/Olympus_Mons"\n')
    with pytest.raises(ConfigError, match=r"timezone 'Mars/Olympus_Mons'.*RECYCLE_TIMEZONE"):
        load_settings(cfg, env={})
    with pytest.raises(ConfigError, match=r"timezone '\.\./etc/passwd'"):
        load_settings(env={"RECYCLE_TIMEZONE": "../etc/passwd"})
    with pytest.raises(ConfigError, match="receipt_clock_skew_minutes"):
        Settings(receipt_clock_skew_minutes=-1)


def test_carrier_days_in_python_and_sql_agree() -> None:
    import duckdb

    s = Settings()  # CN: Asia/Shanghai, UTC+8
    utc = dt.UTC
    cases = [
        (dt.datetime(2026, 12, 4, 23, 0, tzinfo=utc), dt.date(2026, 12, 5)),  # 07:00 Beijing
        (dt.datetime(2026, 12, 5, 12, 0, tzinfo=utc), dt.date(2026, 12, 5)),  # 20:00 Beijing
        (dt.datetime(2026, 12, 4, 15, 30), dt.date(2026, 12, 4)),  # naive = UTC; 23:30 Beijing
        (dt.datetime(2026, 12, 4, 16, 30), dt.date(2026, 12, 5)),  # 00:30 Beijing
        (dt.datetime(2026, 12, 4, 20, 31, tzinfo=utc), dt.date(2026, 12, 5)),  # 04:31 Beijing
    ]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'America/New_York'")  # the session's zone must not matter
    for instant, want in cases:
        assert s.carrier_day(instant) == want
        naive = instant.replace(tzinfo=None)
        assert con.execute(f"SELECT {s.carrier_day_sql('$t')}", {"t": naive}).fetchone() == (want,)
    assert s.day_start(dt.date(2026, 12, 5)) == dt.datetime(2026, 12, 4, 16, 0, tzinfo=utc)
    assert Settings(default_region="US").carrier_day(dt.datetime(2026, 12, 4, 23, 0)) == dt.date(2026, 12, 4)


def test_channels_smpp_from_file_and_env(tmp_path: Path) -> None:
    assert load_settings(env={}).smpp is None  # no section: SMS go to the HTTP gateway
    cfg = tmp_path / "c.toml"
    cfg.write_text('[channels.smpp]\nhost = "smsc.example"\nwindow = 10\nrate = 200\n', encoding="utf-8")
    s = load_settings(cfg, env={"RECYCLE_SMPP_PASSWORD": "pw", "RECYCLE_SMPP_SYSTEM_ID": "recycle"})
    assert s.smpp is not None
    assert (s.smpp.host, s.smpp.port, s.smpp.window, s.smpp.rate) == ("smsc.example", 2775, 10, 200)
    assert (s.smpp.system_id, s.smpp.password) == ("recycle", "pw") and "pw" not in repr(s.smpp)
    assert load_settings(env={"RECYCLE_SMPP_HOST": "h"}).smpp is not None


def test_channels_smpp_refuses_a_password_in_the_file_and_bad_values(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[channels.smpp]\npassword = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="RECYCLE_SMPP_PASSWORD"):
        load_settings(cfg, env={})
    cfg.write_text("[channels.smpp]\nwindow = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="window"):
        load_settings(cfg, env={})
    with pytest.raises(ConfigError, match="at most 8"):
        load_settings(env={"RECYCLE_SMPP_PASSWORD": "123456789"})


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "America/New_York", "UTC", "Pacific/Kiritimati"])
def test_an_airflow_logical_date_names_the_carrier_day_east_or_west(zone: str) -> None:
    """The DAG's timetable starts a night's interval at the carrier's midnight; a typed date is
    midnight UTC; a trigger "now" falls inside the carrier's day. Each names the right day."""
    s = Settings(timezone=zone)
    day = dt.date(2026, 9, 3)
    assert s.night_of(dt.datetime.combine(day, dt.time(), s.zone)) == day
    assert s.night_of(dt.datetime.combine(day, dt.time(), s.zone).astimezone(dt.UTC)) == day  # as Airflow
    assert s.night_of(dt.datetime(2026, 9, 3, tzinfo=dt.UTC)) == day
    assert s.night_of(dt.datetime(2026, 9, 3)) == day  # naive: UTC
    noon_local = dt.datetime.combine(day, dt.time(12), s.zone)
    assert s.night_of(noon_local.astimezone(dt.UTC)) == day
    late_local = dt.datetime.combine(day, dt.time(23, 30), s.zone)
    assert s.night_of(late_local) == day
