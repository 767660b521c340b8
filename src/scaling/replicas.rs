//! Applies an engine trigger to the scraped replicas: one value per
//! replica, aggregated across replicas. A replica that cannot be read now
//! counts as what it last said, if that is recent; one never read, or read
//! too long ago, gets the HPA's rule for pods without metrics; every
//! other fault is an error. A workload at zero replicas is 0; a name that
//! may be a typo is not. Pure: scrapes and the time in, an outcome out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::scrape::{Replica, Resolution, Scrape, LAST_READ_TRUST};
use crate::engine::signals::Unread;
use crate::scaling::outcome::{
    Detail, EvalError, Fault, Note, Outcome, ReplicaLine, ReplicaStatus,
};
use crate::scaling::trigger::{Aggregation, EngineSource, Trigger};

/// Whether `engine_outcome` needs to know if the trigger's workload has
/// pods: when no endpoint has an address and a selector can tell a
/// workload at zero from a wrong name.
pub fn needs_pods(trigger: &Trigger, scrapes: &[Arc<Scrape>]) -> bool {
    trigger.selector.is_some()
        && scrapes.iter().all(|s| s.replicas.is_empty())
        && !scrapes
            .iter()
            .any(|s| matches!(s.resolution, Resolution::Failed(_)))
}

/// The trigger's value over the scrapes of its endpoints. `pods`: the
/// selector's pods (from GPU attribution) when `needs_pods` said so.
pub fn engine_outcome(
    trigger: &Trigger,
    source: &EngineSource,
    scrapes: &[Arc<Scrape>],
    pods: Option<Result<Vec<String>, String>>,
    detail: Detail,
    now: Instant,
) -> Outcome {
    let mut lines = Vec::new();
    let value = evaluate(trigger, source, scrapes, pods, now, &mut lines);
    outcome_of(value, lines, Vec::new(), detail)
}

/// An engine trigger's outcome: the value, and each replica's line and
/// the notes only when explained.
pub(crate) fn outcome_of(
    value: Result<f64, EvalError>,
    lines: Vec<ReplicaLine>,
    notes: Vec<Note>,
    detail: Detail,
) -> Outcome {
    let explained = detail == Detail::Explained;
    Outcome {
        value,
        explained: Vec::new(),
        selected: lines.iter().filter(|l| !l.address.is_empty()).count(),
        notes: if explained { notes } else { Vec::new() },
        replicas: if explained { lines } else { Vec::new() },
    }
}

/// What DNS said of one endpoint, as its line when it has no address:
/// `Ok(None)` with addresses, `Ok(Some(what))` with none (a workload at
/// zero, unready replicas or a wrong name; `what` says which answer), and
/// an error when the round could not learn its replicas.
pub(crate) fn resolution(
    scrape: &Scrape,
    lines: &mut Vec<ReplicaLine>,
) -> Result<Option<String>, EvalError> {
    let endpoint = scrape.endpoint.to_string();
    let (status, what) = match &scrape.resolution {
        Resolution::Addresses => return Ok(None),
        Resolution::NoAddress(error) => (
            ReplicaStatus::NoAddress(error.clone()),
            format!("{endpoint} has no address ({error})"),
        ),
        Resolution::NoSuchName(error) => (
            ReplicaStatus::UnknownToDns(error.clone()),
            format!("{endpoint} is unknown to DNS ({error})"),
        ),
        Resolution::Failed(failure) => (
            ReplicaStatus::Unresolved(failure.clone()),
            format!("cannot read engine endpoint {endpoint}: {failure}"),
        ),
    };
    let failed = matches!(scrape.resolution, Resolution::Failed(_));
    lines.push(ReplicaLine {
        endpoint,
        address: String::new(),
        value: None,
        counted: false,
        status,
    });
    if failed {
        Err(EvalError::Unavailable(what))
    } else {
        Ok(Some(what))
    }
}

fn evaluate(
    trigger: &Trigger,
    source: &EngineSource,
    scrapes: &[Arc<Scrape>],
    pods: Option<Result<Vec<String>, String>>,
    now: Instant,
    lines: &mut Vec<ReplicaLine>,
) -> Result<f64, EvalError> {
    let mut read = Vec::new();
    // Replicas missing now, counted as their recent last read.
    let mut stood_in = Vec::new();
    let mut missing: Vec<usize> = Vec::new();
    // Every replica not read now, and why (for the error when none is).
    let mut unread: Vec<(SocketAddr, Fault)> = Vec::new();
    let mut empty = Vec::new();
    // Endpoints with no address now, and their replicas' last reads.
    let mut emptied: Vec<(String, &[Replica])> = Vec::new();
    for scrape in scrapes {
        let endpoint = scrape.endpoint.to_string();
        if let Some(what) = resolution(scrape, lines)? {
            emptied.push((what.clone(), &scrape.vanished));
            empty.push(what);
        }
        for replica in &scrape.replicas {
            let result = match &replica.page {
                Err(error) => Err(Fault::Read(error.clone())),
                Ok(page) => match source.query.read(&page.families, &page.declared) {
                    Ok(value) => Ok(value),
                    Err(not_a_gauge @ Unread::NotAGauge { .. }) => {
                        return Err(EvalError::InvalidArgument(format!(
                            "invalid engineMetric: {not_a_gauge} (replica {} of {endpoint})",
                            replica.address
                        )))
                    }
                    Err(unread) => Err(Fault::Unread(unread)),
                },
            };
            let line = |value: Option<f64>, status: ReplicaStatus| ReplicaLine {
                endpoint: endpoint.clone(),
                address: replica.address.to_string(),
                value,
                counted: value.is_some(),
                status,
            };
            match result {
                Ok(value) => {
                    read.push(value);
                    lines.push(line(Some(value), ReplicaStatus::Counted));
                }
                Err(fault) => {
                    unread.push((replica.address, fault.clone()));
                    match last_read(source, replica, now) {
                        Some((value, age)) => {
                            stood_in.push(value);
                            lines.push(line(
                                Some(value),
                                ReplicaStatus::LastRead { fault, value, age },
                            ));
                        }
                        None => {
                            missing.push(lines.len());
                            lines.push(line(
                                None,
                                ReplicaStatus::Missing {
                                    fault,
                                    stand_in: None,
                                },
                            ));
                        }
                    }
                }
            }
        }
    }
    let addresses = read.len() + stood_in.len() + missing.len();

    if addresses == 0 {
        return no_replica(trigger, &empty, pods);
    }
    // Some endpoints have replicas and these have none: a misspelt name,
    // or replicas all failing readiness, not a workload at zero. Their
    // recent last reads stand in; without any, the value would read low.
    for (what, vanished) in emptied {
        let mut known = 0;
        for replica in vanished {
            if let Some((value, age)) = last_read(source, replica, now) {
                known += 1;
                stood_in.push(value);
                lines.push(ReplicaLine {
                    endpoint: what.clone(),
                    address: replica.address.to_string(),
                    value: Some(value),
                    counted: true,
                    status: ReplicaStatus::Vanished { value, age },
                });
            }
        }
        if known == 0 {
            return Err(EvalError::Unavailable(format!(
                "{what}, while the trigger's other endpoints have replicas: a misspelt name, or replicas that are all unready; left out, the value would read low"
            )));
        }
    }
    if read.is_empty() {
        return Err(none_read(&endpoints(scrapes), &unread));
    }

    read.extend(stood_in);
    let counted = with_missing(trigger.aggregation, trigger.target, &read, missing.len());
    for &i in &missing {
        if let ReplicaStatus::Missing { stand_in, .. } = &mut lines[i].status {
            *stand_in = Some(counted.stand_in);
        }
    }
    let value = counted.value;
    if !value.is_finite() || value < 0.0 {
        return Err(EvalError::Unavailable(format!(
            "the replicas aggregated to {value}, which is not a valid metric value"
        )));
    }
    Ok(value)
}

/// What a replica missing now last said, if recent (under
/// [`LAST_READ_TRUST`]) and readable for this trigger, with its age.
fn last_read(source: &EngineSource, replica: &Replica, now: Instant) -> Option<(f64, Duration)> {
    let earlier = replica.earlier.as_ref()?;
    let age = now.saturating_duration_since(earlier.at);
    if age >= LAST_READ_TRUST {
        return None;
    }
    let value = source
        .query
        .read(&earlier.page.families, &earlier.page.declared)
        .ok()?;
    Some((value, age))
}

/// No replica could be read now: each one's fault, the first few named.
pub(crate) fn none_read(endpoints: &str, unread: &[(SocketAddr, Fault)]) -> EvalError {
    let mut errors: Vec<String> = unread
        .iter()
        .take(MAX_LISTED)
        .map(|(address, fault)| format!("{address}: {}", shorten(&fault.to_string())))
        .collect();
    if unread.len() > MAX_LISTED {
        errors.push(format!(
            "and {} more (query --explain lists them)",
            unread.len() - MAX_LISTED
        ));
    }
    EvalError::Unavailable(format!(
        "no replica of {endpoints} could be read: {}",
        errors.join("; ")
    ))
}

/// Replicas named in an error message; `--explain` lists them all.
const MAX_LISTED: usize = 10;
/// The longest reason quoted per replica in an error message.
const MAX_REASON: usize = 300;

fn shorten(reason: &str) -> String {
    match reason.char_indices().nth(MAX_REASON) {
        Some((end, _)) => format!("{}…", &reason[..end]),
        None => reason.to_string(),
    }
}

/// No endpoint has an address: the workload is at zero replicas, or every
/// pod is unready, or the name is wrong. Only the workload's pods can tell.
pub(crate) fn no_replica(
    trigger: &Trigger,
    empty: &[String],
    pods: Option<Result<Vec<String>, String>>,
) -> Result<f64, EvalError> {
    let dns = empty.join("; ");
    match (&trigger.selector, pods) {
        (Some(selector), Some(Err(error))) => Err(EvalError::Unavailable(format!(
            "{dns}; cannot tell whether {selector} is at zero replicas: {error}"
        ))),
        (Some(selector), Some(Ok(pods))) if !pods.is_empty() => {
            Err(EvalError::Unavailable(format!(
                "{dns}, yet {selector} has pods holding GPUs ({}): none is ready (a model still loading, or failing its readiness probe?), or engineEndpoints names another Service",
                pods.join(", ")
            )))
        }
        // The workload has no pods: zero replicas, so nothing waits.
        (Some(_), Some(Ok(_))) => Ok(0.0),
        (Some(selector), None) => Err(EvalError::Unavailable(format!(
            "{dns}; the pods of {selector} were not looked up"
        ))),
        (None, _) => Err(EvalError::Unavailable(format!(
            "{dns}: a workload at zero replicas, replicas that are all unready, or a misspelt name. Cluster DNS cannot tell them apart (it answers NXDOMAIN for a headless Service with no ready pod); set workload (or podNamePattern) so that a workload with no pods reads as 0"
        ))),
    }
}

/// The endpoints' names, for messages.
pub(crate) fn endpoints(scrapes: &[Arc<Scrape>]) -> String {
    let names: Vec<String> = scrapes.iter().map(|s| s.endpoint.to_string()).collect();
    names.join(", ")
}

/// A value with replicas missing, and what each missing one counted as.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WithMissing {
    pub value: f64,
    /// What one missing replica counted as (0 when none is missing).
    pub stand_in: f64,
}

/// The value with `missing` replicas that could not be read, as the HPA
/// treats pods without metrics: at the target when the replicas read are
/// below it, at 0 when above, and never so far that the direction of
/// scaling reverses (then the value is the one that keeps the replica
/// count). Sums assume `metricType: AverageValue` (the target is per
/// replica); the other aggregations assume `Value`.
pub fn with_missing(
    aggregation: Aggregation,
    target: f64,
    read: &[f64],
    missing: usize,
) -> WithMissing {
    let value = aggregation.apply(read).unwrap_or(0.0);
    if missing == 0 {
        return WithMissing {
            value,
            stand_in: 0.0,
        };
    }
    let replicas = (read.len() + missing) as f64;
    // What one replica reads, to compare with the target.
    let per_replica = match aggregation {
        Aggregation::Sum => value / read.len() as f64,
        _ => value,
    };
    let stand_in = if per_replica < target { target } else { 0.0 };
    let mut all = read.to_vec();
    all.extend(std::iter::repeat_n(stand_in, missing));
    let with = aggregation.apply(&all).unwrap_or(0.0);
    // The value at which the HPA keeps the current count.
    let steady = match aggregation {
        Aggregation::Sum => replicas * target,
        _ => target,
    };
    let value = if per_replica < target {
        with.min(steady)
    } else {
        with.max(steady)
    };
    WithMissing { value, stand_in }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_replica_pushes_neither_up_nor_down() {
        // Sum of queues, target 5 per replica: 2 read replicas below target.
        let WithMissing { value, stand_in } = with_missing(Aggregation::Sum, 5.0, &[1.0, 2.0], 1);
        assert_eq!((value, stand_in), (8.0, 5.0));
        // Above target: the missing one counts as 0 ...
        let WithMissing { value, stand_in } = with_missing(Aggregation::Sum, 5.0, &[20.0, 30.0], 1);
        assert_eq!((value, stand_in), (50.0, 0.0));
        // ... unless that would read below 3 x 5 and scale down.
        let value = with_missing(Aggregation::Sum, 5.0, &[6.0, 6.0], 1).value;
        assert_eq!(value, 15.0);
        // Averages (Value): below, the missing one sits at the target.
        assert_eq!(
            with_missing(Aggregation::Avg, 80.0, &[40.0, 60.0], 2),
            WithMissing {
                value: 65.0,
                stand_in: 80.0
            }
        );
        // Above: at 0 it would read 45 and scale down; it keeps the count.
        assert_eq!(
            with_missing(Aggregation::Avg, 80.0, &[90.0], 1),
            WithMissing {
                value: 80.0,
                stand_in: 0.0
            }
        );
        assert_eq!(
            with_missing(Aggregation::Avg, 80.0, &[100.0, 100.0], 1).value,
            80.0
        );
        assert_eq!(
            with_missing(Aggregation::Avg, 60.0, &[100.0, 100.0], 1).value,
            200.0 / 3.0
        );
        // Max below the target never scales down while one is missing.
        assert_eq!(with_missing(Aggregation::Max, 80.0, &[10.0], 1).value, 80.0);
        assert_eq!(with_missing(Aggregation::Max, 80.0, &[95.0], 1).value, 95.0);
        // Min above the target would read 0; it keeps the count instead.
        assert_eq!(
            with_missing(Aggregation::Min, 80.0, &[90.0, 95.0], 1).value,
            80.0
        );
        assert_eq!(
            with_missing(Aggregation::Min, 80.0, &[10.0, 95.0], 1).value,
            10.0
        );
        // Nothing missing: the plain aggregate.
        assert_eq!(
            with_missing(Aggregation::Sum, 5.0, &[1.0, 2.0], 0),
            WithMissing {
                value: 3.0,
                stand_in: 0.0
            }
        );
    }
}
