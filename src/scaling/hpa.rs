//! What the Horizontal Pod Autoscaler does with an external metric, so that
//! `query` (and tests) can show the replica count a trigger produces.

/// The HPA ignores a usage ratio within 10% of 1 (its default tolerance).
pub const TOLERANCE: f64 = 0.1;

/// KEDA's trigger-level `metricType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// The default: the value is split across replicas; desired = ceil(value / target).
    AverageValue,
    /// The value is compared as is; desired = ceil(current × value / target).
    Value,
}

/// The replica count the HPA asks for, before min/max bounds, for `current`
/// replicas (at least 1) reporting `value` against `target`.
pub fn desired_replicas(metric_type: MetricType, current: u32, value: f64, target: f64) -> u32 {
    let current = current.max(1);
    let ratio = match metric_type {
        MetricType::AverageValue => value / (target * f64::from(current)),
        MetricType::Value => value / target,
    };
    if (ratio - 1.0).abs() <= TOLERANCE {
        return current;
    }
    let desired = match metric_type {
        MetricType::AverageValue => (value / target).ceil(),
        MetricType::Value => (ratio * f64::from(current)).ceil(),
    };
    desired.clamp(0.0, f64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_scales_with_current_replicas() {
        assert_eq!(desired_replicas(MetricType::Value, 3, 100.0, 80.0), 4);
        assert_eq!(desired_replicas(MetricType::Value, 4, 20.0, 80.0), 1);
        assert_eq!(
            desired_replicas(MetricType::Value, 10, 85.0, 80.0),
            10,
            "within tolerance"
        );
    }

    #[test]
    fn average_value_caps_percentages_at_two_replicas() {
        // 100% against an 80% target can never ask for more than 2.
        assert_eq!(
            desired_replicas(MetricType::AverageValue, 1, 100.0, 80.0),
            2
        );
        assert_eq!(
            desired_replicas(MetricType::AverageValue, 8, 100.0, 80.0),
            2
        );
        assert_eq!(desired_replicas(MetricType::AverageValue, 2, 20.0, 80.0), 1);
    }

    #[test]
    fn zero_value_asks_for_zero_before_bounds() {
        assert_eq!(desired_replicas(MetricType::Value, 3, 0.0, 80.0), 0);
    }
}
