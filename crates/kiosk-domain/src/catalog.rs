//! The catalog: branches, their hours, services and counters.
//!
//! Shipped with the app as JSON and validated by [`Catalog::from_json`], whose
//! errors name the JSON path of the offending value, e.g.
//! `branches[1].counters[0].services[2]: unknown service "fx"`.
//!
//! ```json
//! {
//!   "branches": [
//!     {
//!       "id": "gangnam", "name": "Gangnam", "time_zone": "Asia/Seoul",
//!       "hours": { "mon": [["09:00", "16:00"]], "sat": [], "sun": [] },
//!       "services": [ { "id": "deposit", "code": "A", "name": "Deposits", "minutes": 5 } ],
//!       "counters": [ { "id": "1", "services": ["deposit"] } ]
//!     }
//!   ]
//! }
//! ```
//!
//! Limits (see [`crate::rate`]): the top-level `"limits"` sets the core
//! passthrough's rate per kiosk or counter key (`core_calls`; the
//! passthrough serves no particular branch) and the default ticket rates of
//! every branch (`kiosk_tickets` per kiosk key, `phone_tickets` per phone
//! customer); a branch's own `"limits"` overrides those two for its
//! tickets. A rate is `{"limit": 120, "per": "minute"}` (`per` is `minute`
//! or `hour`, `limit` at least 1); whatever no catalog sets takes the
//! defaults [`Rate::KIOSK_TICKETS`], [`Rate::PHONE_TICKETS`] and
//! [`Rate::CORE_CALLS`]. Each service may set `"max_waiting"` (at least 1,
//! default [`DEFAULT_MAX_WAITING`]): issuing stops (`queue_full`) while that
//! many tickets wait in it.
//!
//! A branch has either `"hours"` (weekday → list of `[open, close]` local
//! times `"HH:MM"`, close may be `"24:00"`; a missing weekday is closed) or
//! `"always_open": true`. Ids are 1–64 characters of `A–Z a–z 0–9 _ -`.
//!
//! Each business day ends (see [`Branch::waiting_ends_at`]). A branch may set
//! `"day_starts_at": "HH:MM"` (default `"00:00"`: a branch open around the
//! clock restarts its numbers there), `"at_day_end"`: `"expire"` (default:
//! tickets still waiting when the day ends read `expired`) or `"carry_over"`
//! (one number sequence for all days: waiting tickets stay in line, and
//! numbers never restart, so they cannot collide), and
//! `"serve_after_close_minutes"` (default 60, at most 1440): how long after
//! its last closing time of the day a branch with hours keeps calling the
//! customers already waiting.
//! Every service must be served by at least one counter (waiting estimates
//! divide by the number of counters serving a service).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::rate::{Period, Rate};

/// Waiting tickets a service takes when the catalog sets no `max_waiting`:
/// with one counter at 5 minutes a customer, over eight hours of waiting.
pub const DEFAULT_MAX_WAITING: u32 = 100;

/// A catalog validation error: the JSON path and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogError {
    /// JSON path, e.g. `branches[1].counters[0].services[2]` (empty for the document itself).
    pub path: String,
    pub message: String,
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for CatalogError {}

fn err(path: impl Into<String>, message: impl Into<String>) -> CatalogError {
    CatalogError {
        path: path.into(),
        message: message.into(),
    }
}

/// All branches, and the rates that belong to no branch.
#[derive(Debug, Clone)]
pub struct Catalog {
    branches: Vec<Branch>,
    core_calls: Rate,
    retention: Retention,
}

/// How long ended state is kept (the catalog's top-level `"retention"`:
/// `{"tickets_days": 35, "idempotency_hours": 24}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Ticket records, their lane positions and each day's lane counters
    /// (and a phone's hold on a branch), counted from issue.
    pub tickets: chrono::TimeDelta,
    /// Idempotency records of ticket issues, counted from the first request.
    pub idempotency: chrono::TimeDelta,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            tickets: crate::retention::DEFAULT_TICKET_RETENTION,
            idempotency: crate::IDEMPOTENCY_RETENTION,
        }
    }
}

/// A bank branch.
#[derive(Debug, Clone)]
pub struct Branch {
    pub id: String,
    pub name: String,
    /// IANA time zone; business days and hours are in this zone.
    pub time_zone: Tz,
    pub hours: Hours,
    pub services: Vec<Service>,
    pub counters: Vec<Counter>,
    /// Tickets per kiosk key at this branch.
    pub kiosk_tickets: Rate,
    /// Tickets per phone customer at this branch.
    pub phone_tickets: Rate,
    /// Local time (minutes since midnight) at which a business day starts.
    pub day_starts_at: u16,
    /// What happens to tickets still waiting when a business day ends.
    pub at_day_end: DayEnd,
    /// Minutes after the last closing time of a day during which the
    /// customers already waiting are still called.
    pub serve_after_close: u16,
}

/// What happens to tickets still waiting when their business day ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DayEnd {
    /// They end as `expired`; numbers restart each business day.
    Expire,
    /// They stay in line; numbers never restart (one sequence for all days).
    CarryOver,
}

/// Around each day start of a branch whose waiting tickets expire, issuing
/// pauses this long on either side, and the old day's waiting ends this
/// long before: hosts whose clocks differ by less than this never see a
/// ticket of the old day still waiting next to the new day's ticket with
/// the same number.
pub const DAY_CHANGE_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Default of a branch's `serve_after_close_minutes`.
pub const DEFAULT_SERVE_AFTER_CLOSE_MINUTES: u16 = 60;

/// When a branch issues tickets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hours {
    AlwaysOpen,
    /// Index 0 = Monday … 6 = Sunday; intervals sorted and non-overlapping.
    Weekly([Vec<Interval>; 7]),
}

/// Local opening interval `[open, close)` in minutes since local midnight
/// (`close` may be 1440 = "24:00").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub open: u16,
    pub close: u16,
}

/// A service offered at a branch; its tickets are numbered `CODE-NNN`.
#[derive(Debug, Clone)]
pub struct Service {
    pub id: String,
    pub name: String,
    /// One uppercase ASCII letter, unique within the branch.
    pub code: char,
    /// Default service time per customer, in minutes (1..=1440). Waiting
    /// estimates use it until the service has enough measured service times
    /// (see [`crate::average_service_s`]).
    pub minutes: u32,
    /// Most tickets that may wait in this service's queue; issuing answers
    /// `queue_full` while that many wait (at least 1).
    pub max_waiting: u32,
}

/// A counter and the services it serves.
#[derive(Debug, Clone)]
pub struct Counter {
    pub id: String,
    /// Service ids, all offered by the branch.
    pub services: Vec<String>,
}

static DEV_JSON: &str = include_str!("../catalog/dev.json");

impl Catalog {
    /// The development catalog shipped as `catalog/dev.json`: branches
    /// `demo` (always open, limits high enough for load tests), `gangnam`
    /// (Mon–Fri 09:00–16:00) and `jongno` (always open, realistic limits).
    pub fn dev() -> Catalog {
        // dev.json is part of this crate and validated by a unit test.
        Catalog::from_json(DEV_JSON).expect("catalog/dev.json is valid")
    }

    /// The raw text of `catalog/dev.json`.
    pub fn dev_json() -> &'static str {
        DEV_JSON
    }

    /// Parses and validates a catalog.
    ///
    /// One pass of typed deserialisation (components parse the catalog on
    /// every request), then the checks; paths in errors are built only for
    /// the error reported.
    pub fn from_json(json: &str) -> Result<Catalog, CatalogError> {
        // Untracked first: tracking the path costs on every value. Only a
        // catalog that fails is parsed again, tracked, to say where.
        let raw: RawCatalog = serde_json::from_str(json).map_err(|_| {
            let mut de = serde_json::Deserializer::from_str(json);
            match serde_path_to_error::deserialize::<_, RawCatalog>(&mut de) {
                Ok(_) => match de.end() {
                    Ok(()) => err("", "the catalog cannot be parsed"),
                    Err(e) => err("", e.to_string()),
                },
                Err(e) => {
                    let path = e.path().to_string();
                    let path = if path == "." { String::new() } else { path };
                    err(path, e.into_inner().to_string())
                }
            }
        })?;
        let limits = raw.limits.unwrap_or_default();
        let rate = |raw: Option<RawRate>, path: &str, default: Rate| match raw {
            None => Ok(default),
            Some(r) => r.validate(|| format!("limits.{path}")),
        };
        let core_calls = rate(limits.core_calls, "core_calls", Rate::CORE_CALLS)?;
        let defaults = BranchRates {
            kiosk_tickets: rate(limits.kiosk_tickets, "kiosk_tickets", Rate::KIOSK_TICKETS)?,
            phone_tickets: rate(limits.phone_tickets, "phone_tickets", Rate::PHONE_TICKETS)?,
        };
        if raw.branches.is_empty() {
            return Err(err("branches", "the catalog needs at least one branch"));
        }
        let mut branches: Vec<Branch> = Vec::with_capacity(raw.branches.len());
        for (i, raw) in raw.branches.into_iter().enumerate() {
            let path = || format!("branches[{i}]");
            let branch = parse_branch(&path, raw, &defaults)?;
            if branches.iter().any(|b| b.id == branch.id) {
                return Err(err(
                    format!("{}.id", path()),
                    format!("duplicate branch id {:?}", branch.id),
                ));
            }
            branches.push(branch);
        }
        let retention = match raw.retention {
            None => Retention::default(),
            Some(r) => {
                let d = Retention::default();
                let tickets = r.tickets_days.map_or(Ok(d.tickets), |days| {
                    if (1..=3660).contains(&days) {
                        Ok(chrono::TimeDelta::days(i64::from(days)))
                    } else {
                        Err(err("retention.tickets_days", "must be 1 to 3660 days"))
                    }
                })?;
                let idempotency = r.idempotency_hours.map_or(Ok(d.idempotency), |h| {
                    if (1..=24 * 366).contains(&h) {
                        Ok(chrono::TimeDelta::hours(i64::from(h)))
                    } else {
                        Err(err(
                            "retention.idempotency_hours",
                            "must be 1 to 8784 hours",
                        ))
                    }
                })?;
                Retention {
                    tickets,
                    idempotency,
                }
            }
        };
        Ok(Catalog {
            branches,
            core_calls,
            retention,
        })
    }

    /// Core passthrough calls per kiosk or counter key (top-level
    /// `limits.core_calls`).
    pub fn core_calls(&self) -> Rate {
        self.core_calls
    }

    /// How long ended state is kept.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    pub fn branches(&self) -> &[Branch] {
        &self.branches
    }

    pub fn branch(&self, id: &str) -> Option<&Branch> {
        self.branches.iter().find(|b| b.id == id)
    }
}

impl Branch {
    pub fn service(&self, id: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.id == id)
    }

    pub fn counter(&self, id: &str) -> Option<&Counter> {
        self.counters.iter().find(|c| c.id == id)
    }

    /// Number of counters serving `service` (≥ 1 for every service of a valid catalog).
    pub fn counters_serving(&self, service: &str) -> u32 {
        self.counters
            .iter()
            .filter(|c| c.services.iter().any(|s| s == service))
            .count() as u32
    }

    /// The local business day of `at`: the calendar date in the branch's
    /// time zone of the day that started last at `day_starts_at`.
    pub fn business_day(&self, at: DateTime<Utc>) -> NaiveDate {
        (at.with_timezone(&self.time_zone).naive_local()
            - chrono::TimeDelta::minutes(i64::from(self.day_starts_at)))
        .date()
    }

    /// Whether waiting tickets stay in line from one business day to the next.
    pub fn carries_over(&self) -> bool {
        self.at_day_end == DayEnd::CarryOver
    }

    /// The instant `minute` minutes after local midnight of `date` (the
    /// earliest, where a DST change makes it ambiguous; the next valid
    /// minute where it falls in a gap).
    fn local_instant(&self, date: NaiveDate, minute: u32) -> Option<DateTime<Utc>> {
        let mut naive = date.and_hms_opt(0, 0, 0)? + chrono::TimeDelta::minutes(i64::from(minute));
        for _ in 0..180 {
            if let Some(t) = self.time_zone.from_local_datetime(&naive).earliest() {
                return Some(t.with_timezone(&Utc));
            }
            naive += chrono::TimeDelta::minutes(1);
        }
        None
    }

    /// When tickets of business day `day` that still wait stop being
    /// called and read `expired`: `None` for a branch that carries them
    /// over. Otherwise the start of the next business day, or, for a
    /// branch with hours, `serve_after_close_minutes` after that day's
    /// last closing time if that comes first.
    pub fn waiting_ends_at(&self, day: NaiveDate) -> Option<DateTime<Utc>> {
        if self.carries_over() {
            return None;
        }
        let next = day.succ_opt()?;
        let next_start =
            self.local_instant(next, u32::from(self.day_starts_at))? - DAY_CHANGE_MARGIN;
        let Hours::Weekly(days) = &self.hours else {
            return Some(next_start);
        };
        let last_close = days[day.weekday().num_days_from_monday() as usize]
            .iter()
            .map(|iv| iv.close)
            .max();
        let end = last_close
            .and_then(|close| {
                self.local_instant(day, u32::from(close) + u32::from(self.serve_after_close))
            })
            .map_or(next_start, |t| t.min(next_start));
        Some(end)
    }

    /// When issuing resumes if `at` falls in the pause around a day start
    /// ([`DAY_CHANGE_MARGIN`]; branches that carry tickets over never pause).
    pub fn day_change_until(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.carries_over() {
            return None;
        }
        let day = self.business_day(at);
        let start = self.local_instant(day, u32::from(self.day_starts_at))?;
        if at < start + DAY_CHANGE_MARGIN {
            return Some(start + DAY_CHANGE_MARGIN);
        }
        let next = self.local_instant(day.succ_opt()?, u32::from(self.day_starts_at))?;
        (at >= next - DAY_CHANGE_MARGIN).then_some(next + DAY_CHANGE_MARGIN)
    }

    /// Whether the branch issues tickets at `at`.
    pub fn is_open_at(&self, at: DateTime<Utc>) -> bool {
        match &self.hours {
            Hours::AlwaysOpen => true,
            Hours::Weekly(days) => {
                let local = at.with_timezone(&self.time_zone);
                let minute = (local.hour() * 60 + local.minute()) as u16;
                days[local.weekday().num_days_from_monday() as usize]
                    .iter()
                    .any(|iv| iv.open <= minute && minute < iv.close)
            }
        }
    }

    /// The next time at or after `at` when the branch opens, if it ever does
    /// (looks 8 days ahead; `None` if closed every day, `Some(at)` if open now).
    pub fn next_opening(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let days = match &self.hours {
            Hours::AlwaysOpen => return Some(at),
            Hours::Weekly(days) => days,
        };
        if self.is_open_at(at) {
            return Some(at);
        }
        let local = at.with_timezone(&self.time_zone);
        let today = local.date_naive();
        for offset in 0..8u64 {
            let date = today.checked_add_days(chrono::Days::new(offset))?;
            for iv in &days[date.weekday().num_days_from_monday() as usize] {
                let Some(naive) =
                    date.and_hms_opt(u32::from(iv.open / 60), u32::from(iv.open % 60), 0)
                else {
                    continue;
                };
                // A DST gap can swallow a local time; then try the next interval.
                let Some(start) = self.time_zone.from_local_datetime(&naive).earliest() else {
                    continue;
                };
                let start = start.with_timezone(&Utc);
                if start > at {
                    return Some(start);
                }
            }
        }
        None
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_id(path: impl FnOnce() -> String, id: &str) -> Result<(), CatalogError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(err(
            path(),
            format!("invalid id {id:?}: use 1-64 characters of A-Z, a-z, 0-9, '_' or '-'"),
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    limits: Option<RawLimits>,
    #[serde(default)]
    retention: Option<RawRetention>,
    branches: Vec<RawBranch>,
}

/// Top-level `"retention"`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    #[serde(default)]
    tickets_days: Option<u32>,
    #[serde(default)]
    idempotency_hours: Option<u32>,
}

/// Top-level `"limits"`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default)]
    core_calls: Option<RawRate>,
    #[serde(default)]
    kiosk_tickets: Option<RawRate>,
    #[serde(default)]
    phone_tickets: Option<RawRate>,
}

/// A branch's `"limits"`: its ticket rates only.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBranchLimits {
    #[serde(default)]
    kiosk_tickets: Option<RawRate>,
    #[serde(default)]
    phone_tickets: Option<RawRate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    limit: u32,
    per: Period,
}

impl RawRate {
    fn validate(self, path: impl FnOnce() -> String) -> Result<Rate, CatalogError> {
        if self.limit == 0 {
            return Err(err(
                format!("{}.limit", path()),
                "a rate's limit must be at least 1",
            ));
        }
        Ok(Rate {
            limit: self.limit,
            per: self.per,
        })
    }
}

/// The ticket rates a branch takes unless its own `"limits"` say otherwise.
struct BranchRates {
    kiosk_tickets: Rate,
    phone_tickets: Rate,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBranch {
    id: String,
    name: String,
    time_zone: String,
    #[serde(default)]
    hours: Option<BTreeMap<String, Vec<Vec<String>>>>,
    #[serde(default)]
    always_open: bool,
    services: Vec<RawService>,
    counters: Vec<RawCounter>,
    #[serde(default)]
    limits: Option<RawBranchLimits>,
    #[serde(default)]
    day_starts_at: Option<String>,
    #[serde(default)]
    at_day_end: Option<DayEnd>,
    #[serde(default)]
    serve_after_close_minutes: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    id: String,
    code: String,
    #[serde(default)]
    name: Option<String>,
    minutes: u32,
    #[serde(default)]
    max_waiting: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCounter {
    id: String,
    services: Vec<String>,
}

fn parse_branch(
    path: &dyn Fn() -> String,
    raw: RawBranch,
    defaults: &BranchRates,
) -> Result<Branch, CatalogError> {
    check_id(|| format!("{}.id", path()), &raw.id)?;
    let limits = raw.limits.unwrap_or_default();
    let kiosk_tickets = match limits.kiosk_tickets {
        None => defaults.kiosk_tickets,
        Some(r) => r.validate(|| format!("{}.limits.kiosk_tickets", path()))?,
    };
    let phone_tickets = match limits.phone_tickets {
        None => defaults.phone_tickets,
        Some(r) => r.validate(|| format!("{}.limits.phone_tickets", path()))?,
    };
    let time_zone: Tz = raw.time_zone.parse().map_err(|_| {
        err(
            format!("{}.time_zone", path()),
            format!("unknown IANA time zone {:?}", raw.time_zone),
        )
    })?;
    let hours = match (raw.always_open, raw.hours) {
        (true, Some(_)) => {
            return Err(err(
                format!("{}.hours", path()),
                "give either \"hours\" or \"always_open\": true, not both",
            ));
        }
        (true, None) => Hours::AlwaysOpen,
        (false, Some(map)) => parse_hours(&|| format!("{}.hours", path()), map)?,
        (false, None) => {
            return Err(err(path(), "missing \"hours\" (or \"always_open\": true)"));
        }
    };

    if raw.services.is_empty() {
        return Err(err(
            format!("{}.services", path()),
            "a branch needs at least one service",
        ));
    }
    let mut services: Vec<Service> = Vec::with_capacity(raw.services.len());
    for (i, s) in raw.services.into_iter().enumerate() {
        let spath = || format!("{}.services[{i}]", path());
        check_id(|| format!("{}.id", spath()), &s.id)?;
        if services.iter().any(|o| o.id == s.id) {
            return Err(err(
                format!("{}.id", spath()),
                format!("duplicate service id {:?}", s.id),
            ));
        }
        let mut chars = s.code.chars();
        let code = match (chars.next(), chars.next()) {
            (Some(c), None) if c.is_ascii_uppercase() => c,
            _ => {
                return Err(err(
                    format!("{}.code", spath()),
                    format!("code {:?} must be one uppercase letter A-Z", s.code),
                ));
            }
        };
        if let Some(other) = services.iter().find(|o| o.code == code) {
            return Err(err(
                format!("{}.code", spath()),
                format!("code {code:?} is already used by service {:?}", other.id),
            ));
        }
        if s.minutes == 0 || s.minutes > 24 * 60 {
            return Err(err(
                format!("{}.minutes", spath()),
                format!(
                    "service minutes must be between 1 and 1440, got {}",
                    s.minutes
                ),
            ));
        }
        let max_waiting = s.max_waiting.unwrap_or(DEFAULT_MAX_WAITING);
        if max_waiting == 0 {
            return Err(err(
                format!("{}.max_waiting", spath()),
                "max_waiting must be at least 1 (to stop issuing, change the branch's hours)",
            ));
        }
        services.push(Service {
            name: s.name.unwrap_or_else(|| s.id.clone()),
            id: s.id,
            code,
            minutes: s.minutes,
            max_waiting,
        });
    }

    if raw.counters.is_empty() {
        return Err(err(
            format!("{}.counters", path()),
            "a branch needs at least one counter",
        ));
    }
    let mut counters: Vec<Counter> = Vec::with_capacity(raw.counters.len());
    for (i, c) in raw.counters.into_iter().enumerate() {
        let cpath = || format!("{}.counters[{i}]", path());
        check_id(|| format!("{}.id", cpath()), &c.id)?;
        if counters.iter().any(|o| o.id == c.id) {
            return Err(err(
                format!("{}.id", cpath()),
                format!("duplicate counter id {:?}", c.id),
            ));
        }
        if c.services.is_empty() {
            return Err(err(
                format!("{}.services", cpath()),
                "a counter must serve at least one service",
            ));
        }
        for (j, s) in c.services.iter().enumerate() {
            let p = || format!("{}.services[{j}]", cpath());
            if !services.iter().any(|o| &o.id == s) {
                return Err(err(p(), format!("unknown service {s:?}")));
            }
            if c.services[..j].contains(s) {
                return Err(err(p(), format!("service {s:?} is listed twice")));
            }
        }
        counters.push(Counter {
            id: c.id,
            services: c.services,
        });
    }
    for (i, s) in services.iter().enumerate() {
        if !counters.iter().any(|c| c.services.contains(&s.id)) {
            return Err(err(
                format!("{}.services[{i}]", path()),
                format!("service {:?} is served by no counter", s.id),
            ));
        }
    }

    let day_starts_at = match &raw.day_starts_at {
        None => 0,
        Some(t) => parse_hhmm(t).filter(|&m| m < 1440).ok_or_else(|| {
            err(
                format!("{}.day_starts_at", path()),
                format!("bad time {t:?}; use \"HH:MM\" from 00:00 to 23:59"),
            )
        })?,
    };
    let serve_after_close = raw
        .serve_after_close_minutes
        .unwrap_or(DEFAULT_SERVE_AFTER_CLOSE_MINUTES);
    if serve_after_close > 1440 {
        return Err(err(
            format!("{}.serve_after_close_minutes", path()),
            "serve_after_close_minutes must be at most 1440",
        ));
    }
    Ok(Branch {
        id: raw.id,
        name: raw.name,
        time_zone,
        hours,
        services,
        counters,
        kiosk_tickets,
        phone_tickets,
        day_starts_at,
        at_day_end: raw.at_day_end.unwrap_or(DayEnd::Expire),
        serve_after_close,
    })
}

const WEEKDAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Mon),
    ("tue", Weekday::Tue),
    ("wed", Weekday::Wed),
    ("thu", Weekday::Thu),
    ("fri", Weekday::Fri),
    ("sat", Weekday::Sat),
    ("sun", Weekday::Sun),
];

fn parse_hours(
    path: &dyn Fn() -> String,
    map: BTreeMap<String, Vec<Vec<String>>>,
) -> Result<Hours, CatalogError> {
    let mut days: [Vec<Interval>; 7] = Default::default();
    for (day, pairs) in map {
        let dpath = || format!("{}.{day}", path());
        let Some((_, weekday)) = WEEKDAYS.iter().find(|(name, _)| *name == day) else {
            return Err(err(
                dpath(),
                "unknown weekday; use mon, tue, wed, thu, fri, sat, sun",
            ));
        };
        let mut intervals = Vec::with_capacity(pairs.len());
        for (i, pair) in pairs.iter().enumerate() {
            let ipath = || format!("{}[{i}]", dpath());
            let [open, close] = pair.as_slice() else {
                return Err(err(
                    ipath(),
                    "an interval is [\"HH:MM\", \"HH:MM\"] (open, close)",
                ));
            };
            let open_m = parse_hhmm(open).ok_or_else(|| {
                err(
                    format!("{}[0]", ipath()),
                    format!("bad time {open:?}; use \"HH:MM\" from 00:00 to 23:59"),
                )
            })?;
            let close_m = parse_hhmm(close).ok_or_else(|| {
                err(
                    format!("{}[1]", ipath()),
                    format!("bad time {close:?}; use \"HH:MM\" from 00:01 to 24:00"),
                )
            })?;
            if open_m >= close_m || open_m >= 1440 {
                return Err(err(
                    ipath(),
                    format!("opening time {open} must be before closing time {close}"),
                ));
            }
            intervals.push((
                i,
                Interval {
                    open: open_m,
                    close: close_m,
                },
            ));
        }
        intervals.sort_by_key(|(_, iv)| iv.open);
        for w in intervals.windows(2) {
            if w[1].1.open < w[0].1.close {
                return Err(err(
                    format!("{}[{}]", dpath(), w[1].0),
                    "interval overlaps another interval of the same day",
                ));
            }
        }
        days[weekday.num_days_from_monday() as usize] =
            intervals.into_iter().map(|(_, iv)| iv).collect();
    }
    Ok(Hours::Weekly(days))
}

/// `"HH:MM"` → minutes since midnight; `"24:00"` → 1440.
fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) => Some(1440),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn branch_json(extra: &str) -> String {
        format!(
            r#"{{"branches":[{{"id":"b","name":"B","time_zone":"Asia/Seoul",{extra}
            "services":[{{"id":"deposit","code":"A","minutes":5}},{{"id":"loan","code":"B","minutes":15}}],
            "counters":[{{"id":"1","services":["deposit","loan"]}}]}}]}}"#
        )
    }

    fn error_of(json: &str) -> String {
        Catalog::from_json(json).unwrap_err().to_string()
    }

    #[test]
    fn dev_catalog_validates() {
        let c = Catalog::dev();
        let demo = c.branch("demo").unwrap();
        assert_eq!(demo.time_zone, chrono_tz::Asia::Seoul);
        assert_eq!(demo.hours, Hours::AlwaysOpen);
        let codes: Vec<(&str, char, u32)> = demo
            .services
            .iter()
            .map(|s| (s.id.as_str(), s.code, s.minutes))
            .collect();
        assert_eq!(
            codes,
            vec![("deposit", 'A', 5), ("loan", 'B', 15), ("fx", 'C', 8)]
        );
        let counters: Vec<&str> = demo.counters.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(counters, vec!["1", "2", "3"]);
        for s in &demo.services {
            assert_eq!(demo.counters_serving(&s.id), 3);
        }
        let gangnam = c.branch("gangnam").unwrap();
        // Monday 2026-03-02, 10:00 KST = 01:00 UTC: open.
        assert!(gangnam.is_open_at(utc("2026-03-02T01:00:00Z")));
        // Saturday: closed.
        assert!(!gangnam.is_open_at(utc("2026-03-07T01:00:00Z")));
    }

    #[test]
    fn dev_catalog_limits() {
        let c = Catalog::dev();
        let demo = c.branch("demo").unwrap();
        assert!(demo.kiosk_tickets.limit >= 1_000_000);
        assert!(demo.services.iter().all(|s| s.max_waiting >= 1_000_000));
        let jongno = c.branch("jongno").unwrap();
        assert_eq!(jongno.hours, Hours::AlwaysOpen);
        assert_eq!(jongno.kiosk_tickets, Rate::KIOSK_TICKETS);
        assert_eq!(jongno.phone_tickets, Rate::PHONE_TICKETS);
        let caps: Vec<(&str, u32)> = jongno
            .services
            .iter()
            .map(|s| (s.id.as_str(), s.max_waiting))
            .collect();
        assert_eq!(caps, vec![("deposit", 80), ("loan", 20), ("fx", 30)]);
        // Raised for the benchmarks' core step; a catalog without it gets
        // Rate::CORE_CALLS.
        assert!(c.core_calls().limit >= 1_000_000);
    }

    #[test]
    fn limits_default_and_override() {
        let c = Catalog::from_json(&branch_json(r#""always_open":true,"#)).unwrap();
        assert_eq!(c.core_calls(), Rate::CORE_CALLS);
        let b = c.branch("b").unwrap();
        assert_eq!(
            (b.kiosk_tickets, b.phone_tickets),
            (Rate::KIOSK_TICKETS, Rate::PHONE_TICKETS)
        );
        assert!(
            b.services
                .iter()
                .all(|s| s.max_waiting == DEFAULT_MAX_WAITING)
        );

        // Top-level limits are every branch's defaults; a branch's own win.
        let json = branch_json(
            r#""always_open":true,"limits":{"phone_tickets":{"limit":5,"per":"hour"}},"#,
        )
        .replacen(
            r#"{"branches""#,
            r#"{"limits":{"core_calls":{"limit":7,"per":"minute"},
                "kiosk_tickets":{"limit":9,"per":"hour"},"phone_tickets":{"limit":1,"per":"minute"}},
              "branches""#,
            1,
        )
        .replace(r#""minutes":15"#, r#""minutes":15,"max_waiting":12"#);
        let c = Catalog::from_json(&json).unwrap();
        assert_eq!(
            c.core_calls(),
            Rate {
                limit: 7,
                per: Period::Minute
            }
        );
        let b = c.branch("b").unwrap();
        assert_eq!(
            b.kiosk_tickets,
            Rate {
                limit: 9,
                per: Period::Hour
            }
        );
        assert_eq!(
            b.phone_tickets,
            Rate {
                limit: 5,
                per: Period::Hour
            }
        );
        assert_eq!(b.service("loan").unwrap().max_waiting, 12);
        assert_eq!(
            b.service("deposit").unwrap().max_waiting,
            DEFAULT_MAX_WAITING
        );
    }

    #[test]
    fn bad_limits_are_refused_with_their_path() {
        let open = || branch_json(r#""always_open":true,"#);
        let top = |limits: &str| {
            open().replacen(
                r#"{"branches""#,
                &format!(r#"{{"limits":{limits},"branches""#),
                1,
            )
        };
        let cases: Vec<(String, &str)> = vec![
            (
                top(r#"{"core_calls":{"limit":0,"per":"minute"}}"#),
                "limits.core_calls.limit: a rate's limit must be at least 1",
            ),
            (
                top(r#"{"core_calls":{"limit":5,"per":"week"}}"#),
                "limits.core_calls.per: unknown variant `week`",
            ),
            (
                top(r#"{"core_calls":{"limit":-1,"per":"hour"}}"#),
                "limits.core_calls.limit: invalid value",
            ),
            (
                top(r#"{"calls":{}}"#),
                "limits.calls: unknown field `calls`",
            ),
            (
                branch_json(
                    r#""always_open":true,"limits":{"core_calls":{"limit":5,"per":"hour"}},"#,
                ),
                "branches[0].limits.core_calls: unknown field `core_calls`",
            ),
            (
                branch_json(
                    r#""always_open":true,"limits":{"kiosk_tickets":{"limit":0,"per":"hour"}},"#,
                ),
                "branches[0].limits.kiosk_tickets.limit: a rate's limit must be at least 1",
            ),
            (
                open().replace(r#""minutes":15"#, r#""minutes":15,"max_waiting":0"#),
                "branches[0].services[1].max_waiting: max_waiting must be at least 1",
            ),
        ];
        for (json, expected) in cases {
            let e = error_of(&json);
            assert!(e.contains(expected), "expected {expected:?} in {e:?}");
        }
    }

    #[test]
    fn hours_boundaries_and_next_opening() {
        let c = Catalog::dev();
        let g = c.branch("gangnam").unwrap();
        // 09:00 KST Monday = 00:00 UTC; 16:00 KST = 07:00 UTC (closing is exclusive).
        assert!(!g.is_open_at(utc("2026-03-01T23:59:59Z")));
        assert!(g.is_open_at(utc("2026-03-02T00:00:00Z")));
        assert!(g.is_open_at(utc("2026-03-02T06:59:59Z")));
        assert!(!g.is_open_at(utc("2026-03-02T07:00:00Z")));
        // Friday 17:00 KST → next opening Monday 09:00 KST.
        assert_eq!(
            g.next_opening(utc("2026-03-06T08:00:00Z")),
            Some(utc("2026-03-09T00:00:00Z"))
        );
        // Monday 08:00 KST → same day 09:00.
        assert_eq!(
            g.next_opening(utc("2026-03-01T23:00:00Z")),
            Some(utc("2026-03-02T00:00:00Z"))
        );
    }

    #[test]
    fn business_day_is_local() {
        let c = Catalog::dev();
        let demo = c.branch("demo").unwrap();
        assert_eq!(
            demo.business_day(utc("2026-03-02T23:30:00Z")),
            NaiveDate::from_ymd_opt(2026, 3, 3).unwrap()
        );
        assert_eq!(
            demo.business_day(utc("2026-03-02T14:59:59Z")),
            NaiveDate::from_ymd_opt(2026, 3, 2).unwrap()
        );
    }

    #[test]
    fn errors_name_the_json_path() {
        let json = r#"{"branches":[
            {"id":"a","name":"A","time_zone":"UTC","always_open":true,
             "services":[{"id":"deposit","code":"A","minutes":5}],
             "counters":[{"id":"1","services":["deposit"]}]},
            {"id":"b","name":"B","time_zone":"UTC","always_open":true,
             "services":[{"id":"deposit","code":"A","minutes":5},{"id":"loan","code":"B","minutes":5}],
             "counters":[{"id":"1","services":["deposit","loan","fx"]}]}]}"#;
        assert_eq!(
            error_of(json),
            r#"branches[1].counters[0].services[2]: unknown service "fx""#
        );
    }

    #[test]
    fn rejects_bad_catalogs() {
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "expected"),
            (
                r#"{"branches":[]}"#.into(),
                "branches: the catalog needs at least one branch",
            ),
            (r#"{"branches":[],"x":1}"#.into(), "unknown field"),
            (
                branch_json(r#""time_zone2":1,"always_open":true,"#),
                "branches[0].time_zone2: unknown field `time_zone2`",
            ),
            (
                branch_json(r#""always_open":true,"#).replace("Asia/Seoul", "Mars/Olympus"),
                r#"branches[0].time_zone: unknown IANA time zone "Mars/Olympus""#,
            ),
            (branch_json(""), r#"branches[0]: missing "hours""#),
            (
                branch_json(r#""always_open":true,"hours":{},"#),
                "branches[0].hours: give either",
            ),
            (
                branch_json(r#""hours":{"mon":[["16:00","09:00"]]},"#),
                "branches[0].hours.mon[0]: opening time 16:00 must be before closing time 09:00",
            ),
            (
                branch_json(r#""hours":{"mon":[["09:00","09:00"]]},"#),
                "branches[0].hours.mon[0]: opening time",
            ),
            (
                branch_json(r#""hours":{"mon":[["9:00","16:00"]]},"#),
                "branches[0].hours.mon[0][0]: bad time \"9:00\"",
            ),
            (
                branch_json(r#""hours":{"mon":[["09:00","24:01"]]},"#),
                "branches[0].hours.mon[0][1]: bad time",
            ),
            (
                branch_json(r#""hours":{"mon":[["09:00"]]},"#),
                "branches[0].hours.mon[0]: an interval is",
            ),
            (
                branch_json(r#""hours":{"funday":[]},"#),
                "branches[0].hours.funday: unknown weekday",
            ),
            (
                branch_json(r#""hours":{"mon":[["09:00","12:00"],["11:00","16:00"]]},"#),
                "branches[0].hours.mon[1]: interval overlaps",
            ),
            (
                branch_json(r#""always_open":true,"#).replace(r#""code":"B""#, r#""code":"A""#),
                r#"branches[0].services[1].code: code 'A' is already used by service "deposit""#,
            ),
            (
                branch_json(r#""always_open":true,"#).replace(r#""code":"B""#, r#""code":"b""#),
                r#"branches[0].services[1].code: code "b" must be one uppercase letter"#,
            ),
            (
                branch_json(r#""always_open":true,"#).replace(r#""code":"B""#, r#""code":"BB""#),
                "branches[0].services[1].code",
            ),
            (
                branch_json(r#""always_open":true,"#)
                    .replace(r#""id":"loan""#, r#""id":"deposit""#),
                r#"branches[0].services[1].id: duplicate service id "deposit""#,
            ),
            (
                branch_json(r#""always_open":true,"#).replace(r#""minutes":15"#, r#""minutes":0"#),
                "branches[0].services[1].minutes",
            ),
            (
                branch_json(r#""always_open":true,"#).replace(r#""id":"b""#, r#""id":"b b""#),
                "branches[0].id: invalid id",
            ),
            (
                branch_json(r#""always_open":true,"#).replace(
                    r#""services":["deposit","loan"]"#,
                    r#""services":["deposit"]"#,
                ),
                r#"branches[0].services[1]: service "loan" is served by no counter"#,
            ),
            (
                branch_json(r#""always_open":true,"#).replace(
                    r#""services":["deposit","loan"]"#,
                    r#""services":["deposit","loan","deposit"]"#,
                ),
                r#"branches[0].counters[0].services[2]: service "deposit" is listed twice"#,
            ),
            (
                branch_json(r#""always_open":true,"#).replace(
                    r#"{"id":"1","services":["deposit","loan"]}"#,
                    r#"{"id":"1","services":["deposit","loan"]},{"id":"1","services":["loan"]}"#,
                ),
                r#"branches[0].counters[1].id: duplicate counter id "1""#,
            ),
            (
                branch_json(r#""always_open":true,"#).replace(r#""minutes":5"#, r#""minutes":"5""#),
                "branches[0].services[0].minutes: invalid type",
            ),
        ];
        for (json, expected) in cases {
            let e = error_of(&json);
            assert!(e.contains(expected), "expected {expected:?} in {e:?}");
        }
    }

    #[test]
    fn duplicate_branch_ids_are_rejected() {
        let one = r#"{"id":"a","name":"A","time_zone":"UTC","always_open":true,
             "services":[{"id":"deposit","code":"A","minutes":5}],
             "counters":[{"id":"1","services":["deposit"]}]}"#;
        let json = format!(r#"{{"branches":[{one},{one}]}}"#);
        assert_eq!(
            error_of(&json),
            r#"branches[1].id: duplicate branch id "a""#
        );
    }

    #[test]
    fn midnight_closing_and_missing_days() {
        let json = branch_json(r#""hours":{"sat":[["20:00","24:00"]]},"#);
        let c = Catalog::from_json(&json).unwrap();
        let b = c.branch("b").unwrap();
        // Saturday 2026-03-07 23:59 KST = 14:59 UTC.
        assert!(b.is_open_at(utc("2026-03-07T14:59:00Z")));
        // Sunday 00:00 KST: closed (missing weekday = closed).
        assert!(!b.is_open_at(utc("2026-03-07T15:00:00Z")));
        assert_eq!(
            b.next_opening(utc("2026-03-07T15:00:00Z")),
            Some(utc("2026-03-14T11:00:00Z"))
        );
    }

    #[test]
    fn never_open_branch_has_no_next_opening() {
        let json = branch_json(r#""hours":{},"#);
        let c = Catalog::from_json(&json).unwrap();
        let b = c.branch("b").unwrap();
        assert!(!b.is_open_at(utc("2026-03-07T15:00:00Z")));
        assert_eq!(b.next_opening(utc("2026-03-07T15:00:00Z")), None);
    }
}
