//! The simulated world: the catalog, the world clock, the hosts' skewed
//! clocks, and the business-hour boundaries a run crosses.
//!
//! Two branches: `seoul` (Asia/Seoul, weekly hours that include a late
//! shift running through local midnight on weekdays, so midnight is crossed
//! while open, plus the usual 16:00 closing) and `allday` (always open, in
//! Europe/London, whose midnight is 09:00 in Seoul: the `seoul` opening).
//! Each run starts a few minutes before one boundary, chosen by the seed:
//! Seoul midnight, Seoul opening (= London midnight), Seoul 16:00 closing, or
//! the 01:00 end of the late shift. Dates are Sunday 2026-03-01 to Saturday
//! 2026-03-07 (before either zone changes to summer time), so weekend
//! boundaries occur too (Saturday has only the 00:00–01:00 shift, Sunday is
//! closed).
//!
//! The world clock only moves forward, by seeded amounts: 0–30 ms per step
//! (0–10 ms within 3 s of a local midnight, so many requests straddle it);
//! now and then a quiet gap (no new request until none is in flight, then
//! a jump of up to 150 s, so idempotency leases, the 2-minute hole lease
//! and the 15-minute retention of finished tickets lapse during a run); and
//! rarely a stall (a jump of seconds with requests in flight, which then
//! hit their host's timeout). A request reads its host's clock
//! (world clock + the host's fixed skew of up to ±3 s) when it starts.

use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Utc};
use kiosk_domain::{Branch, Catalog};

use crate::rng::Rng;

pub const CATALOG: &str = r#"{
  "limits": {
    "kiosk_tickets": { "limit": 1000000, "per": "minute" },
    "phone_tickets": { "limit": 1000000, "per": "minute" }
  },
  "branches": [
    {
      "id": "seoul", "name": "Seoul", "time_zone": "Asia/Seoul",
      "hours": {
        "mon": [["00:00", "01:00"], ["09:00", "16:00"], ["22:00", "24:00"]],
        "tue": [["00:00", "01:00"], ["09:00", "16:00"], ["22:00", "24:00"]],
        "wed": [["00:00", "01:00"], ["09:00", "16:00"], ["22:00", "24:00"]],
        "thu": [["00:00", "01:00"], ["09:00", "16:00"], ["22:00", "24:00"]],
        "fri": [["00:00", "01:00"], ["09:00", "16:00"], ["22:00", "24:00"]],
        "sat": [["00:00", "01:00"]],
        "sun": []
      },
      "limits": { "phone_tickets": { "limit": 30, "per": "minute" } },
      "services": [
        { "id": "deposit", "code": "A", "minutes": 5, "max_waiting": 40 },
        { "id": "loan", "code": "B", "minutes": 15, "max_waiting": 15 }
      ],
      "counters": [
        { "id": "1", "services": ["deposit", "loan"] },
        { "id": "2", "services": ["deposit"] },
        { "id": "3", "services": ["loan"] }
      ]
    },
    {
      "id": "allday", "name": "All day", "time_zone": "Europe/London", "always_open": true,
      "services": [
        { "id": "deposit", "code": "A", "minutes": 5, "max_waiting": 60 },
        { "id": "fx", "code": "C", "minutes": 8, "max_waiting": 20 }
      ],
      "counters": [
        { "id": "1", "services": ["deposit", "fx"] },
        { "id": "2", "services": ["fx"] }
      ]
    }
  ]
}"#;

/// How close to local midnight the clock slows down.
pub const SLOW_NEAR_MIDNIGHT: TimeDelta = TimeDelta::seconds(3);

pub fn catalog() -> Catalog {
    Catalog::from_json(CATALOG).expect("the simulation catalog is valid")
}

/// The boundary a run starts before (times are Seoul's unless named).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Midnight,
    OpeningLondonMidnight,
    Closing,
    LateClosing,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Midnight => "Seoul midnight",
            Target::OpeningLondonMidnight => "Seoul 09:00 opening / London midnight",
            Target::Closing => "Seoul 16:00 closing",
            Target::LateClosing => "Seoul 01:00 closing",
        }
    }
}

fn utc(date: NaiveDate, h: u32, m: u32) -> DateTime<Utc> {
    date.and_hms_opt(h, m, 0).expect("valid time").and_utc()
}

/// Boundary crossings seen (world clock, per branch).
#[derive(Debug, Clone, Copy, Default)]
pub struct Crossings {
    pub midnights: u64,
    pub openings: u64,
    pub closings: u64,
}

impl Crossings {
    pub fn add(&mut self, o: &Crossings) {
        self.midnights += o.midnights;
        self.openings += o.openings;
        self.closings += o.closings;
    }
}

pub struct World {
    pub now: DateTime<Utc>,
    pub start: DateTime<Utc>,
    pub target: Target,
    /// Skew of each host's clock.
    pub skews: Vec<TimeDelta>,
    /// Per branch: (business day, open) at the last step.
    last: Vec<(NaiveDate, bool)>,
    pub crossings: Crossings,
    /// How often quiet gaps start (per step).
    jumpiness: f64,
}

impl World {
    pub fn new(rng: &mut Rng, catalog: &Catalog) -> World {
        let target = *rng.pick(&[
            Target::Midnight,
            Target::OpeningLondonMidnight,
            Target::Closing,
            Target::LateClosing,
        ]);
        let first = NaiveDate::from_ymd_opt(2026, 3, 1).expect("date");
        let boundary = match target {
            // Local midnight starting Mon 2 .. Sat 7 = 15:00 UTC the day before.
            Target::Midnight => utc(first + TimeDelta::days(rng.range(0, 5)), 15, 0),
            // 09:00 KST = 00:00 UTC = 00:00 GMT, Mon 2 .. Fri 6.
            Target::OpeningLondonMidnight => utc(first + TimeDelta::days(rng.range(1, 5)), 0, 0),
            // 16:00 KST = 07:00 UTC, Mon 2 .. Fri 6.
            Target::Closing => utc(first + TimeDelta::days(rng.range(1, 5)), 7, 0),
            // 01:00 KST = 16:00 UTC the day before, Tue 3 .. Sat 7.
            Target::LateClosing => utc(first + TimeDelta::days(rng.range(1, 5)), 16, 0),
        };
        let start = boundary - TimeDelta::milliseconds(rng.range(20_000, 360_000));
        let hosts = rng.range(2, 3) as usize;
        let skews = (0..hosts)
            .map(|_| TimeDelta::milliseconds(rng.range(-3_000, 3_000)))
            .collect();
        let last = catalog
            .branches()
            .iter()
            .map(|b| (b.business_day(start), b.is_open_at(start)))
            .collect();
        World {
            now: start,
            start,
            target,
            skews,
            last,
            crossings: Crossings::default(),
            jumpiness: *rng.pick(&[0.006, 0.01, 0.016]),
        }
    }

    /// The clock of `host`.
    pub fn host_now(&self, host: usize) -> DateTime<Utc> {
        self.now + self.skews[host]
    }

    /// One step's worth of time: 0–30 ms, or 0–10 ms within a few seconds
    /// of a branch's local midnight (so that many requests straddle it).
    pub fn tick(&mut self, rng: &mut Rng, catalog: &Catalog) -> Vec<String> {
        let ms = if self.near_midnight(catalog) {
            rng.range(0, 10)
        } else {
            rng.range(0, 30)
        };
        self.advance(TimeDelta::milliseconds(ms), catalog)
    }

    /// Within [`SLOW_NEAR_MIDNIGHT`] of some branch's local midnight (where
    /// gaps and stalls do not happen either).
    pub fn near_midnight(&self, catalog: &Catalog) -> bool {
        catalog.branches().iter().any(|b| {
            b.business_day(self.now - SLOW_NEAR_MIDNIGHT)
                != b.business_day(self.now + SLOW_NEAR_MIDNIGHT)
        })
    }

    /// Whether a quiet gap starts now (new requests wait until none is in
    /// flight, then the clock jumps by its length), and how long it is.
    pub fn gap(&mut self, rng: &mut Rng) -> Option<TimeDelta> {
        rng.chance(self.jumpiness)
            .then(|| TimeDelta::milliseconds(rng.range(500, 150_000)))
    }

    /// Whether the clock jumps now, with requests in flight (a stalled
    /// host: those requests time out).
    pub fn stall(&mut self, rng: &mut Rng) -> Option<TimeDelta> {
        rng.chance(self.jumpiness / 20.0)
            .then(|| TimeDelta::milliseconds(rng.range(2_000, 20_000)))
    }

    /// `by`, shortened so that a jump ends where the slow zone before the
    /// next local midnight of any branch begins (jumps never skip it).
    pub fn clamp_jump(&self, by: TimeDelta, catalog: &Catalog) -> TimeDelta {
        let mut by = by;
        for b in catalog.branches() {
            let next_day = b.business_day(self.now).succ_opt().expect("date");
            let midnight = b
                .time_zone
                .from_local_datetime(&next_day.and_hms_opt(0, 0, 0).expect("time"))
                .earliest()
                .expect("midnight exists in these zones")
                .with_timezone(&Utc);
            let zone = midnight - SLOW_NEAR_MIDNIGHT;
            if self.now < zone && self.now + by > zone {
                by = zone - self.now;
            }
        }
        by
    }

    /// Moves the world clock forward; returns the boundary crossings this
    /// caused (as text, for traces).
    pub fn advance(&mut self, by: TimeDelta, catalog: &Catalog) -> Vec<String> {
        self.now += by;
        self.observe(catalog)
    }

    fn observe(&mut self, catalog: &Catalog) -> Vec<String> {
        let mut events = Vec::new();
        for (b, last) in catalog.branches().iter().zip(self.last.iter_mut()) {
            let day = b.business_day(self.now);
            let open = b.is_open_at(self.now);
            if day != last.0 {
                self.crossings.midnights += 1;
                events.push(format!("{}: local midnight, business day {day}", b.id));
            }
            if open != last.1 {
                if open {
                    self.crossings.openings += 1;
                } else {
                    self.crossings.closings += 1;
                }
                events.push(format!(
                    "{}: {}",
                    b.id,
                    if open { "opens" } else { "closes" }
                ));
            }
            *last = (day, open);
        }
        events
    }

    /// Local wall time of `branch` at the world clock, for traces.
    pub fn local(&self, branch: &Branch) -> String {
        self.now
            .with_timezone(&branch.time_zone)
            .format("%a %H:%M:%S%.3f")
            .to_string()
    }
}
