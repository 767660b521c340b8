//! What the Horizontal Pod Autoscaler does with an external metric, so that
//! `query` (and tests) can show the replica count a trigger produces.

/// The HPA ignores a usage ratio within 10% of 1 (its default tolerance).
///
/// The test is the replica calculator's, in float64, before Kubernetes 1.33:
/// hold while `|1 - ratio| <= tolerance`. Since 1.33 it holds while
/// `1 - tolerance <= ratio <= 1 + tolerance`; the two differ only at a ratio
/// of exactly 1.1 (see the test `a_ratio_of_exactly_1_1_scales`).
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
    fn a_ratio_of_exactly_1_1_scales() {
        // 88 against 80 sits on the tolerance's edge on paper, but not in
        // float64, where the HPA computes it (in milli-units: 88000 / 80000,
        // the same double). 88 / 80 rounds to 1.100000000000000088…, so
        // |1 - ratio| is 0.100000000000000088…, while the tolerance 0.1 is
        // 0.100000000000000005…: just past it, and the HPA before 1.33
        // scales, ceil(3 x 1.100000000000000088…) = 4.
        let ratio = 88.0 / 80.0;
        assert_eq!(
            format!("{:?}", (1.0_f64 - ratio).abs()),
            "0.10000000000000009"
        );
        assert!((1.0_f64 - ratio).abs() > TOLERANCE);
        assert_eq!(desired_replicas(MetricType::Value, 3, 88.0, 80.0), 4);
        // AverageValue at the same ratio: 264 / (80 x 3) is 1.1 as well.
        assert_eq!(
            desired_replicas(MetricType::AverageValue, 3, 264.0, 80.0),
            4
        );
        // The HPA of Kubernetes 1.33 and later holds while ratio <= 1 + 0.1,
        // and 1 + 0.1 rounds to the very double 88 / 80 gives: it keeps 3.
        // That is why no example in the README or the demo sits on the edge.
        assert_eq!(1.0 + TOLERANCE, ratio);
        // Just inside the edge, both hold.
        assert_eq!(desired_replicas(MetricType::Value, 3, 87.9, 80.0), 3);
    }

    #[test]
    fn zero_value_asks_for_zero_before_bounds() {
        assert_eq!(desired_replicas(MetricType::Value, 3, 0.0, 80.0), 0);
    }
}
