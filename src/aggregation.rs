//! How several values become one: `max`, `min`, `avg`, `sum`, `p95`, `p99`. One enum for
//! every place that combines values (a trigger across GPUs or replicas, an
//! engine's series within one pod), so that one name means one thing.
//! Pure arithmetic: knows no GPU, engine or trigger.

/// A way to combine values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    Max,
    Min,
    Avg,
    Sum,
    /// Nearest rank, as the Go keda-gpu-scaler defines it: the values
    /// sorted ascending, the one at index `ceil(0.95 × N) − 1` (clamped to
    /// `0..N`). Always one of the values; with N ≤ 19 it is the largest.
    P95,
    /// As `P95` at 0.99: with N ≤ 99 it is the largest.
    P99,
}

impl Aggregation {
    pub const ALL: [Aggregation; 6] = [
        Aggregation::Max,
        Aggregation::Min,
        Aggregation::Avg,
        Aggregation::Sum,
        Aggregation::P95,
        Aggregation::P99,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Aggregation::Max => "max",
            Aggregation::Min => "min",
            Aggregation::Avg => "avg",
            Aggregation::Sum => "sum",
            Aggregation::P95 => "p95",
            Aggregation::P99 => "p99",
        }
    }

    /// Combines the values; `None` for an empty set.
    pub fn apply(self, values: &[f64]) -> Option<f64> {
        let first = *values.first()?;
        let rest = values[1..].iter().copied();
        Some(match self {
            Aggregation::Max => rest.fold(first, f64::max),
            Aggregation::Min => rest.fold(first, f64::min),
            Aggregation::Sum => rest.fold(first, |a, b| a + b),
            Aggregation::Avg => rest.fold(first, |a, b| a + b) / values.len() as f64,
            Aggregation::P95 => nearest_rank(values, 0.95),
            Aggregation::P99 => nearest_rank(values, 0.99),
        })
    }
}

/// The nearest-rank percentile of a non-empty set: sorted ascending
/// (NaN last), the element at `ceil(p × N) − 1`, clamped to `0..N`. This
/// is pmady/keda-gpu-scaler's `percentile` (pkg/scaler/server.go, v0.6.0):
/// no interpolation, so the answer is always a value that was read.
fn nearest_rank(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.saturating_sub(1).min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_way_over_values_and_none_over_nothing() {
        let values = [3.0, 1.0, 2.0];
        let got: Vec<Option<f64>> = Aggregation::ALL.iter().map(|a| a.apply(&values)).collect();
        assert_eq!(
            got,
            [
                Some(3.0),
                Some(1.0),
                Some(2.0),
                Some(6.0),
                Some(3.0),
                Some(3.0)
            ]
        );
        for aggregation in Aggregation::ALL {
            assert_eq!(aggregation.apply(&[]), None, "{}", aggregation.name());
        }
    }

    #[test]
    fn p95_and_p99_are_the_go_projects_nearest_rank() {
        // pmady/keda-gpu-scaler's server_test.go cases: one GPU, two GPUs,
        // five, and 1..=20.
        assert_eq!(Aggregation::P95.apply(&[42.0]), Some(42.0));
        assert_eq!(Aggregation::P95.apply(&[90.0, 10.0]), Some(90.0));
        assert_eq!(Aggregation::P99.apply(&[10.0, 90.0]), Some(90.0));
        let five = [50.0, 10.0, 40.0, 20.0, 30.0];
        assert_eq!(Aggregation::P95.apply(&five), Some(50.0));
        let twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(Aggregation::P95.apply(&twenty), Some(19.0));
        assert_eq!(Aggregation::P99.apply(&twenty), Some(20.0));
        // 100 values: ceil(95) - 1 = index 94, ceil(99) - 1 = index 98.
        let hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(Aggregation::P95.apply(&hundred), Some(95.0));
        assert_eq!(Aggregation::P99.apply(&hundred), Some(99.0));
        // The same index as exact integer arithmetic for every N up to
        // 10 000 (the float product never rounds across an integer).
        for n in 1..=10_000usize {
            for (p, percent) in [(0.95, 95), (0.99, 99)] {
                let float = ((p * n as f64).ceil() as usize).saturating_sub(1);
                let exact = (percent * n).div_ceil(100) - 1;
                assert_eq!(float, exact, "N={n} p={p}");
            }
        }
    }
}
