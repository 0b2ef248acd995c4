//! A component's `replicas:` in a manifest: a plain count (`replicas: 3`), or a range the
//! scheduler scales within by load (`replicas: {min: 1, max: 4, target: 8, cooldown: 2m}`;
//! `docs/design/autoscaling.md`) and that may go down to zero when idle (`{min: 0, max: 4,
//! idle: 5m}`; `docs/design/scale-to-zero.md`).

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How many replicas a workload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Spelled", into = "Spelled")]
pub struct Replicas {
    /// At least this many, even when idle.
    pub min: u32,
    /// At most this many.
    pub max: u32,
    /// With `min: 0`: stopped after this long without a call, started again by the next one.
    pub idle: Option<Duration>,
    /// Calls in flight per replica the scheduler aims for between `min` and `max` (`None`:
    /// [`DEFAULT_TARGET`]).
    pub target: Option<u32>,
    /// How long the load must want fewer replicas before they stop (`None`:
    /// [`DEFAULT_COOLDOWN`]).
    pub cooldown: Option<Duration>,
}

/// What autoscaling a workload needs: a range above the replicas it runs while awake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Autoscale {
    /// The fewest it runs while awake (taking calls).
    pub floor: u32,
    /// The most it runs.
    pub max: u32,
    /// Calls in flight per replica it aims for.
    pub target: u32,
    /// How long the load must want fewer before replicas stop.
    pub cooldown: Duration,
}

/// Calls in flight per replica when a range names no `target`.
pub const DEFAULT_TARGET: u32 = 10;

/// How long the load must want fewer replicas before they stop, when a range names no
/// `cooldown`.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);

impl Replicas {
    /// Exactly `n` replicas, never scaled.
    pub const fn fixed(n: u32) -> Self {
        Self { min: n, max: n, idle: None, target: None, cooldown: None }
    }

    /// Between `min` and `max`, scaled by load with the default target and cool-down.
    pub const fn range(min: u32, max: u32) -> Self {
        Self { min, max, idle: None, target: None, cooldown: None }
    }

    /// How long it may go without a call before its replicas stop, when it scales to zero.
    pub fn scales_to_zero(&self) -> Option<Duration> {
        self.idle.filter(|_| self.min == 0)
    }

    /// How many run while it is awake (taking calls) and not busy: `max(min, 1)` for a
    /// workload that scales to zero, otherwise `min`.
    pub fn awake(&self) -> u32 {
        if self.scales_to_zero().is_some() { self.min.max(1) } else { self.min }
    }

    /// How the scheduler scales it by load, when `max` leaves room above [`Replicas::awake`].
    pub fn autoscale(&self) -> Option<Autoscale> {
        (self.max > self.awake()).then(|| Autoscale {
            floor: self.awake(),
            max: self.max,
            target: self.target.unwrap_or(DEFAULT_TARGET),
            cooldown: self.cooldown.unwrap_or(DEFAULT_COOLDOWN),
        })
    }
}

impl Default for Replicas {
    fn default() -> Self {
        Self::fixed(1)
    }
}

impl From<u32> for Replicas {
    fn from(n: u32) -> Self {
        Self::fixed(n)
    }
}

impl PartialEq<u32> for Replicas {
    fn eq(&self, n: &u32) -> bool {
        *self == Self::fixed(*n)
    }
}

/// How a manifest spells it.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
enum Spelled {
    /// Exactly this many.
    Fixed(u32),
    /// Between `min` and `max`.
    Range(Range),
}

/// Between `min` and `max` replicas, as many as its load wants; with `min: 0` and an `idle`
/// time, it scales to zero.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Range {
    /// At least this many (0: stopped when idle, woken by the next call).
    min: u32,
    /// At most this many (at least 1, and at least `min`).
    max: u32,
    /// How long without a call before it stops: `300ms`, `2s`, `5m`, `1h` [default: 5m].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idle: Option<String>,
    /// Calls in flight per replica to aim for: more start replicas, up to `max` [default: 10].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<u32>,
    /// How long the load must want fewer replicas before they stop: `30s`, `5m` [default: 5m].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cooldown: Option<String>,
}

/// The idle time of `replicas: {min: 0}` without one.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(300);

impl TryFrom<Spelled> for Replicas {
    type Error = String;

    fn try_from(value: Spelled) -> Result<Self, String> {
        let range = match value {
            Spelled::Fixed(n) => return Ok(Self::fixed(n)),
            Spelled::Range(range) => range,
        };
        if range.max == 0 || range.max < range.min {
            return Err(format!(
                "replicas: max is {} and min {}; max must be at least 1 and at least min",
                range.max, range.min
            ));
        }
        let idle = match range.idle.as_deref() {
            Some(text) => Some(parse_duration("idle", text)?),
            None if range.min == 0 => Some(DEFAULT_IDLE),
            None => None,
        };
        if range.target == Some(0) {
            return Err("replicas: target is 0; name the calls in flight per replica to aim \
                        for, at least 1"
                .to_owned());
        }
        let cooldown =
            range.cooldown.as_deref().map(|t| parse_duration("cooldown", t)).transpose()?;
        Ok(Self { min: range.min, max: range.max, idle, target: range.target, cooldown })
    }
}

impl From<Replicas> for Spelled {
    fn from(r: Replicas) -> Self {
        if r == Replicas::fixed(r.min) {
            return Spelled::Fixed(r.min);
        }
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        Spelled::Range(Range {
            min: r.min,
            max: r.max,
            idle: r.idle.map(ms),
            target: r.target,
            cooldown: r.cooldown.map(ms),
        })
    }
}

impl JsonSchema for Replicas {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Replicas".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Spelled::json_schema(generator)
    }
}

/// A duration written `<number><unit>` with unit `ms`, `s`, `m` or `h`.
fn parse_duration(field: &str, text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "replicas: {field} `{text}` is not a duration; write a number and ms, s, m or h \
             (`5m`)"
        )
    };
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    };
    let ms = ms.filter(|&ms| ms > 0).ok_or_else(bad)?;
    Ok(Duration::from_millis(ms))
}

impl fmt::Display for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scales_to_zero() {
            Some(idle) => write!(f, "{}..{} (idle {}ms)", self.min, self.max, idle.as_millis()),
            None if self.min == self.max => write!(f, "{}", self.min),
            None => write!(f, "{}..{}", self.min, self.max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Replicas, String> {
        serde_saphyr::from_str::<Replicas>(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn a_count_or_a_range() {
        assert_eq!(parse("3").unwrap(), Replicas::fixed(3));
        let r = parse("{min: 0, max: 4, idle: 2s}").unwrap();
        let two = Some(Duration::from_secs(2));
        assert_eq!(r, Replicas { idle: two, ..Replicas::range(0, 4) });
        assert_eq!(r.scales_to_zero(), Some(Duration::from_secs(2)));
        assert_eq!(r.awake(), 1);
        let r = parse("{min: 0, max: 2}").unwrap();
        assert_eq!(r.scales_to_zero(), Some(DEFAULT_IDLE));
        assert_eq!(parse("{min: 2, max: 5}").unwrap().scales_to_zero(), None);
        assert_eq!(parse("{min: 2, max: 5}").unwrap().awake(), 2);
        for bad in ["{min: 0, max: 0}", "{min: 3, max: 2}", "{min: 0, max: 1, idle: soon}"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("{min: 0, max: 1, idle: 5m, colour: red}").is_err());
    }

    #[test]
    fn a_range_above_the_awake_count_autoscales() {
        assert_eq!(Replicas::fixed(3).autoscale(), None);
        assert_eq!(parse("{min: 0, max: 1}").unwrap().autoscale(), None, "only to zero and back");
        let r = parse("{min: 1, max: 4, target: 2, cooldown: 30s}").unwrap();
        let want = Autoscale { floor: 1, max: 4, target: 2, cooldown: Duration::from_secs(30) };
        assert_eq!(r.autoscale(), Some(want));
        let r = parse("{min: 0, max: 3, idle: 1m}").unwrap().autoscale().unwrap();
        assert_eq!((r.floor, r.target, r.cooldown), (1, DEFAULT_TARGET, DEFAULT_COOLDOWN));
        let e = parse("{min: 1, max: 4, target: 0}").unwrap_err();
        assert!(e.contains("target is 0"), "{e}");
        let e = parse("{min: 1, max: 4, cooldown: later}").unwrap_err();
        assert!(e.contains("cooldown `later`"), "{e}");
    }

    #[test]
    fn it_serializes_as_written() {
        let r = parse("{min: 0, max: 4, idle: 300ms}").unwrap();
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"min":0,"max":4,"idle":"300ms"}"#);
        assert_eq!(serde_json::to_string(&Replicas::fixed(2)).unwrap(), "2");
        assert_eq!(serde_json::from_str::<Replicas>(&text).unwrap(), r);
        let r = parse("{min: 1, max: 4, target: 3, cooldown: 1m}").unwrap();
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"min":1,"max":4,"target":3,"cooldown":"60000ms"}"#);
        assert_eq!(serde_json::from_str::<Replicas>(&text).unwrap(), r);
    }
}
