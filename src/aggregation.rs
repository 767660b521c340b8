//! How several values become one: `max`, `min`, `avg`, `sum`. One enum for
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
}

impl Aggregation {
    pub const ALL: [Aggregation; 4] = [
        Aggregation::Max,
        Aggregation::Min,
        Aggregation::Avg,
        Aggregation::Sum,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Aggregation::Max => "max",
            Aggregation::Min => "min",
            Aggregation::Avg => "avg",
            Aggregation::Sum => "sum",
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_way_over_values_and_none_over_nothing() {
        let values = [3.0, 1.0, 2.0];
        let got: Vec<Option<f64>> = Aggregation::ALL.iter().map(|a| a.apply(&values)).collect();
        assert_eq!(got, [Some(3.0), Some(1.0), Some(2.0), Some(6.0)]);
        for aggregation in Aggregation::ALL {
            assert_eq!(aggregation.apply(&[]), None, "{}", aggregation.name());
        }
    }
}
