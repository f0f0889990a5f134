//! Object sizes and durations as an operator writes them: `4KiB`, `1MiB:64MiB`
//! (uniform), `4KiB=90,1MiB=10` (weighted), `30s`, `500ms`. Parsing only; no
//! I/O.

use crate::BenchError;
use crate::payload::Rng;

/// The largest single object the bench will write: S3's own limit (5 TiB).
pub const OBJECT_SIZE_BYTES_MAX: u64 = 5 * 1024 * 1024 * 1024 * 1024;
/// How many entries a weighted size list may have.
pub const SIZE_CHOICES_MAX: usize = 64;

/// How the size of each written object is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeDistribution {
    /// Every object has this size.
    Fixed(u64),
    /// Uniform between the two bounds, both included.
    Uniform { min: u64, max: u64 },
    /// Each size with a weight (a relative frequency).
    Weighted(Vec<(u64, u64)>),
}

impl SizeDistribution {
    /// Parses `--size` (`4KiB` or `1MiB:64MiB`).
    ///
    /// # Errors
    /// [`BenchError::Config`] naming what is wrong.
    pub fn parse_size(text: &str) -> Result<Self, BenchError> {
        if let Some((min, max)) = text.split_once(':') {
            let (min, max) = (parse_bytes(min)?, parse_bytes(max)?);
            if min > max {
                return Err(BenchError::Config(format!(
                    "--size {text}: the lower bound is above the upper bound"
                )));
            }
            return Ok(Self::Uniform { min, max });
        }
        Ok(Self::Fixed(parse_bytes(text)?))
    }

    /// Parses `--sizes` (`4KiB=90,1MiB=10`).
    ///
    /// # Errors
    /// [`BenchError::Config`] naming what is wrong.
    pub fn parse_sizes(text: &str) -> Result<Self, BenchError> {
        let mut choices = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (size, weight) = entry.split_once('=').ok_or_else(|| {
                BenchError::Config(format!("--sizes: `{entry}` is not SIZE=WEIGHT"))
            })?;
            let weight: u64 = weight.trim().parse().map_err(|_| {
                BenchError::Config(format!("--sizes: weight `{weight}` is not a whole number"))
            })?;
            choices.push((parse_bytes(size)?, weight));
        }
        if choices.is_empty() || choices.len() > SIZE_CHOICES_MAX {
            return Err(BenchError::Config(format!(
                "--sizes needs 1 to {SIZE_CHOICES_MAX} SIZE=WEIGHT entries"
            )));
        }
        if choices.iter().all(|(_, w)| *w == 0) {
            return Err(BenchError::Config(
                "--sizes: at least one weight must be above 0".into(),
            ));
        }
        Ok(Self::Weighted(choices))
    }

    /// The largest size this distribution can produce.
    #[must_use]
    pub fn max(&self) -> u64 {
        match self {
            Self::Fixed(n) => *n,
            Self::Uniform { max, .. } => *max,
            Self::Weighted(c) => c.iter().map(|(s, _)| *s).max().unwrap_or(0),
        }
    }

    /// Draws one size.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        match self {
            Self::Fixed(n) => *n,
            Self::Uniform { min, max } => min + rng.below(max - min + 1),
            Self::Weighted(choices) => {
                let total: u64 = choices.iter().map(|(_, w)| w).sum();
                let mut pick = rng.below(total);
                for (size, weight) in choices {
                    if pick < *weight {
                        return *size;
                    }
                    pick -= weight;
                }
                choices.last().map_or(0, |(s, _)| *s)
            }
        }
    }
}

impl std::fmt::Display for SizeDistribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "{}", format_bytes(*n)),
            Self::Uniform { min, max } => {
                write!(f, "{}:{}", format_bytes(*min), format_bytes(*max))
            }
            Self::Weighted(c) => {
                let parts: Vec<String> = c
                    .iter()
                    .map(|(s, w)| format!("{}={w}", format_bytes(*s)))
                    .collect();
                write!(f, "{}", parts.join(","))
            }
        }
    }
}

/// `4096`, `4KiB`, `4K`, `4KB` (1000), `1.5MiB`, `64MiB`, `1GiB`.
///
/// # Errors
/// [`BenchError::Config`] when the text is not a size or is above
/// [`OBJECT_SIZE_BYTES_MAX`].
pub fn parse_bytes(text: &str) -> Result<u64, BenchError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(BenchError::Config(format!(
                "`{text}` is not a size: use bytes or B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)"
            )));
        }
    };
    let bad = || BenchError::Config(format!("`{text}` is not a size"));
    let bytes = if let Some((whole, fraction)) = number.split_once('.') {
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        if fraction.is_empty()
            || fraction.len() > 6
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let scale = 10u64.pow(u32::try_from(fraction.len()).map_err(|_| bad())?);
        let fraction: u64 = fraction.parse().map_err(|_| bad())?;
        whole
            .checked_mul(multiplier)
            .and_then(|w| w.checked_add(fraction.checked_mul(multiplier)? / scale))
            .ok_or_else(bad)?
    } else {
        number
            .parse::<u64>()
            .map_err(|_| bad())?
            .checked_mul(multiplier)
            .ok_or_else(bad)?
    };
    if bytes > OBJECT_SIZE_BYTES_MAX {
        return Err(BenchError::Config(format!(
            "`{text}` is above the largest S3 object (5 TiB)"
        )));
    }
    Ok(bytes)
}

/// The shortest exact binary form: `4KiB`, `1536B`, `64MiB`.
#[must_use]
pub fn format_bytes(n: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    format!("{n}B")
}

/// `30s`, `500ms`, `5m`, `1h`, `1m30s`.
///
/// # Errors
/// [`BenchError::Config`] when the text is not a duration.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, BenchError> {
    let bad = || {
        BenchError::Config(format!(
            "`{text}` is not a duration: use ms, s, m or h (`30s`, `500ms`, `2m`)"
        ))
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" | "" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total_ms = value
            .checked_mul(unit_ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(std::time::Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_bytes("4KiB").unwrap(), 4096);
        assert_eq!(parse_bytes("4k").unwrap(), 4096);
        assert_eq!(parse_bytes("4KB").unwrap(), 4000);
        assert_eq!(parse_bytes("1.5MiB").unwrap(), 1_572_864);
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes(" 2 GiB ").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("0").unwrap(), 0);
        for bad in [
            "",
            "KiB",
            "4XB",
            "-1",
            "1.",
            "6TiB",
            "1.2.3MiB",
            "99999999999999999999",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn distributions_parse() {
        assert_eq!(
            SizeDistribution::parse_size("4KiB").unwrap(),
            SizeDistribution::Fixed(4096)
        );
        assert_eq!(
            SizeDistribution::parse_size("1MiB:64MiB").unwrap(),
            SizeDistribution::Uniform {
                min: 1 << 20,
                max: 64 << 20
            }
        );
        assert!(SizeDistribution::parse_size("64MiB:1MiB").is_err());
        assert_eq!(
            SizeDistribution::parse_sizes("4KiB=90, 1MiB=10").unwrap(),
            SizeDistribution::Weighted(vec![(4096, 90), (1 << 20, 10)])
        );
        for bad in ["", "4KiB", "4KiB=x", "4KiB=0", "=5", "4KiB=-1"] {
            assert!(
                SizeDistribution::parse_sizes(bad).is_err(),
                "{bad} should be refused"
            );
        }
        assert_eq!(
            SizeDistribution::parse_sizes("4KiB=90,1MiB=10")
                .unwrap()
                .to_string(),
            "4KiB=90,1MiB=10"
        );
    }

    #[test]
    fn samples_follow_the_distribution() {
        let mut rng = Rng::new(7);
        let uniform = SizeDistribution::Uniform { min: 10, max: 20 };
        let mut seen = [false; 11];
        for _ in 0..10_000 {
            let s = uniform.sample(&mut rng);
            assert!((10..=20).contains(&s));
            seen[usize::try_from(s - 10).unwrap()] = true;
        }
        assert!(
            seen.iter().all(|s| *s),
            "both bounds and all between are drawn"
        );
        let weighted = SizeDistribution::Weighted(vec![(1, 90), (2, 10), (3, 0)]);
        let mut counts = [0u32; 4];
        for _ in 0..100_000 {
            counts[usize::try_from(weighted.sample(&mut rng)).unwrap()] += 1;
        }
        assert_eq!(counts[3], 0, "a zero weight is never drawn");
        assert!((88_000..92_000).contains(&counts[1]), "{counts:?}");
        assert!((8_000..12_000).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn durations_parse() {
        use std::time::Duration;
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        for bad in ["", "s", "10x", "-5s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
    }
}
