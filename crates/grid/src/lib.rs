//! Grid carbon intensity: what a kWh drawn from a grid zone emitted, from a
//! configured factor, a yearly table, recorded files or live APIs.
//!
//! Every value is an [`IntensityPoint`] that keeps its provenance: zone,
//! time span, average or marginal, life-cycle or direct, estimated or not,
//! source and retrieval time. Average factors go into inventories, marginal
//! ones only into scheduling signals: the value sits in an [`Intensity`]
//! whose variant says which, and [`IntensityPoint::inventory_factor`]
//! refuses a marginal one.
//!
//! Code map:
//! - [`time`]: timestamps as the sources write them, French local time,
//!   the step of a series (pure);
//! - [`fixed`]: a configured factor per zone ([`StaticFactor`]) and the
//!   Electricity Maps yearly averages republished by co2.js
//!   ([`YearlyTable`]);
//! - [`files`]: eCO2mix exports, Electricity Maps CSV exports and Carbon
//!   Intensity API JSON read into a [`Series`];
//! - [`electricity_maps`], [`watttime`], [`carbon_intensity_uk`], [`odre`]:
//!   live APIs, each given its base URL and a credentials file;
//! - [`store`]: the `grid_intensity` SQLite table;
//! - [`live`]: the `[[carbon.live]]` configuration and one refresh (the
//!   periodic task is the collector's).
//!
//! Invariant: providers know no clock; the caller passes `now_ms`, which
//! becomes every point's `retrieved_ms`.

pub mod carbon_intensity_uk;
pub mod electricity_maps;
pub mod files;
pub mod fixed;
mod http;
pub use http::client_tls;
pub mod live;
pub mod odre;
pub mod store;
pub mod time;
pub mod watttime;

pub use files::{FileFormat, Series};
pub use fixed::{StaticFactor, YearlyTable};
pub use http::HttpConfig;

use std::future::Future;
use std::pin::Pin;
use vigie_energy::GramsPerKwh;

/// Average or marginal emission factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Factor {
    /// Emissions of all generation (and imports) divided by the energy:
    /// what inventories use.
    Average,
    /// Emissions of the generator that responds to a change in load: a
    /// scheduling signal only.
    Marginal,
}

impl Factor {
    /// `average` or `marginal`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Factor::Average => "average",
            Factor::Marginal => "marginal",
        }
    }

    /// The inverse of [`Factor::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "average" => Some(Factor::Average),
            "marginal" => Some(Factor::Marginal),
            _ => None,
        }
    }
}

/// What the emission factors of each fuel count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Basis {
    /// Life-cycle assessment: construction, fuel supply and operation.
    Lifecycle,
    /// Direct (operational, combustion only) emissions.
    Direct,
}

impl Basis {
    /// `lifecycle` or `direct`, as stored and as Electricity Maps writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Lifecycle => "lifecycle",
            Basis::Direct => "direct",
        }
    }

    /// The inverse of [`Basis::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "lifecycle" => Some(Basis::Lifecycle),
            "direct" => Some(Basis::Direct),
            _ => None,
        }
    }
}

/// A carbon intensity, tagged with its kind so that a marginal value
/// cannot be read as an average one without saying so.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Intensity {
    /// Average factor, gCO2e/kWh.
    Average(GramsPerKwh),
    /// Marginal factor, gCO2e/kWh.
    Marginal(GramsPerKwh),
}

impl Intensity {
    /// Which kind of factor this is.
    pub fn factor(self) -> Factor {
        match self {
            Intensity::Average(_) => Factor::Average,
            Intensity::Marginal(_) => Factor::Marginal,
        }
    }

    /// A value of `factor` kind.
    pub fn new(factor: Factor, value: GramsPerKwh) -> Self {
        match factor {
            Factor::Average => Intensity::Average(value),
            Factor::Marginal => Intensity::Marginal(value),
        }
    }
}

/// One carbon intensity over one time span of one zone, with its
/// provenance.
#[derive(Debug, Clone, PartialEq)]
pub struct IntensityPoint {
    /// Grid zone (Electricity Maps zone key such as `FR`, WattTime region
    /// such as `CAISO_NORTH`, `GB` for the Carbon Intensity API).
    pub zone: String,
    /// Start of the span, Unix milliseconds, inclusive.
    pub start_ms: i64,
    /// End of the span, Unix milliseconds, exclusive.
    pub end_ms: i64,
    /// The value and whether it is average or marginal.
    pub intensity: Intensity,
    /// Life-cycle or direct emission factors.
    pub basis: Basis,
    /// A forecast, a model's estimate or a stand-in from another period,
    /// rather than a value computed from measured generation.
    pub estimated: bool,
    /// Who published it (`electricitymaps`, `watttime`, `rte-eco2mix`,
    /// `neso-carbon-intensity`, a configured name...).
    pub source: String,
    /// When it was read from its source, Unix milliseconds.
    pub retrieved_ms: i64,
}

/// A marginal factor was asked for as an inventory factor.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{origin} {zone}: a marginal factor is a scheduling signal and never enters an emission inventory"
)]
pub struct NotForInventory {
    /// Zone of the refused point.
    pub zone: String,
    /// Source of the refused point.
    pub origin: String,
}

impl IntensityPoint {
    /// Average or marginal.
    pub fn factor(&self) -> Factor {
        self.intensity.factor()
    }

    /// The value for emission inventories (location-based Scope 2, SCI):
    /// an average factor, or an error for a marginal one.
    pub fn inventory_factor(&self) -> Result<GramsPerKwh, NotForInventory> {
        match self.intensity {
            Intensity::Average(v) => Ok(v),
            Intensity::Marginal(_) => Err(NotForInventory {
                zone: self.zone.clone(),
                origin: self.source.clone(),
            }),
        }
    }

    /// The value as a scheduling signal, whatever its kind.
    pub fn signal(&self) -> GramsPerKwh {
        match self.intensity {
            Intensity::Average(v) | Intensity::Marginal(v) => v,
        }
    }

    /// Whether the span meets `[from_ms, to_ms)`.
    pub fn overlaps(&self, from_ms: i64, to_ms: i64) -> bool {
        self.start_ms < to_ms && self.end_ms > from_ms
    }
}

/// Why intensities could not be had. [`GridError::is_retryable`] tells a
/// passing failure (try again later) from one that needs a person.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    /// The service refused the credentials (HTTP 401 or 403): fix the
    /// credentials file.
    #[error("{what}: credentials refused (HTTP {status})")]
    Auth {
        /// Request, without its query.
        what: String,
        /// HTTP status.
        status: u16,
    },
    /// Too many requests (HTTP 429): retry after the delay if given.
    #[error("{what}: rate limited (HTTP 429)")]
    RateLimited {
        /// Request, without its query.
        what: String,
        /// Seconds the service asked to wait (`Retry-After`).
        retry_after_s: Option<u64>,
    },
    /// The service failed (HTTP 5xx): retry later.
    #[error("{what}: service unavailable (HTTP {status})")]
    Unavailable {
        /// Request, without its query.
        what: String,
        /// HTTP status.
        status: u16,
    },
    /// The service could not be reached or the transfer broke: retry later.
    #[error("{what}: {detail}")]
    Unreachable {
        /// Request, without its query.
        what: String,
        /// Transport error chain.
        detail: String,
    },
    /// The service rejected the request (another 4xx: unknown zone, range
    /// too long, plan without access).
    #[error("{what}: rejected (HTTP {status}): {detail}")]
    Rejected {
        /// Request, without its query.
        what: String,
        /// HTTP status.
        status: u16,
        /// What the service said, shortened.
        detail: String,
    },
    /// A response or file does not have the expected shape or holds an
    /// impossible value.
    #[error("{what}: {detail}")]
    Format {
        /// Request or file (and line).
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A credentials file could not be read.
    #[error("credentials: {0}")]
    Secret(#[from] vigie_service::secrets::SecretError),
    /// The provider's settings cannot work (bad URL, bad CA file, bad value).
    #[error("configuration: {0}")]
    Config(String),
    /// The provider has nothing for this zone.
    #[error("{provider} has no data for zone {zone:?}")]
    UnknownZone {
        /// Provider.
        provider: String,
        /// Zone asked for.
        zone: String,
    },
    /// The range is longer than this provider answers in one call.
    #[error("time range [{from_ms}, {to_ms}) longer than {max_days} days")]
    RangeTooLong {
        /// Start asked for.
        from_ms: i64,
        /// End asked for.
        to_ms: i64,
        /// The limit.
        max_days: i64,
    },
    /// `from_ms` is not before `to_ms`.
    #[error("empty time range [{from_ms}, {to_ms})")]
    EmptyRange {
        /// Start asked for.
        from_ms: i64,
        /// End asked for.
        to_ms: i64,
    },
}

impl GridError {
    /// Whether the same request may succeed later without a change of
    /// configuration (rate limit, 5xx, network).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            GridError::RateLimited { .. }
                | GridError::Unavailable { .. }
                | GridError::Unreachable { .. }
        )
    }
}

/// The future a [`Provider`] returns.
pub type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<IntensityPoint>, GridError>> + Send + 'a>>;

/// A source of carbon intensities. Object safe, so that the collector can
/// hold the provider its configuration names as `Box<dyn Provider>`.
pub trait Provider: Send + Sync {
    /// Source name written into the points.
    fn source(&self) -> &str;

    /// Points of `zone` whose spans meet `[from_ms, to_ms)`, ordered by
    /// start, each with `retrieved_ms = now_ms`. Spans are the source's
    /// own (not clipped to the range). Where the range reaches past
    /// `now_ms`, sources with forecasts return them, flagged estimated.
    fn fetch<'a>(&'a self, zone: &'a str, from_ms: i64, to_ms: i64, now_ms: i64)
    -> FetchFuture<'a>;
}

/// Longest range a live provider fetches in one call: a year of
/// backfill, not a runaway loop of requests.
pub const MAX_LIVE_RANGE_DAYS: i64 = 366;

/// The common range check.
fn check_range(from_ms: i64, to_ms: i64) -> Result<(), GridError> {
    if from_ms < to_ms {
        Ok(())
    } else {
        Err(GridError::EmptyRange { from_ms, to_ms })
    }
}

/// The range check of live providers: not empty, not over
/// [`MAX_LIVE_RANGE_DAYS`].
fn check_live_range(from_ms: i64, to_ms: i64) -> Result<(), GridError> {
    check_range(from_ms, to_ms)?;
    if to_ms.saturating_sub(from_ms) > MAX_LIVE_RANGE_DAYS * time::DAY_MS {
        return Err(GridError::RangeTooLong {
            from_ms,
            to_ms,
            max_days: MAX_LIVE_RANGE_DAYS,
        });
    }
    Ok(())
}

/// Splits `[from_ms, to_ms)` into consecutive windows of at most
/// `max_ms` (APIs cap the span of one request).
fn windows(from_ms: i64, to_ms: i64, max_ms: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut start = from_ms;
    while start < to_ms {
        let end = to_ms.min(start.saturating_add(max_ms));
        out.push((start, end));
        start = end;
    }
    out
}

/// A value as published: finite and not negative, else a format error.
fn checked_value(v: f64, what: impl FnOnce() -> String) -> Result<GramsPerKwh, GridError> {
    if v.is_finite() && v >= 0.0 {
        Ok(GramsPerKwh(v))
    } else {
        Err(GridError::Format {
            what: what(),
            detail: format!("impossible carbon intensity {v}"),
        })
    }
}

/// Sorts by start then source, and keeps the first of points sharing zone,
/// source, factor, basis and start (the store's key).
fn sort_dedup(points: &mut Vec<IntensityPoint>) {
    points.sort_by(|a, b| {
        (a.start_ms, &a.zone, &a.source, a.factor(), a.basis).cmp(&(
            b.start_ms,
            &b.zone,
            &b.source,
            b.factor(),
            b.basis,
        ))
    });
    points.dedup_by(|b, a| {
        a.start_ms == b.start_ms
            && a.zone == b.zone
            && a.source == b.source
            && a.factor() == b.factor()
            && a.basis == b.basis
    });
}

/// Measured points, then the forecast's from where the measured ones
/// end, cut to `[from_ms, to_ms)`, sorted and deduplicated: what a live
/// provider returns for a range reaching past now.
fn past_then_forecast(
    mut past: Vec<IntensityPoint>,
    forecast: Vec<IntensityPoint>,
    from_ms: i64,
    to_ms: i64,
) -> Vec<IntensityPoint> {
    let measured_until = past.iter().map(|p| p.end_ms).max().unwrap_or(i64::MIN);
    past.extend(
        forecast
            .into_iter()
            .filter(|p| p.start_ms >= measured_until),
    );
    past.retain(|p| p.overlaps(from_ms, to_ms));
    sort_dedup(&mut past);
    past
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn point(intensity: Intensity) -> IntensityPoint {
        IntensityPoint {
            zone: "CAISO_NORTH".into(),
            start_ms: 0,
            end_ms: 300_000,
            intensity,
            basis: Basis::Direct,
            estimated: false,
            source: "watttime".into(),
            retrieved_ms: 1,
        }
    }

    #[test]
    fn grid_marginal_is_refused_for_inventories() {
        let m = point(Intensity::Marginal(GramsPerKwh(400.0)));
        let err = m.inventory_factor().unwrap_err();
        assert_eq!(err.zone, "CAISO_NORTH");
        assert!(err.to_string().contains("scheduling signal"));
        assert_eq!(m.signal(), GramsPerKwh(400.0));
        let a = point(Intensity::Average(GramsPerKwh(55.0)));
        assert_eq!(a.inventory_factor(), Ok(GramsPerKwh(55.0)));
        assert_eq!(a.factor(), Factor::Average);
    }

    #[test]
    fn grid_names_round_trip() {
        for f in [Factor::Average, Factor::Marginal] {
            assert_eq!(Factor::parse(f.as_str()), Some(f));
        }
        for b in [Basis::Lifecycle, Basis::Direct] {
            assert_eq!(Basis::parse(b.as_str()), Some(b));
        }
        assert_eq!(Factor::parse("Average"), None);
    }

    #[test]
    fn grid_retryable_errors() {
        let what = String::new;
        assert!(
            GridError::Unavailable {
                what: what(),
                status: 503
            }
            .is_retryable()
        );
        assert!(
            GridError::RateLimited {
                what: what(),
                retry_after_s: None
            }
            .is_retryable()
        );
        assert!(
            !GridError::Auth {
                what: what(),
                status: 401
            }
            .is_retryable()
        );
        assert!(
            !GridError::Rejected {
                what: what(),
                status: 400,
                detail: what()
            }
            .is_retryable()
        );
    }

    #[test]
    fn grid_overlap_is_half_open() {
        let p = point(Intensity::Average(GramsPerKwh(1.0)));
        assert!(p.overlaps(0, 1));
        assert!(p.overlaps(299_999, 400_000));
        assert!(!p.overlaps(300_000, 400_000));
        assert!(!p.overlaps(-10, 0));
    }
}
