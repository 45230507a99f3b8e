//! `synod bench --local N --stages`: where a request's time goes at the
//! leader, from the nodes' `synod_stage_seconds` histograms (one request
//! in eight is timed; `engine/src/runtime/group/stages.rs`), scraped as
//! the measured window starts and as it ends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use serde_json::{json, Value};
use synod_bench::loadgen::Progress;

/// The stages, in the order a request passes them.
const STAGES: [&str; 3] = ["queue", "wal", "round"];

/// One stage's histogram, summed over the nodes and groups.
#[derive(Clone, Debug, Default, PartialEq)]
struct Histogram {
    /// Cumulative counts by upper bound (seconds), in order.
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

type Scrape = BTreeMap<String, Histogram>;

/// Each stage's figures, or why they could not be read.
pub type StageReport = Result<Vec<StageFigures>, String>;

/// One stage's figures over the measured window.
#[derive(Clone, Debug, PartialEq)]
pub struct StageFigures {
    pub stage: &'static str,
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Scrapes at the first and the latest progress of the measured window.
pub struct StageWindow {
    metrics: Vec<SocketAddr>,
    first: Mutex<Option<Scrape>>,
    last: Mutex<Option<Scrape>>,
    failed: Mutex<Option<String>>,
}

impl StageWindow {
    /// Over the nodes serving metrics at `metrics`.
    pub fn new(metrics: Vec<SocketAddr>) -> StageWindow {
        StageWindow {
            metrics,
            first: Mutex::new(None),
            last: Mutex::new(None),
            failed: Mutex::new(None),
        }
    }

    /// Scrapes at each progress report of the measured window.
    pub fn observe(&self, progress: &Progress) {
        if !progress.measuring || self.metrics.is_empty() {
            return;
        }
        let scrape = match scrape_all(&self.metrics) {
            Ok(scrape) => scrape,
            Err(error) => {
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
                return;
            }
        };
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(scrape);
        } else {
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(scrape);
        }
    }

    /// Each stage's figures between the first and the last scrape.
    pub fn figures(&self) -> StageReport {
        if let Some(error) = self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Err(error);
        }
        let first = self.first.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (Some(first), Some(last)) = (first, last) else {
            return Err("the measured window ended before two scrapes".into());
        };
        Ok(figures_between(&first, &last))
    }
}

/// Rows for the table: each stage's mean, p50 and p99.
pub fn rows(figures: &StageReport) -> Vec<(&'static str, String)> {
    match figures {
        Err(error) => vec![("stages", format!("not measured: {error}"))],
        Ok(figures) => figures
            .iter()
            .map(|f| {
                let value = format!(
                    "mean {:.0} µs, p50 {:.0} µs, p99 {:.0} µs ({} timed)",
                    f.mean_us, f.p50_us, f.p99_us, f.count
                );
                (stage_row(f.stage), value)
            })
            .collect(),
    }
}

fn stage_row(stage: &str) -> &'static str {
    match stage {
        "queue" => "stage: queue",
        "wal" => "stage: wal (own disk)",
        _ => "stage: round (chosen)",
    }
}

/// The stages for the JSON output.
pub fn json(figures: &StageReport) -> Value {
    match figures {
        Err(error) => json!({"error": error}),
        Ok(figures) => Value::Object(
            figures
                .iter()
                .map(|f| {
                    let value = json!({
                        "timed": f.count, "mean_us": f.mean_us, "p50_us": f.p50_us, "p99_us": f.p99_us,
                    });
                    (f.stage.to_string(), value)
                })
                .collect(),
        ),
    }
}

/// Each stage's figures from what was observed between two scrapes.
fn figures_between(first: &Scrape, last: &Scrape) -> Vec<StageFigures> {
    STAGES
        .iter()
        .filter_map(|stage| {
            let end = last.get(*stage)?;
            let start = first.get(*stage).cloned().unwrap_or_default();
            figures(stage, &difference(end, &start))
        })
        .collect()
}

fn scrape_all(metrics: &[SocketAddr]) -> Result<Scrape, String> {
    let mut total = Scrape::new();
    for addr in metrics {
        let text = ureq::get(&format!("http://{addr}/metrics"))
            .config()
            .timeout_global(Some(std::time::Duration::from_secs(2)))
            .build()
            .call()
            .and_then(|mut reply| reply.body_mut().read_to_string())
            .map_err(|error| format!("scraping {addr}: {error}"))?;
        for (stage, histogram) in parse(&text) {
            add(total.entry(stage).or_default(), &histogram);
        }
    }
    Ok(total)
}

/// The `synod_stage_seconds` histograms of one scrape, summed over groups.
fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("synod_stage_seconds_") else {
            continue;
        };
        let Some((name, rest)) = rest.split_once('{') else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let label = |key: &str| {
            labels.split(',').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k.trim() == key).then(|| v.trim_matches('"').to_string())
            })
        };
        let (Some(stage), Ok(value)) = (label("stage"), value.trim().parse::<f64>()) else {
            continue;
        };
        let histogram = scrape.entry(stage).or_default();
        match name {
            "sum" => histogram.sum += value,
            "count" => histogram.count += value as u64,
            "bucket" => {
                let le =
                    label("le").map_or(f64::INFINITY, |le| le.parse().unwrap_or(f64::INFINITY));
                add_bucket(histogram, le, value as u64);
            }
            _ => {}
        }
    }
    scrape
}

fn add_bucket(histogram: &mut Histogram, le: f64, count: u64) {
    match histogram.buckets.iter_mut().find(|(bound, _)| *bound == le) {
        Some((_, total)) => *total += count,
        None => {
            histogram.buckets.push((le, count));
            histogram.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
    }
}

fn add(total: &mut Histogram, other: &Histogram) {
    total.sum += other.sum;
    total.count += other.count;
    for (le, count) in &other.buckets {
        add_bucket(total, *le, *count);
    }
}

/// `end` less `start`: what was observed between two scrapes.
fn difference(end: &Histogram, start: &Histogram) -> Histogram {
    let before = |le: f64| {
        start
            .buckets
            .iter()
            .find(|(bound, _)| *bound == le)
            .map_or(0, |(_, count)| *count)
    };
    Histogram {
        buckets: end
            .buckets
            .iter()
            .map(|(le, count)| (*le, count.saturating_sub(before(*le))))
            .collect(),
        sum: end.sum - start.sum,
        count: end.count.saturating_sub(start.count),
    }
}

fn figures(stage: &'static str, histogram: &Histogram) -> Option<StageFigures> {
    if histogram.count == 0 {
        return None;
    }
    Some(StageFigures {
        stage,
        count: histogram.count,
        mean_us: histogram.sum / histogram.count as f64 * 1e6,
        p50_us: quantile(histogram, 0.5) * 1e6,
        p99_us: quantile(histogram, 0.99) * 1e6,
    })
}

/// The `q` quantile, interpolated within the bucket it falls in.
fn quantile(histogram: &Histogram, q: f64) -> f64 {
    let rank = q * histogram.count as f64;
    let mut lower = (0.0, 0u64);
    for &(le, cumulative) in &histogram.buckets {
        if cumulative as f64 >= rank {
            if !le.is_finite() {
                return lower.0;
            }
            let within = cumulative - lower.1;
            let share = if within == 0 {
                1.0
            } else {
                (rank - lower.1 as f64) / within as f64
            };
            return lower.0 + (le - lower.0) * share;
        }
        lower = (le, cumulative);
    }
    lower.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "\
# TYPE synod_stage_seconds histogram
synod_stage_seconds_sum{group=\"0\",stage=\"queue\"} 0.5
synod_stage_seconds_count{group=\"0\",stage=\"queue\"} 100
synod_stage_seconds_bucket{le=\"0.001\",group=\"0\",stage=\"queue\"} 0
synod_stage_seconds_bucket{le=\"0.01\",group=\"0\",stage=\"queue\"} 100
synod_stage_seconds_bucket{le=\"+Inf\",group=\"0\",stage=\"queue\"} 100
synod_commit_index{group=\"0\"} 12
";

    #[test]
    fn a_scrape_reads_into_means_and_interpolated_quantiles() {
        let scrape = parse(SCRAPE);
        let queue = &scrape["queue"];
        assert_eq!(queue.count, 100);
        assert_eq!(queue.buckets.len(), 3);
        let figures = figures("queue", &difference(queue, &Histogram::default())).unwrap();
        assert!((figures.mean_us - 5_000.0).abs() < 1e-6);
        // Every request between 1 and 10 ms: the median half-way.
        assert!((figures.p50_us - 5_500.0).abs() < 1e-6, "{figures:?}");
        assert!((figures.p99_us - 9_910.0).abs() < 1e-6, "{figures:?}");
        // The same scrape twice: nothing happened between them.
        assert!(figures_between(&scrape, &scrape).is_empty());
    }
}
