//! Summary statistics of the repeated samples the harness takes: median, median
//! absolute deviation (MAD), min and max, all in the workload's unit (a rate such
//! as rows/s, or seconds). Nothing here judges a figure; the report prints them.

use std::time::Duration;

/// One figure over its repetitions, in the unit of its workload (operations per
/// second for every workload; seconds for setup times).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// Median over repetitions.
    pub median: f64,
    /// Median absolute deviation from `median` (robust to a single slow rep).
    pub mad: f64,
    /// Smallest sample (for a rate: the slowest repetition).
    pub min: f64,
    /// Largest sample (for a rate: the fastest repetition).
    pub max: f64,
}

/// Median of a non-empty, sorted slice (the mean of the middle two for an even
/// length).
fn median_sorted(xs: &[f64]) -> f64 {
    let mid = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[mid]
    } else {
        (xs[mid - 1] + xs[mid]) / 2.0
    }
}

impl Stat {
    /// Summarises `samples` (any order).
    ///
    /// # Panics
    /// `samples` is empty: a workload that ran has at least one repetition.
    pub fn from_values(samples: &[f64]) -> Self {
        assert!(!samples.is_empty(), "a statistic needs at least one sample");
        let mut xs = samples.to_vec();
        xs.sort_by(f64::total_cmp);
        let median = median_sorted(&xs);
        let mut dev: Vec<f64> = xs.iter().map(|x| (x - median).abs()).collect();
        dev.sort_by(f64::total_cmp);
        Self {
            median,
            mad: median_sorted(&dev),
            min: xs[0],
            max: xs[xs.len() - 1],
        }
    }

    /// Summarises repetitions of `ops` operations, each taking one of `times`, as
    /// operations per second.
    ///
    /// # Panics
    /// `times` is empty.
    pub fn from_samples(ops: usize, times: &[Duration]) -> Self {
        let rates: Vec<f64> = times
            .iter()
            .map(|t| ops as f64 / t.as_secs_f64().max(1e-9))
            .collect();
        Self::from_values(&rates)
    }

    /// One measurement (a single repetition): median, min and max are `x`, MAD 0.
    pub fn single(x: f64) -> Self {
        Self::from_values(&[x])
    }

    /// Median absolute deviation as a fraction of the median.
    pub fn spread(&self) -> f64 {
        if self.median > 0.0 {
            self.mad / self.median
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mad_ignores_one_outlier() {
        // Sorted: 1 2 3 4 100 -> median 3; deviations 2 1 0 1 97 -> sorted 0 1 1 2 97.
        let s = Stat::from_values(&[4.0, 100.0, 1.0, 3.0, 2.0]);
        assert_eq!(s.median, 3.0);
        assert_eq!(s.mad, 1.0);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 100.0);
    }

    #[test]
    fn mad_of_an_even_count_uses_the_middle_pair() {
        // Median (2 + 4) / 2 = 3; deviations 2 1 1 7 -> sorted 1 1 2 7 -> MAD (1 + 2) / 2.
        let s = Stat::from_values(&[1.0, 2.0, 4.0, 10.0]);
        assert_eq!(s.median, 3.0);
        assert_eq!(s.mad, 1.5);
        assert!((s.spread() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn samples_become_rates() {
        let times = [Duration::from_millis(500), Duration::from_secs(1)];
        let s = Stat::from_samples(100, &times);
        assert_eq!((s.min, s.max), (100.0, 200.0));
        assert_eq!(s.median, 150.0);
        assert_eq!(s.mad, 50.0);
    }

    #[test]
    fn one_sample_has_no_spread() {
        let s = Stat::single(7.5);
        assert_eq!((s.median, s.mad, s.min, s.max), (7.5, 0.0, 7.5, 7.5));
    }
}
