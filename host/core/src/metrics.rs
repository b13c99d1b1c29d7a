//! Metrics a policy emits (`host.counter-add`, `host.histogram-record`), declared in its
//! manifest and kept by the host in atomics, so recording one costs no lock and no allocation.
//! [`Runtime::policy_metrics`](crate::Runtime::policy_metrics) reads them for an exporter.

use std::sync::atomic::{AtomicU64, Ordering};

/// The bucket bounds of every policy histogram: OpenTelemetry's default explicit buckets, so
/// an exporter can hand them on unchanged.
pub const HISTOGRAM_BOUNDS: [f64; 15] = [
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
];

/// What a declared metric counts (mirrors WIT `metric-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A monotonic sum.
    Counter,
    /// A distribution over [`HISTOGRAM_BOUNDS`].
    Histogram,
}

/// A metric as the policy declared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSpec {
    /// The declared name (checked: `[a-z][a-z0-9_.]*`, at most 64 characters).
    pub name: String,
    /// Counter or histogram.
    pub kind: MetricKind,
    /// The unit (UCUM), possibly empty.
    pub unit: String,
    /// One line for the operator.
    pub description: String,
}

/// A metric's value when read.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    /// A counter's sum.
    Counter(u64),
    /// A histogram: observations, their sum, and the count per bucket (`bounds.len() + 1`
    /// buckets, the last one above the highest bound).
    Histogram {
        /// Observations recorded.
        count: u64,
        /// Their sum.
        sum: f64,
        /// Observations per bucket of [`HISTOGRAM_BOUNDS`] (upper bounds inclusive).
        buckets: Vec<u64>,
    },
}

/// One policy metric, read.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricReading {
    /// As declared.
    pub spec: MetricSpec,
    /// Its value since the policy's generation loaded.
    pub value: MetricValue,
}

/// The live cells of one policy's metrics.
#[derive(Debug, Default)]
pub(crate) struct PolicyMetrics {
    cells: Vec<(MetricSpec, Cell)>,
}

#[derive(Debug)]
enum Cell {
    Counter(AtomicU64),
    Histogram {
        count: AtomicU64,
        /// An f64's bits, added to by compare-and-swap.
        sum: AtomicU64,
        buckets: [AtomicU64; HISTOGRAM_BOUNDS.len() + 1],
    },
}

/// Why a policy's metric call was refused: it faults the policy with this text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadMetricCall(pub String);

impl PolicyMetrics {
    pub(crate) fn new(specs: &[MetricSpec]) -> Self {
        let cells = specs
            .iter()
            .map(|spec| {
                let cell = match spec.kind {
                    MetricKind::Counter => Cell::Counter(AtomicU64::new(0)),
                    MetricKind::Histogram => Cell::Histogram {
                        count: AtomicU64::new(0),
                        sum: AtomicU64::new(0f64.to_bits()),
                        buckets: Default::default(),
                    },
                };
                (spec.clone(), cell)
            })
            .collect();
        Self { cells }
    }

    pub(crate) fn add(&self, index: u32, value: u64) -> Result<(), BadMetricCall> {
        match self.cells.get(index as usize) {
            Some((_, Cell::Counter(n))) => {
                n.fetch_add(value, Ordering::Relaxed);
                Ok(())
            }
            Some((spec, Cell::Histogram { .. })) => Err(BadMetricCall(format!(
                "counter-add on metric {index} ({:?}), which is a histogram",
                spec.name
            ))),
            None => Err(self.unknown("counter-add", index)),
        }
    }

    pub(crate) fn record(&self, index: u32, value: f64) -> Result<(), BadMetricCall> {
        let Some((spec, cell)) = self.cells.get(index as usize) else {
            return Err(self.unknown("histogram-record", index));
        };
        let Cell::Histogram {
            count,
            sum,
            buckets,
        } = cell
        else {
            return Err(BadMetricCall(format!(
                "histogram-record on metric {index} ({:?}), which is a counter",
                spec.name
            )));
        };
        if !value.is_finite() {
            return Err(BadMetricCall(format!(
                "histogram-record of {value} on metric {:?}: values must be finite",
                spec.name
            )));
        }
        let bucket = HISTOGRAM_BOUNDS
            .iter()
            .position(|&bound| value <= bound)
            .unwrap_or(HISTOGRAM_BOUNDS.len());
        if let Some(b) = buckets.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        count.fetch_add(1, Ordering::Relaxed);
        let _ = sum.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            Some((f64::from_bits(bits) + value).to_bits())
        });
        Ok(())
    }

    fn unknown(&self, call: &str, index: u32) -> BadMetricCall {
        BadMetricCall(format!(
            "{call} on metric {index}, but the policy declared {} metric(s)",
            self.cells.len()
        ))
    }

    pub(crate) fn read(&self) -> Vec<MetricReading> {
        self.cells
            .iter()
            .map(|(spec, cell)| MetricReading {
                spec: spec.clone(),
                value: match cell {
                    Cell::Counter(n) => MetricValue::Counter(n.load(Ordering::Relaxed)),
                    Cell::Histogram {
                        count,
                        sum,
                        buckets,
                    } => MetricValue::Histogram {
                        count: count.load(Ordering::Relaxed),
                        sum: f64::from_bits(sum.load(Ordering::Relaxed)),
                        buckets: buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
                    },
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, kind: MetricKind) -> MetricSpec {
        MetricSpec {
            name: name.into(),
            kind,
            unit: String::new(),
            description: String::new(),
        }
    }

    #[test]
    fn counters_and_histograms_record_and_refuse_what_was_not_declared() {
        let m = PolicyMetrics::new(&[
            spec("hits", MetricKind::Counter),
            spec("size", MetricKind::Histogram),
        ]);
        m.add(0, 2).unwrap();
        m.add(0, 3).unwrap();
        m.record(1, 4.0).unwrap();
        m.record(1, 5.0).unwrap();
        m.record(1, 20_000.0).unwrap();
        assert!(m.add(1, 1).unwrap_err().0.contains("histogram"));
        assert!(m.record(0, 1.0).unwrap_err().0.contains("counter"));
        assert!(m.add(2, 1).unwrap_err().0.contains("declared 2 metric"));
        assert!(m.record(1, f64::NAN).unwrap_err().0.contains("finite"));
        let read = m.read();
        assert_eq!(read[0].value, MetricValue::Counter(5));
        let MetricValue::Histogram {
            count,
            sum,
            buckets,
        } = &read[1].value
        else {
            panic!("not a histogram: {:?}", read[1]);
        };
        assert_eq!((*count, *sum), (3, 20_009.0));
        // 4 and 5 fall in (0, 5]; 20,000 above the last bound.
        assert_eq!(buckets[1], 2);
        assert_eq!(buckets[HISTOGRAM_BOUNDS.len()], 1);
        assert_eq!(buckets.iter().sum::<u64>(), 3);
    }
}
