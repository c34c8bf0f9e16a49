//! What a hub counts into the server's metrics (`/metrics`).

use crate::metrics::Metrics;
use std::fmt;

/// The server's metrics as a hub counts into them, from [`crate::HubContext::metrics`].
///
/// A hub's refusals by its own caps count where Signet's do, in `signet_rate_limited_total`
/// by `limit`, so one alert covers every cap. Labels are `&'static str`: the series stay a
/// fixed set whatever clients do.
///
/// ```no_run
/// use signet::{HubBuilder, HubContext, HubError, MethodSpec};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
///
/// fn setup(hub: HubBuilder, context: &HubContext<'_>) -> HubBuilder {
///     let metrics = context.metrics();
///     let open = Arc::new(AtomicUsize::new(0));
///     hub.method(MethodSpec::new("OpenValve", &[]), move |_, _| {
///         let (metrics, open) = (metrics.clone(), open.clone());
///         async move {
///             if open.fetch_add(1, Ordering::Relaxed) >= 4 {
///                 open.fetch_sub(1, Ordering::Relaxed);
///                 metrics.rate_limited("open_valves");
///                 return Err(HubError::hub("too many valves are open"));
///             }
///             Ok(None)
///         }
///     })
/// }
/// ```
#[derive(Clone)]
pub struct HubMetrics(Metrics);

impl fmt::Debug for HubMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubMetrics").finish_non_exhaustive()
    }
}

impl HubMetrics {
    pub(crate) fn new(metrics: Metrics) -> Self {
        Self(metrics)
    }

    /// A request the hub refused by its cap `limit`: one more in
    /// `signet_rate_limited_total{limit="<limit>"}`.
    pub fn rate_limited(&self, limit: &'static str) {
        self.0.rate_limited(limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_counts_under_its_limit() {
        let metrics = Metrics::new();
        let hub = HubMetrics::new(metrics.clone());
        hub.rate_limited("open_valves");
        hub.rate_limited("open_valves");
        assert!(metrics
            .render()
            .contains("signet_rate_limited_total{limit=\"open_valves\"} 2"));
    }
}
