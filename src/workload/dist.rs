//! Distributions a user writes on the command line: `100`, `normal:512,128`,
//! `lognormal:512,256`, `uniform:10,100`, `exp:5s`, or `from:TRACE[@KIND]`
//! (the empirical distribution of a trace's column). Numbers are token
//! counts or, for times, humantime durations (`exp:5s`).
//!
//! The log-normal is given by its own mean and standard deviation (what
//! `inspect` prints), not by those of its logarithm.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use rand::RngExt;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp, LogNormal, Normal};

/// A distribution of non-negative values, as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Dist {
    /// Always this value.
    Constant(f64),
    /// Normal with this mean and standard deviation (clamped at the
    /// minimum of what it draws).
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        sd: f64,
    },
    /// Log-normal with this mean and standard deviation of the values.
    LogNormal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        sd: f64,
    },
    /// Uniform over `[lo, hi]`.
    Uniform {
        /// Lowest value.
        lo: f64,
        /// Highest value.
        hi: f64,
    },
    /// Exponential with this mean.
    Exponential {
        /// Mean.
        mean: f64,
    },
    /// The values of a trace column (input or output tokens), optionally of
    /// the rows of one `request_kind`; loaded by
    /// [`super::synth::generate`].
    Empirical {
        /// The trace.
        trace: PathBuf,
        /// Only rows of this `request_kind`.
        kind: Option<String>,
    },
}

/// How the numbers of a [`Dist`] are written: token counts or durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Plain numbers.
    Count,
    /// Humantime durations (`5s`, `250ms`), held in seconds.
    Seconds,
}

impl Dist {
    /// Parses `spec` with numbers in `unit`.
    pub fn parse(spec: &str, unit: Unit) -> Result<Self, String> {
        let spec = spec.trim();
        let number = |s: &str| -> Result<f64, String> {
            let s = s.trim();
            let v = match unit {
                Unit::Count => s
                    .parse::<f64>()
                    .map_err(|_| format!("{s:?} is not a number"))?,
                Unit::Seconds => humantime::parse_duration(s)
                    .map_err(|e| format!("{s:?} is not a duration ({e}); write e.g. 5s or 250ms"))?
                    .as_secs_f64(),
            };
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{s:?} must be a finite number of at least 0"));
            }
            Ok(v)
        };
        let Some((kind, args)) = spec.split_once(':') else {
            return number(spec).map(Self::Constant).map_err(|e| {
                format!("{e}; write a value or normal:MEAN,SD, lognormal:MEAN,SD, uniform:LO,HI, exp:MEAN, from:TRACE[@KIND]")
            });
        };
        let two = |name: &str| -> Result<(f64, f64), String> {
            let parts: Vec<&str> = args.split(',').collect();
            match parts.as_slice() {
                [a, b] => Ok((number(a)?, number(b)?)),
                _ => Err(format!(
                    "{name} takes two values, {name}:A,B (got {args:?})"
                )),
            }
        };
        match kind.trim() {
            "normal" => {
                let (mean, sd) = two("normal")?;
                Ok(Self::Normal { mean, sd })
            }
            "lognormal" => {
                let (mean, sd) = two("lognormal")?;
                if mean <= 0.0 {
                    return Err("lognormal needs a mean above 0".into());
                }
                Ok(Self::LogNormal { mean, sd })
            }
            "uniform" => {
                let (lo, hi) = two("uniform")?;
                if lo > hi {
                    return Err(format!("uniform:{args}: the low end is above the high end"));
                }
                Ok(Self::Uniform { lo, hi })
            }
            "exp" | "exponential" => Ok(Self::Exponential {
                mean: number(args)?,
            }),
            "from" => {
                let (path, kind) = match args.rsplit_once('@') {
                    Some((p, k)) if !k.is_empty() => (p, Some(k.to_owned())),
                    _ => (args, None),
                };
                if unit != Unit::Count {
                    return Err("from:TRACE is for token counts".into());
                }
                if path.is_empty() {
                    return Err("from: needs a trace path, from:TRACE[@KIND]".into());
                }
                Ok(Self::Empirical {
                    trace: PathBuf::from(path),
                    kind,
                })
            }
            other => Err(format!(
                "unknown distribution {other:?}; use normal, lognormal, uniform, exp or from"
            )),
        }
    }

    /// The mean the distribution asks for, where it is known without data.
    pub fn mean(&self) -> Option<f64> {
        match *self {
            Self::Constant(v) => Some(v),
            Self::Normal { mean, .. } | Self::LogNormal { mean, .. } => Some(mean),
            Self::Uniform { lo, hi } => Some((lo + hi) / 2.0),
            Self::Exponential { mean } => Some(mean),
            Self::Empirical { .. } => None,
        }
    }
}

impl fmt::Display for Dist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Constant(v) => write!(f, "{v}"),
            Self::Normal { mean, sd } => write!(f, "normal:{mean},{sd}"),
            Self::LogNormal { mean, sd } => write!(f, "lognormal:{mean},{sd}"),
            Self::Uniform { lo, hi } => write!(f, "uniform:{lo},{hi}"),
            Self::Exponential { mean } => write!(f, "exp:{mean}"),
            Self::Empirical { trace, kind } => {
                write!(f, "from:{}", trace.display())?;
                match kind {
                    Some(k) => write!(f, "@{k}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// A length distribution (tokens or turns), parsed as [`Unit::Count`].
#[derive(Debug, Clone, PartialEq)]
pub struct Lengths(pub Dist);

impl FromStr for Lengths {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Dist::parse(s, Unit::Count).map(Self)
    }
}

impl fmt::Display for Lengths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A time distribution, parsed as [`Unit::Seconds`].
#[derive(Debug, Clone, PartialEq)]
pub struct Durations(pub Dist);

impl FromStr for Durations {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Dist::parse(s, Unit::Seconds).map(Self)
    }
}

impl fmt::Display for Durations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Seconds back as durations, so the spec reads as it was written.
        let d = |v: f64| humantime::format_duration(std::time::Duration::from_secs_f64(v));
        match &self.0 {
            Dist::Constant(v) => write!(f, "{}", d(*v)),
            Dist::Normal { mean, sd } => write!(f, "normal:{},{}", d(*mean), d(*sd)),
            Dist::LogNormal { mean, sd } => write!(f, "lognormal:{},{}", d(*mean), d(*sd)),
            Dist::Uniform { lo, hi } => write!(f, "uniform:{},{}", d(*lo), d(*hi)),
            Dist::Exponential { mean } => write!(f, "exp:{}", d(*mean)),
            other => other.fmt(f),
        }
    }
}

/// Draws from a [`Dist`] whose data (if any) is loaded.
#[derive(Debug, Clone)]
pub enum Sampler {
    /// A parametric distribution.
    Param(Param),
    /// Draws one of these values uniformly.
    Values(Vec<f64>),
}

/// The parametric distributions, built once.
#[derive(Debug, Clone)]
pub enum Param {
    /// Always this.
    Constant(f64),
    /// Normal.
    Normal(Normal<f64>),
    /// Log-normal.
    LogNormal(LogNormal<f64>),
    /// Uniform over `[lo, hi]`.
    Uniform(f64, f64),
    /// Exponential.
    Exponential(Exp<f64>),
}

impl Sampler {
    /// A sampler for a parametric `dist`; `None` for [`Dist::Empirical`].
    pub fn param(dist: &Dist) -> Result<Option<Self>, String> {
        let p = match *dist {
            Dist::Constant(v) => Param::Constant(v),
            Dist::Normal { mean, sd } => Param::Normal(
                Normal::new(mean, sd).map_err(|e| format!("normal:{mean},{sd}: {e}"))?,
            ),
            Dist::LogNormal { mean, sd } => {
                // Moments of the values to those of their logarithm.
                let s2 = (1.0 + (sd / mean).powi(2)).ln();
                let mu = mean.ln() - s2 / 2.0;
                Param::LogNormal(
                    LogNormal::new(mu, s2.sqrt())
                        .map_err(|e| format!("lognormal:{mean},{sd}: {e}"))?,
                )
            }
            Dist::Uniform { lo, hi } => Param::Uniform(lo, hi),
            Dist::Exponential { mean } => {
                if mean == 0.0 {
                    Param::Constant(0.0)
                } else {
                    Param::Exponential(
                        Exp::new(1.0 / mean).map_err(|e| format!("exp:{mean}: {e}"))?,
                    )
                }
            }
            Dist::Empirical { .. } => return Ok(None),
        };
        Ok(Some(Self::Param(p)))
    }

    /// One draw (never negative).
    pub fn draw(&self, rng: &mut StdRng) -> f64 {
        let v = match self {
            Self::Param(Param::Constant(v)) => *v,
            Self::Param(Param::Normal(d)) => d.sample(rng),
            Self::Param(Param::LogNormal(d)) => d.sample(rng),
            Self::Param(Param::Uniform(lo, hi)) => {
                if lo == hi {
                    *lo
                } else {
                    rng.random_range(*lo..=*hi)
                }
            }
            Self::Param(Param::Exponential(d)) => d.sample(rng),
            Self::Values(v) => match v.len() {
                0 => 0.0,
                n => v[rng.random_range(0..n)],
            },
        };
        v.max(0.0)
    }

    /// One draw rounded to a count of at least `min`.
    pub fn draw_count(&self, rng: &mut StdRng, min: i32) -> i32 {
        let v = self.draw(rng).round();
        if v >= f64::from(i32::MAX) {
            i32::MAX
        } else {
            (v as i32).max(min)
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn mean_sd(s: &Sampler, n: usize) -> (f64, f64) {
        let mut rng = StdRng::seed_from_u64(7);
        let v: Vec<f64> = (0..n).map(|_| s.draw(&mut rng)).collect();
        let m = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n as f64;
        (m, var.sqrt())
    }

    #[test]
    fn specs_parse_and_print_back() {
        for s in [
            "100",
            "normal:512,128",
            "lognormal:512,256",
            "uniform:10,100",
            "exp:200",
            "from:datasets/x.parquet@conv",
            "from:t.parquet",
        ] {
            assert_eq!(Dist::parse(s, Unit::Count).unwrap().to_string(), s);
        }
        let d: Durations = "exp:5s".parse().unwrap();
        assert_eq!(d.0, Dist::Exponential { mean: 5.0 });
        assert_eq!(d.to_string(), "exp:5s");
    }

    #[test]
    fn bad_specs_say_what_to_write() {
        for (s, want) in [
            ("abc", "is not a number"),
            ("normal:5", "two values"),
            ("uniform:9,3", "low end is above"),
            ("poisson:3", "unknown distribution"),
            ("-4", "at least 0"),
            ("lognormal:0,1", "mean above 0"),
        ] {
            let e = Dist::parse(s, Unit::Count).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
        assert!(
            Dist::parse("exp:5", Unit::Seconds)
                .unwrap_err()
                .contains("duration")
        );
    }

    #[test]
    fn draws_have_the_asked_moments() {
        for (dist, mean, sd) in [
            (
                Dist::Normal {
                    mean: 512.0,
                    sd: 64.0,
                },
                512.0,
                64.0,
            ),
            (
                Dist::LogNormal {
                    mean: 512.0,
                    sd: 256.0,
                },
                512.0,
                256.0,
            ),
            (
                Dist::Uniform {
                    lo: 10.0,
                    hi: 110.0,
                },
                60.0,
                100.0 / 12f64.sqrt(),
            ),
            (Dist::Exponential { mean: 5.0 }, 5.0, 5.0),
        ] {
            let s = Sampler::param(&dist).unwrap().unwrap();
            let (m, d) = mean_sd(&s, 200_000);
            assert!((m / mean - 1.0).abs() < 0.01, "{dist}: mean {m}");
            assert!((d / sd - 1.0).abs() < 0.02, "{dist}: sd {d}");
        }
    }

    #[test]
    fn counts_are_rounded_and_bounded_below() {
        let s = Sampler::param(&Dist::Normal { mean: 1.0, sd: 5.0 })
            .unwrap()
            .unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        assert!((0..10_000).all(|_| s.draw_count(&mut rng, 1) >= 1));
    }
}
