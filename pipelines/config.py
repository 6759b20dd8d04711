"""Settings: one frozen object built once from an optional TOML file and RECYCLE_* variables.

Defaults are the embedded default (data in ``./var``, CN numbering, the policy of
DESIGN.md); a file overrides them and environment variables override the file for
secrets and endpoints. Build it once with :func:`load_settings` and pass it in.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError

ENV_CONFIG = "RECYCLE_CONFIG"


@dataclass(frozen=True)
class Policy:
    """The recycling rules of one region (province); ``[policy.<code>]`` in the config file."""

    freeze_days: int = 90  # days a cancelled number is held before it may be released
    suspend_days: int = 60  # days a 双停 suspension lasts before it becomes a disconnection
    reminder_offsets: tuple[int, ...] = (0, 30, -14)  # days after disconnection; <0: before freeze end
    min_effective_reminders: int = 2  # delivered/acknowledged reminders on distinct days
    max_hold_days: int = 30  # after this many days held, release with a compliance exception
    # While held, the hold reminder is repeated on every channel every this many days, at most
    # max_hold_reminders times counting the first (day 0, 7, 14, 21, 28 of a 30-day hold): one
    # reminder and then silence let a release with an exception pass unnoticed (issue 15).
    hold_reminder_every_days: int = 7
    max_hold_reminders: int = 5
    # Days a number is listed as pending (the platforms' notice) before the gate may release it,
    # counted in the carrier's days from the night it was listed (docs/feeds.md, "Pending").
    min_notice_days: int = 7

    def __post_init__(self) -> None:
        if self.freeze_days < 1 or self.suspend_days < 1:
            raise ConfigError("policy: freeze_days and suspend_days must be at least 1 day")
        if self.hold_reminder_every_days < 1 or self.max_hold_reminders < 1:
            raise ConfigError("policy: hold_reminder_every_days and max_hold_reminders must be at least 1")
        if self.min_effective_reminders < 0 or self.max_hold_days < 0 or self.min_notice_days < 0:
            raise ConfigError(
                "policy: min_effective_reminders, max_hold_days and min_notice_days must be >= 0"
            )
        for off in self.reminder_offsets:
            if off >= self.freeze_days or -off > self.freeze_days:
                raise ConfigError(
                    f"policy: reminder offset {off} lies outside a {self.freeze_days}-day freeze"
                )

    def reminder_days(self) -> tuple[int, ...]:
        """Offsets resolved to days after disconnection, sorted and de-duplicated."""
        return tuple(sorted({o if o >= 0 else self.freeze_days + o for o in self.reminder_offsets}))


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "localhost"
    port: int = 25
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str = "reminders@carrier.example"  # env RECYCLE_SMTP_FROM
    starttls: bool = False
    timeout_s: float = 10.0
    # Connections kept open at once (``[channels.smtp] connections``): each carries its share of
    # a batch, pipelined. 4 measured near the best with the loopback simulator on 2 cores
    # (benchmarks/bench_night.py --channels-only); a relay's per-client limit is usually 10-20.
    connections: int = 4


@dataclass(frozen=True)
class SmsSettings:
    url: str = "http://localhost:8025/send"
    token: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0
    # Requests in flight over one keep-alive pool (``[channels.sms] concurrency``).
    concurrency: int = 8


@dataclass(frozen=True)
class SmppSettings:
    """``[channels.smpp]``: the carrier's SMSC over SMPP 3.4 (DESIGN.md, "Channels and scale").

    Env RECYCLE_SMPP_HOST, _PORT, _SYSTEM_ID, _PASSWORD, _SOURCE; the password only from the
    environment (or an Airflow Connection), never from the file. Set, SMS go through the SMSC."""

    host: str = "localhost"
    port: int = 2775
    system_id: str = ""
    password: str | None = field(default=None, repr=False)
    source: str = ""  # source address: the carrier's short code (e.g. 10086) or sender name
    window: int = 50  # submit_sm in flight
    rate: float = 500.0  # messages/s the SMSC allows
    timeout_s: float = 10.0  # a response later than this: the link is dead, rebind
    enquire_link_s: float = 30.0  # idle this long: enquire_link
    receipt_grace_s: float = 5.0  # after the last submit, wait this long for receipts on the bind
    max_rebinds: int = 5  # per batch; then the rest of the batch is transient

    def __post_init__(self) -> None:
        if self.window < 1 or self.rate <= 0 or self.timeout_s <= 0 or self.receipt_grace_s < 0:
            raise ConfigError("[channels.smpp]: window >= 1, rate > 0, timeout_s > 0, receipt_grace_s >= 0")
        # SMPP 3.4 (5.2.1, 5.2.2): system_id at most 15 octets, password at most 8; longer ones
        # would be cut short on the wire and the bind refused with a misleading answer.
        if len(self.system_id.encode()) > 15 or len((self.password or "").encode()) > 8:
            raise ConfigError(
                "[channels.smpp]: system_id is at most 15 characters and RECYCLE_SMPP_PASSWORD at most 8"
            )


@dataclass(frozen=True)
class LetterSettings:
    """Letters go to the print house as one CSV batch per day under ``<data>/outbox/letters``."""

    enabled: bool = True


@dataclass(frozen=True)
class LedgerSettings:
    origin: str = "carrier.example/number-recycling/ledger"
    # C2SP tlog-checkpoint: the checkpoint key's name SHOULD be the log's origin.
    key_name: str = "carrier.example/number-recycling/ledger"


@dataclass(frozen=True)
class S3StorageSettings:
    """``[storage.s3]``: how to reach an S3-compatible object store (DESIGN.md, "Channels and scale").

    Env RECYCLE_S3_ENDPOINT_URL, RECYCLE_S3_REGION. Credentials never come from here: the AWS
    SDK reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or an instance/pod role) itself."""

    endpoint_url: str = ""  # empty: AWS itself; else e.g. "https://minio.internal:9000"
    region: str = ""  # empty: the SDK's default (AWS_REGION, else us-east-1)
    # An http:// endpoint sends requests (signed, not encrypted) in clear: only on purpose
    # (a loopback test server, a MinIO on the same host), never by a typo in the scheme.
    allow_http: bool = False


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./var")
    default_region: str = "CN"
    carrier_name: str = "Example Mobile"
    unbind_url: str = "https://unbind.carrier.example"  # the carrier's own unbinding service
    national_unbind_service: str = (
        "一证通查 / 一键解绑 (China Academy of Information and Communications Technology)"
    )
    policies: Mapping[str, Policy] = field(default_factory=lambda: {"default": Policy()})
    smtp: SmtpSettings = SmtpSettings()
    sms: SmsSettings = SmsSettings()
    smpp: SmppSettings | None = None  # None: no [channels.smpp], SMS go to the HTTP gateway
    letter: LetterSettings = LetterSettings()
    ledger: LedgerSettings = LedgerSettings()
    exception_rate_threshold: float = 0.05  # alert when released-with-exception / released exceeds this
    # The carrier's days (IANA name; env RECYCLE_TIMEZONE): logical dates, effective days of
    # receipts and the server's "today" are days in this zone; stored instants stay UTC.
    # Empty: the region's zone (Asia/Shanghai for CN, else UTC), settled in __post_init__.
    timezone: str = ""
    # A gateway's clock may run behind ours: a receipt up to this many minutes before its
    # reminder's send time still counts (reminders.receipts).
    receipt_clock_skew_minutes: int = 10
    # Contacts are erased (crypto-shredded, pipelines.contacts) this many days after release.
    # 180: the prior owner may still need an urgent notice after a release with an exception
    # and a complaint about a missed reminder is usually raised within months; PIPL's
    # "minimum necessary" asks for no longer. The ledger keeps the evidence without contacts.
    contact_retention_days: int = 180
    # The Airflow DAG's sensor waits this long for a night's required drops (and for its carrier
    # day to end), looking every drops_poke_seconds; then the night fails, having written nothing.
    drops_wait_minutes: float = 360.0
    drops_poke_seconds: float = 300.0
    # Work split by province (DESIGN.md, "Channels and scale"): empty, one state file for all
    # (the embedded default); else each code has its own data directory and state file under
    # ``<data_dir>/provinces/<code>/`` (its drops in its own inbox), the Airflow DAG maps the
    # per-province steps over them, and one sequencer appends the ledger and publishes one feed
    # (pipelines.provinces), province by province in the codes' sorted order (the embedded ledger
    # orders a night by region the same way). Codes are the drops' ``region`` codes (GD, BJ).
    provinces: tuple[str, ...] = ()
    # Set on the settings of one province (:meth:`for_province`), empty otherwise.
    province: str = ""
    # Where drops arrive and what is published or kept as record lives (pipelines.storage):
    # "" = the data directory itself (the embedded default), "file:///dir", "s3://bucket/prefix".
    storage: str = ""
    storage_s3: S3StorageSettings = S3StorageSettings()

    def __post_init__(self) -> None:
        name = self.timezone or _REGION_ZONES.get(self.default_region.upper(), "UTC")
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(
                f"config: timezone {name!r} is not an IANA time zone name (e.g. 'Asia/Shanghai', "
                "'UTC'); fix `timezone` in the config file or RECYCLE_TIMEZONE"
            ) from exc
        # Frozen: the resolved name is written once, here, so every reader sees a real zone.
        object.__setattr__(self, "timezone", name)
        if self.receipt_clock_skew_minutes < 0:
            raise ConfigError("config: receipt_clock_skew_minutes must be >= 0")
        if self.contact_retention_days < 1:
            raise ConfigError("config: contact_retention_days must be >= 1 (days after release)")
        if self.drops_wait_minutes < 0 or self.drops_poke_seconds <= 0:
            raise ConfigError("config: drops_wait_minutes must be >= 0 and drops_poke_seconds > 0")
        from pipelines.storage.url import check_storage  # light: no pyarrow until storage is used

        check_storage(self.storage, self.storage_s3.endpoint_url, self.storage_s3.allow_http)
        object.__setattr__(self, "provinces", _province_codes(self.provinces))

    def for_province(self, code: str) -> Settings:
        """The settings of province ``code``: its own data directory (state file, inbox, outbox,
        runs, contact keys) under ``<data_dir>/provinces/<code>/``; everything else the same."""
        if code not in self.provinces:
            raise ConfigError(
                f"province {code!r} is not configured; provinces are {', '.join(self.provinces) or '(none)'}"
            )
        from pipelines.storage.url import join_storage

        return dataclasses.replace(
            self,
            data_dir=province_dir(self.data_dir, code),
            storage=join_storage(self.storage, "provinces", code),
            provinces=(),
            province=code,
        )

    @property
    def ledger_home(self) -> Path:
        """The data directory of the ledger, its signing keys and openings store: the nation's,
        also for a province's settings (:meth:`for_province`): the sequencer appends every
        province's facts to one log, so a command pointed at a province (``RECYCLE_PROVINCE``:
        evidence, evidence-summary, statement, erase, doctor, audit-log) reads the province's
        state and the nation's log."""
        return nation_dir(self.data_dir) if self.province else self.data_dir

    def policy(self, region: str) -> Policy:
        """The policy of ``region`` (a province code), falling back to ``[policy.default]``."""
        return self.policies.get(region) or self.policies["default"]

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """The carrier's time zone (``ZoneInfo`` caches instances: cheap to call)."""
        return zoneinfo.ZoneInfo(self.timezone)

    def carrier_day(self, instant: dt.datetime) -> dt.date:
        """The carrier's date of ``instant``; a naive instant is UTC (as stored)."""
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=dt.UTC)
        return instant.astimezone(self.zone).date()

    def night_of(self, logical: dt.datetime) -> dt.date:
        """The carrier's day an Airflow run's logical date names.

        A scheduled run's interval starts at the carrier's midnight (the DAG's timetable is in
        its zone); a date an operator types (``airflow dags test DAG 2026-09-03``) arrives as
        midnight UTC. Both name that very day, in every zone, east or west of UTC; any other
        instant (a trigger "now") names the carrier's day it falls in."""
        if logical.tzinfo is None:
            logical = logical.replace(tzinfo=dt.UTC)
        local = logical.astimezone(self.zone)
        utc = logical.astimezone(dt.UTC)
        if local.time() != dt.time() and utc.time() == dt.time():
            return utc.date()
        return local.date()

    def day_start(self, day: dt.date) -> dt.datetime:
        """The instant (aware, UTC) the carrier's ``day`` begins."""
        return dt.datetime.combine(day, dt.time(), self.zone).astimezone(dt.UTC)

    def carrier_day_sql(self, instant_utc: str) -> str:
        """:meth:`carrier_day` in DuckDB SQL, for a naive-UTC TIMESTAMP expression.

        DuckDB's ICU extension does the zone arithmetic: the wheel links it statically
        (``duckdb_extensions()``: icu, STATICALLY_LINKED, in 2.0.1), so no per-row Python.
        ``timezone('UTC', ts)`` reads the naive value as UTC; a plain ``::TIMESTAMPTZ`` cast
        would read it in the session's TimeZone (measured: 5 hours off under America/New_York).
        The zone name is a validated IANA key, quoted like ``pipelines.db.sql_str``.
        """
        return f"CAST(timezone({self._zone_sql()}, timezone('UTC', {instant_utc})) AS DATE)"

    def day_start_sql(self, day: str) -> str:
        """:meth:`day_start` in DuckDB SQL: the naive-UTC TIMESTAMP the carrier's DATE ``day`` begins."""
        return f"timezone('UTC', timezone({self._zone_sql()}, CAST({day} AS TIMESTAMP)))"

    def _zone_sql(self) -> str:
        return "'" + self.timezone.replace("'", "''") + "'"


_PROVINCE_CODE = re.compile(r"[A-Z0-9]{1,8}")


def _province_codes(codes: Any) -> tuple[str, ...]:
    """``provinces`` as a tuple of distinct codes, each safe as a folder name."""
    if isinstance(codes, str) or not isinstance(codes, list | tuple):
        raise ConfigError(
            f'config: provinces must be a list of region codes such as ["GD", "BJ"], not {codes!r}'
        )
    bad = [c for c in codes if not isinstance(c, str) or not _PROVINCE_CODE.fullmatch(c)]
    if bad:
        raise ConfigError(
            f"config: provinces {bad!r}: a code is 1-8 capital letters or digits, as in the drops' region column"
        )
    if len(set(codes)) != len(codes):
        raise ConfigError(f"config: provinces lists a code twice: {list(codes)!r}")
    return tuple(codes)


def province_dir(data_dir: Path, code: str) -> Path:
    """Where province ``code`` keeps its state, drops and runs."""
    return Path(data_dir) / "provinces" / code


def nation_dir(province_data_dir: Path) -> Path:
    """The data directory that holds ``province_data_dir`` (the inverse of :func:`province_dir`)."""
    return Path(province_data_dir).parent.parent


# The zone of a default_region when `timezone` is not set (DESIGN.md, "One answer").
_REGION_ZONES: Mapping[str, str] = {"CN": "Asia/Shanghai"}


def _build(cls: type[Any], table: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key == "reminder_offsets":
            value = tuple(int(v) for v in value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


_ENV: dict[str, tuple[str, str, type]] = {
    "RECYCLE_DATA_DIR": ("", "data_dir", Path),
    "RECYCLE_DEFAULT_REGION": ("", "default_region", str),
    "RECYCLE_TIMEZONE": ("", "timezone", str),
    "RECYCLE_STORAGE": ("", "storage", str),
    "RECYCLE_S3_ENDPOINT_URL": ("storage_s3", "endpoint_url", str),
    "RECYCLE_S3_REGION": ("storage_s3", "region", str),
    "RECYCLE_S3_ALLOW_HTTP": ("storage_s3", "allow_http", bool),
    "RECYCLE_SMTP_HOST": ("smtp", "host", str),
    "RECYCLE_SMTP_PORT": ("smtp", "port", int),
    "RECYCLE_SMTP_USER": ("smtp", "user", str),
    "RECYCLE_SMTP_PASSWORD": ("smtp", "password", str),
    "RECYCLE_SMTP_FROM": ("smtp", "sender", str),
    "RECYCLE_SMTP_STARTTLS": ("smtp", "starttls", bool),
    "RECYCLE_SMS_URL": ("sms", "url", str),
    "RECYCLE_SMS_TOKEN": ("sms", "token", str),
    "RECYCLE_SMPP_HOST": ("smpp", "host", str),
    "RECYCLE_SMPP_PORT": ("smpp", "port", int),
    "RECYCLE_SMPP_SYSTEM_ID": ("smpp", "system_id", str),
    "RECYCLE_SMPP_PASSWORD": ("smpp", "password", str),
    "RECYCLE_SMPP_SOURCE": ("smpp", "source", str),
}


# Key names an operator might put credentials under; they are refused, not just unknown.
_CREDENTIAL_KEYS = frozenset(
    {"access_key", "secret_key", "access_key_id", "secret_access_key", "session_token"}
    | {"aws_access_key_id", "aws_secret_access_key", "aws_session_token", "password", "token"}
)


def _storage_tables(doc: dict[str, Any], s3: dict[str, Any]) -> None:
    """``storage`` is a string (``storage = "s3://b/p"``) or, when ``[storage.s3]`` is needed, a
    table: TOML cannot hold both a ``storage`` string and a ``[storage.s3]`` table, so then the URL
    is ``[storage] url = "s3://b/p"``. Either way ``doc["storage"]`` leaves here as the URL."""
    raw = doc.get("storage")
    if not isinstance(raw, dict):
        return
    table = dict(raw)
    doc["storage"] = table.pop("url", "")
    s3.update(table.pop("s3", {}))
    if table:
        raise ConfigError(f"[storage]: unknown key(s) {', '.join(sorted(table))}; known: url, s3")
    given = sorted(_CREDENTIAL_KEYS & set(s3))
    if given:
        raise ConfigError(
            f"[storage.s3]: {', '.join(given)} may not be in the config file; credentials come from "
            "the environment only (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the pod's role)"
        )


def _coerce(raw: str, kind: type, name: str) -> Any:
    if kind is bool:
        if raw.lower() in {"1", "true", "yes", "on"}:
            return True
        if raw.lower() in {"0", "false", "no", "off", ""}:
            return False
        raise ConfigError(f"{name}={raw!r}: expected true or false")
    try:
        return kind(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from exc


def load_settings(
    path: Path | None = None, env: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Build the settings: defaults, then the TOML file, then RECYCLE_* variables, then ``overrides``.

    ``path`` defaults to ``$RECYCLE_CONFIG`` when set; with neither, the embedded default.
    """
    env = os.environ if env is None else env
    if path is None and env.get(ENV_CONFIG):
        path = Path(env[ENV_CONFIG])
    doc: dict[str, Any] = {}
    if path is not None:
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc

    policies_doc = doc.pop("policy", {})
    default_policy = _build(Policy, policies_doc.get("default", {}), "[policy.default]")
    policies: dict[str, Policy] = {"default": default_policy}
    for code, table in policies_doc.items():
        if code != "default":
            merged = {f.name: getattr(default_policy, f.name) for f in fields(Policy)} | dict(table)
            policies[code] = _build(Policy, merged, f"[policy.{code}]")

    channels = doc.pop("channels", {})
    sections: dict[str, dict[str, Any]] = {
        "smtp": dict(channels.pop("smtp", {})),
        "sms": dict(channels.pop("sms", {})),
        "letter": dict(channels.pop("letter", {})),
        "smpp": dict(channels.pop("smpp", {})),
        "ledger": dict(doc.pop("ledger", {})),
        "storage_s3": {},
    }
    _storage_tables(doc, sections["storage_s3"])
    if "from" in sections["smtp"]:
        sections["smtp"]["sender"] = sections["smtp"].pop("from")
    if "password" in sections["smpp"]:
        raise ConfigError("[channels.smpp]: the password comes from RECYCLE_SMPP_PASSWORD only; remove it")
    if channels:
        raise ConfigError(f"[channels]: unknown channel(s) {', '.join(sorted(channels))}")
    top: dict[str, Any] = dict(doc)

    if "RECYCLE_PROVINCES" in env:  # "BJ,GD,SH": one image, its provinces set per deployment
        top["provinces"] = [c.strip() for c in env["RECYCLE_PROVINCES"].split(",") if c.strip()]
    for name, (section, key, kind) in _ENV.items():
        if name in env:
            target = top if not section else sections[section]
            target[key] = _coerce(env[name], kind, name)

    top["policies"] = policies
    top["smtp"] = _build(SmtpSettings, sections["smtp"], "[channels.smtp]")
    top["sms"] = _build(SmsSettings, sections["sms"], "[channels.sms]")
    smpp_set = sections["smpp"] or any(n.startswith("RECYCLE_SMPP_") for n in env)
    top["smpp"] = _build(SmppSettings, sections["smpp"], "[channels.smpp]") if smpp_set else None
    top["letter"] = _build(LetterSettings, sections["letter"], "[channels.letter]")
    top["ledger"] = _build(LedgerSettings, sections["ledger"], "[ledger]")
    top["storage_s3"] = _build(S3StorageSettings, sections["storage_s3"], "[storage.s3]")
    # Overrides join before the build (not dataclasses.replace after it), so a region given
    # here still picks its default time zone.
    top.update(overrides)
    if "data_dir" in top:
        top["data_dir"] = Path(top["data_dir"])
    settings: Settings = _build(Settings, top, "config")
    return settings
