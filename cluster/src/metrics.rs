//! Prometheus metrics: the registry a node's families are registered in,
//! its exposition for `/metrics`, the kinds of metric the nodes use, and
//! the node links' family. Membership registers its own families
//! (`membership::metrics`).
//!
//! A node builds one [`Registry`] with [`registry`] before it serves; the
//! shared runtime and each service it runs register their families into it
//! (the embedded server registers both services'), and `/metrics` answers
//! with [`render`] and [`CONTENT_TYPE`]. Events are counted through handles
//! taken when the node starts ([`Counter`], [`Gauge`], a series of a
//! [`Labelled`] family), so counting is an atomic add, never a label lookup.
//! Values the node keeps anyway (sessions, rooms, live members) are
//! [`Sampled`] when scraped instead, at no cost to the paths that change
//! them.

use std::fmt;
use std::sync::Arc;

use chatroom_proto::v1::ErrorCode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::family::Family;

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::registry::Registry;

/// The `Content-Type` of [`render`]'s text: the OpenMetrics text format,
/// which Prometheus asks for and parses.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What every family's name starts with (`chatroom_…`).
const PREFIX: &str = "chatroom";

/// An empty registry whose families are all named `chatroom_{name}`.
/// Register counters without their `_total`: the exposition adds it.
pub fn registry() -> Registry {
    Registry::with_prefix(PREFIX)
}

/// The exposition of every family in `registry`, in the OpenMetrics text
/// format (served with [`CONTENT_TYPE`]).
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail, and no metric here fails to encode.
    prometheus_client::encoding::text::encode(&mut text, registry)
        .expect("encoding into a String cannot fail");
    text
}

/// One label: its name and value.
type Label = [(&'static str, String); 1];

/// A family of counters or gauges by one label with a fixed set of values.
/// Every series is created up front, so each shows from the first scrape
/// (at 0), and each event goes straight to its series' handle.
#[derive(Debug, Clone)]
pub struct Labelled<M> {
    family: Family<Label, M>,
    series: Arc<[M]>,
}

impl<M> Labelled<M>
where
    M: prometheus_client::registry::Metric + prometheus_client::metrics::TypedMetric,
    M: Clone + Default,
{
    /// The family by `label`, one series per value, in the order given.
    pub fn new(label: &'static str, values: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let family = Family::<Label, M>::default();
        let series = values
            .into_iter()
            .map(|value| family.get_or_create_owned(&[(label, value.into())]))
            .collect();
        Self { family, series }
    }

    /// The series of the `index`th value given to [`new`](Self::new).
    ///
    /// # Panics
    ///
    /// If there is no such value.
    pub fn series(&self, index: usize) -> &M {
        &self.series[index]
    }

    /// Registers the family as `chatroom_{name}`.
    pub fn register(&self, registry: &mut Registry, name: &str, help: &str) {
        registry.register(name, help, self.family.clone());
    }

    /// The series of `value`, made on first use: for labels whose values
    /// come from a closed set named elsewhere (an error's reason), off the
    /// hot path.
    pub fn get(&self, label: &'static str, value: &str) -> M {
        self.family
            .get_or_create_owned(&[(label, value.to_owned())])
    }
}

/// Counters by error code, labelled `code` with the code's name in lower
/// case and without its prefix (`code="rate_limited"`), as the room
/// statistics name them.
#[derive(Debug, Clone)]
pub struct ErrorCounters(Labelled<Counter>);

impl Default for ErrorCounters {
    fn default() -> Self {
        let codes = (0..=ErrorCode::LAST as i32).map(error_code_name);
        Self(Labelled::new("code", codes))
    }
}

impl ErrorCounters {
    /// Counts one error of `code` (a code this build does not know counts as
    /// `unspecified`).
    pub fn count(&self, code: i32) {
        let index = usize::try_from(code)
            .ok()
            .filter(|&index| index <= ErrorCode::LAST as usize)
            .unwrap_or(ErrorCode::Unspecified as usize);
        self.0.series(index).inc();
    }

    /// Registers the family as `chatroom_{name}`.
    pub fn register(&self, registry: &mut Registry, name: &str, help: &str) {
        self.0.register(registry, name, help);
    }
}

/// `rate_limited` for `ERROR_CODE_RATE_LIMITED`.
fn error_code_name(code: i32) -> String {
    let name = ErrorCode::try_from(code)
        .unwrap_or(ErrorCode::Unspecified)
        .as_str_name();
    name.strip_prefix("ERROR_CODE_")
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// Samples a metric reads when scraped: `(label value, value)` pairs, or
/// one pair with an empty label value for an unlabelled metric.
type Read = Box<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>;

/// A counter or gauge read from the node's own state when scraped.
pub struct Sampled {
    metric_type: MetricType,
    label: Option<&'static str>,
    read: Read,
}

impl fmt::Debug for Sampled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampled")
            .field("metric_type", &self.metric_type)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Sampled {
    /// A gauge whose value `read` returns.
    pub fn gauge(read: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self::unlabelled(MetricType::Gauge, read)
    }

    /// A counter whose value `read` returns (it must never decrease).
    pub fn counter(read: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self::unlabelled(MetricType::Counter, read)
    }

    /// Gauges by `label`: `read` returns each label value with its value.
    pub fn gauges_by(
        label: &'static str,
        read: impl Fn() -> Vec<(&'static str, u64)> + Send + Sync + 'static,
    ) -> Self {
        Self {
            metric_type: MetricType::Gauge,
            label: Some(label),
            read: Box::new(read),
        }
    }

    /// Counters by `label`: `read` returns each label value with its value.
    pub fn counters_by(
        label: &'static str,
        read: impl Fn() -> Vec<(&'static str, u64)> + Send + Sync + 'static,
    ) -> Self {
        Self {
            metric_type: MetricType::Counter,
            label: Some(label),
            read: Box::new(read),
        }
    }

    fn unlabelled(metric_type: MetricType, read: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self {
            metric_type,
            label: None,
            read: Box::new(move || vec![("", read())]),
        }
    }

    fn encode_value(&self, encoder: &mut MetricEncoder<'_>, value: u64) -> fmt::Result {
        match self.metric_type {
            MetricType::Counter => encoder.encode_counter::<NoLabelSet, _, u64>(&value, None),
            _ => encoder.encode_gauge(&value),
        }
    }
}

impl EncodeMetric for Sampled {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> fmt::Result {
        for (label_value, value) in (self.read)() {
            match self.label {
                Some(label) => {
                    let labels = [(label, label_value)];
                    let mut series = encoder.encode_family(&labels)?;
                    self.encode_value(&mut series, value)?;
                }
                None => self.encode_value(&mut encoder, value)?,
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.metric_type
    }
}

/// What a node's links to other nodes went through.
#[derive(Debug, Clone, Default)]
pub struct LinkMetrics {
    reconnects: Counter,
    refused: Counter,
}

impl LinkMetrics {
    /// A link that was lost is up again.
    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    /// A peer failed the link's TLS handshake.
    pub fn refused(&self) {
        self.refused.inc();
    }

    /// How many peers failed the link's TLS handshake so far.
    pub fn refused_count(&self) -> u64 {
        self.refused.get()
    }

    /// Registers `chatroom_link_reconnects_total` and
    /// `chatroom_link_refused_total`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "link_reconnects",
            "Node links re-established after they were lost (a link's first connection \
             does not count)",
            self.reconnects.clone(),
        );
        registry.register(
            "link_refused",
            "Node links refused at the TLS handshake: the peer showed no certificate of the \
             cluster CA for its role, or none in time",
            self.refused.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(registry: &Registry) -> Vec<String> {
        render(registry).lines().map(str::to_owned).collect()
    }

    #[test]
    fn families_render_with_the_prefix_help_type_and_eof() {
        let mut registry = registry();
        let counter: Counter = Counter::default();
        registry.register("things", "Things that happened", counter.clone());
        counter.inc_by(3);
        let gauge = Gauge::<i64>::default();
        registry.register("level", "How high", gauge.clone());
        gauge.set(-2);
        assert_eq!(
            render(&registry),
            "# HELP chatroom_things Things that happened.\n\
             # TYPE chatroom_things counter\n\
             chatroom_things_total 3\n\
             # HELP chatroom_level How high.\n\
             # TYPE chatroom_level gauge\n\
             chatroom_level -2\n\
             # EOF\n"
        );
    }

    #[test]
    fn labelled_series_exist_from_the_start_and_count_apart() {
        let mut registry = registry();
        let lanes = Labelled::<Counter>::new("lane", ["normal", "priority"]);
        lanes.register(&mut registry, "accepted", "Accepted");
        lanes.series(1).inc();
        lanes.series(1).inc();
        let text = lines(&registry);
        assert!(text.contains(&"chatroom_accepted_total{lane=\"normal\"} 0".to_owned()));
        assert!(text.contains(&"chatroom_accepted_total{lane=\"priority\"} 2".to_owned()));
    }

    #[test]
    fn error_codes_are_labelled_by_short_names_and_unknown_codes_are_unspecified() {
        let mut registry = registry();
        let errors = ErrorCounters::default();
        errors.register(&mut registry, "refused", "Refused");
        errors.count(ErrorCode::RateLimited as i32);
        errors.count(ErrorCode::RateLimited as i32);
        errors.count(ErrorCode::PayloadTooLarge as i32);
        errors.count(77);
        errors.count(-1);
        let text = lines(&registry);
        for expected in [
            "chatroom_refused_total{code=\"rate_limited\"} 2",
            "chatroom_refused_total{code=\"payload_too_large\"} 1",
            "chatroom_refused_total{code=\"unspecified\"} 2",
            "chatroom_refused_total{code=\"internal\"} 0",
        ] {
            assert!(
                text.contains(&expected.to_owned()),
                "{expected} in {text:?}"
            );
        }
    }

    #[test]
    fn sampled_metrics_are_read_at_each_scrape() {
        let mut registry = registry();
        let level = Arc::new(std::sync::atomic::AtomicU64::new(4));
        let read = Arc::clone(&level);
        registry.register(
            "sessions",
            "Sessions",
            Sampled::gauge(move || read.load(std::sync::atomic::Ordering::Relaxed)),
        );
        registry.register("done", "Done", Sampled::counter(|| 9));
        registry.register(
            "errors",
            "Errors",
            Sampled::counters_by("op", || vec![("write", 2), ("load", 0)]),
        );
        assert!(lines(&registry).contains(&"chatroom_sessions 4".to_owned()));
        level.store(5, std::sync::atomic::Ordering::Relaxed);
        let text = render(&registry);
        assert!(text.contains("# TYPE chatroom_sessions gauge\nchatroom_sessions 5\n"));
        assert!(text.contains("# TYPE chatroom_done counter\nchatroom_done_total 9\n"));
        assert!(text.contains(
            "chatroom_errors_total{op=\"write\"} 2\nchatroom_errors_total{op=\"load\"} 0\n"
        ));
    }
}
