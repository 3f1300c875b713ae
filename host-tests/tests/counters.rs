//! The HTTP filter's counters (`webhooks_observed`, `webhooks_delivered` and the rest of the
//! request path's): kept per worker and added to Envoy's stats on the worker's tick, so a
//! webhook makes no `increment_metric` call (each is a call out of the VM) and the counts are
//! exact a tick later.

mod common;

use common::*;
use host_tests::{Host, UpstreamReply};

#[test]
fn webhooks_make_no_metric_call_and_their_counts_reach_the_stats_at_the_next_tick() {
    let mut host = Host::start(host_config(2, "")).unwrap();
    let pipeline = install_pipeline(&mut host);
    host.advance(100).unwrap();
    let writes = host.metric_writes();
    for n in 0..40 {
        // Every fourth refused (4xx), every fourth of the rest not delivered (5xx).
        let status = match n % 8 {
            0 | 4 => 400,
            1 => 503,
            _ => 200,
        };
        let req = hook_request(webhook(1, n + 1, "running", 2));
        let out = host
            .request((n % 2) as usize, req, move |_| {
                UpstreamReply::status(status)
            })
            .unwrap();
        assert!(out.upstream.is_some(), "passed through");
    }
    assert_eq!(
        host.metric_writes(),
        writes,
        "no metric call on the request path"
    );
    assert_eq!(metric(&host, "webhooks_observed"), 0, "not before the tick");
    host.advance(100).unwrap();
    assert_eq!(metric(&host, "webhooks_observed"), 40);
    assert_eq!(metric(&host, "webhooks_delivered"), 25);
    assert_eq!(metric(&host, "webhooks_refused"), 10);
    assert_eq!(metric(&host, "webhooks_not_delivered"), 5);
    let _ = pipeline;
}
