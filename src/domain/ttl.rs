use std::fmt;

/// How long credentials live: the ttl an add gets when it names none, the
/// most one add or renew may ask for, and the most a credential may live from
/// its creation, renewals included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    pub default_ttl: u64,
    pub max_ttl: u64,
    pub max_lifetime: u64,
}

/// A ttl as granted: what was asked may have been lowered to `max_ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    pub ttl: u64,
    pub clamped: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ttl must be a whole number of seconds from 1 to {max}")]
pub struct TtlError {
    pub max: u64,
}

impl TtlPolicy {
    /// Parses a requested ttl (absent: the default). A ttl above `max_ttl` is
    /// clamped to it, and the grant says so; zero or garbage is refused.
    pub fn grant(&self, requested: Option<&str>) -> Result<Granted, TtlError> {
        let Some(raw) = requested else {
            return Ok(Granted {
                ttl: self.default_ttl,
                clamped: false,
            });
        };
        match raw.parse::<u64>() {
            Ok(0) | Err(_) => Err(TtlError { max: self.max_ttl }),
            Ok(ttl) if ttl > self.max_ttl => Ok(Granted {
                ttl: self.max_ttl,
                clamped: true,
            }),
            Ok(ttl) => Ok(Granted {
                ttl,
                clamped: false,
            }),
        }
    }
}

/// Epoch seconds as RFC 3339 in UTC, such as `2026-11-23T16:04:05Z`.
pub fn rfc3339(epoch_seconds: i64) -> String {
    let days = epoch_seconds.div_euclid(86_400);
    let secs = epoch_seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Proleptic Gregorian (year, month, day) of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl fmt::Display for Granted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} s", self.ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: TtlPolicy = TtlPolicy {
        default_ttl: 3600,
        max_ttl: 7200,
        max_lifetime: 86_400,
    };

    #[test]
    fn absent_is_the_default_and_above_the_cap_is_clamped() {
        assert_eq!(
            P.grant(None),
            Ok(Granted {
                ttl: 3600,
                clamped: false
            })
        );
        assert_eq!(
            P.grant(Some("60")),
            Ok(Granted {
                ttl: 60,
                clamped: false
            })
        );
        assert_eq!(
            P.grant(Some("7200")),
            Ok(Granted {
                ttl: 7200,
                clamped: false
            })
        );
        assert_eq!(
            P.grant(Some("7201")),
            Ok(Granted {
                ttl: 7200,
                clamped: true
            })
        );
        assert_eq!(
            P.grant(Some("99999999999999999999999")),
            Err(TtlError { max: 7200 }),
            "beyond u64 is garbage, not a clamp"
        );
        for bad in ["0", "-1", "1.5", "abc", " 5"] {
            assert!(P.grant(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_423_382_819), "2015-02-08T08:06:59Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
