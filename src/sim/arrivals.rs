//! Judging load from the server's side: the arrival log `sim
//! --log-arrivals` writes, and the figures a load generator is held to
//! there (the rate, the spread of gaps and the burstiness of counts).

use std::path::Path;

/// How arrivals were spread in time, as the server saw them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Spread {
    /// Arrivals.
    pub count: usize,
    /// `(count - 1) / (last - first)`, per second.
    pub rate: f64,
    /// Standard deviation over mean of the gaps between arrivals: 1 for a
    /// Poisson process, 0 for equal gaps.
    pub gap_cv: f64,
    /// Variance over mean of the counts in consecutive bins of
    /// [`FANO_BIN_US`]: 1 for a Poisson process, 0 for equal gaps, above 1
    /// for bursts.
    pub fano: f64,
}

/// The bin of the Fano factor, microseconds (10 ms).
pub const FANO_BIN_US: i64 = 10_000;

/// The spread of `times_us` (any order; sorted here).
pub fn spread(times_us: &mut [i64]) -> Spread {
    times_us.sort_unstable();
    let count = times_us.len();
    if count < 3 {
        return Spread {
            count,
            ..Spread::default()
        };
    }
    let (first, last) = (times_us[0], times_us[count - 1]);
    let span_s = (last - first) as f64 / 1e6;
    let gaps: Vec<f64> = times_us.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
    // Whole bins only: a partial last bin would read as a dip.
    let bins = usize::try_from((last - first) / FANO_BIN_US)
        .unwrap_or(0)
        .max(1);
    let mut counts = vec![0f64; bins];
    for &t in times_us.iter() {
        if let Ok(b) = usize::try_from((t - first) / FANO_BIN_US)
            && b < bins
        {
            counts[b] += 1.0;
        }
    }
    let cmean = counts.iter().sum::<f64>() / bins as f64;
    let cvar = counts.iter().map(|c| (c - cmean).powi(2)).sum::<f64>() / bins as f64;
    Spread {
        count,
        rate: if span_s > 0.0 {
            (count - 1) as f64 / span_s
        } else {
            0.0
        },
        gap_cv: if mean > 0.0 { var.sqrt() / mean } else { 0.0 },
        fano: if cmean > 0.0 { cvar / cmean } else { 0.0 },
    }
}

/// Reads an arrival log: `(arrival_us, request_id)` per row.
pub fn read_log(path: &Path) -> std::io::Result<Vec<(i64, String)>> {
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let bad = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} line {}: expected arrival_us,request_id",
                    path.display(),
                    n + 1
                ),
            )
        };
        let (at, id) = line.split_once(',').ok_or_else(bad)?;
        let id = id
            .strip_prefix('"')
            .and_then(|i| i.strip_suffix('"'))
            .map_or_else(|| id.to_owned(), |i| i.replace("\"\"", "\""));
        out.push((at.parse().map_err(|_| bad())?, id));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, Exp};

    use super::*;

    #[test]
    fn equal_gaps_have_no_spread_and_poisson_has_one() {
        let mut even: Vec<i64> = (0..10_000).map(|i| i * 1_000).collect();
        let s = spread(&mut even);
        assert!((s.rate - 1_000.0).abs() < 1e-6);
        assert!(s.gap_cv < 1e-9);
        assert!(s.fano < 1e-9, "{}", s.fano);

        let mut rng = StdRng::seed_from_u64(3);
        let exp = Exp::new(1_000.0).unwrap();
        let mut t = 0.0;
        let mut poisson: Vec<i64> = (0..50_000)
            .map(|_| {
                t += exp.sample(&mut rng) * 1e6;
                t as i64
            })
            .collect();
        let s = spread(&mut poisson);
        assert!((s.rate / 1_000.0 - 1.0).abs() < 0.02, "{}", s.rate);
        assert!((s.gap_cv - 1.0).abs() < 0.03, "{}", s.gap_cv);
        assert!((s.fano - 1.0).abs() < 0.1, "{}", s.fano);

        // Pairs 1 µs apart every 2 ms: the gaps show it (CV near 1) though
        // every 10 ms bin holds ten (Fano 0); bursts of 50 every 50 ms show
        // in both.
        let mut pairs: Vec<i64> = (0..20_000).map(|i| (i / 2) * 2_000 + i % 2).collect();
        let s = spread(&mut pairs);
        assert!(s.gap_cv > 0.9 && s.fano < 1e-9, "{s:?}");
        let mut bursts: Vec<i64> = (0..20_000).map(|i| (i / 50) * 50_000 + i % 50).collect();
        let s = spread(&mut bursts);
        // One 10 ms bin in five holds 50: mean 10, variance 400, Fano 40.
        assert!(s.gap_cv > 5.0 && (s.fano - 40.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn the_log_reads_back_with_quoted_ids() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.csv");
        std::fs::write(&p, "arrival_us,request_id\n5,a\n7,\"b,\"\"c\"\"\"\n").unwrap();
        assert_eq!(
            read_log(&p).unwrap(),
            vec![(5, "a".to_owned()), (7, "b,\"c\"".to_owned())]
        );
        std::fs::write(&p, "arrival_us,request_id\nnope\n").unwrap();
        assert!(read_log(&p).unwrap_err().to_string().contains("line 2"));
    }
}
