//! `GET /metrics` in Prometheus' text format (version 0.0.4). Per flow: records received, written, excluded and
//! failed (from its runs, so every process reports the same figures), backlog, lag, and which process owns it.
//! Per connection: Dataverse requests by status, throttles, retries, current concurrency and request latency, as
//! this process's shared client of that connection saw them, and whether each of its app registrations is in
//! rotation.

use super::clients::Clients;
use super::supervisor::Supervisor;
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::fmt::Write;

/// A label value, escaped as the text format wants it.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", label(v))).collect();
        let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
    }
}

/// Renders every metric.
pub async fn render(store: &Store, supervisor: &Supervisor, clients: &Clients) -> Result<String, StoreError> {
    let mut out = String::new();
    let flows = store.all_flows().await?;
    let totals: HashMap<String, _> = store.flow_totals().await?.into_iter().map(|t| (t.flow_id.clone(), t)).collect();
    let leases: HashMap<String, _> = store.leases().await?.into_iter().map(|l| (l.flow_id.clone(), l)).collect();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut f = Family { out: &mut out };

    let counters = [
        ("dynsync_flow_records_received_total", "Records a flow received and acknowledged."),
        ("dynsync_flow_records_written_total", "Records a flow wrote to its destination."),
        (
            "dynsync_flow_records_excluded_total",
            "Records a flow left out on purpose (no identity, no mapped audience).",
        ),
        ("dynsync_flow_records_failed_total", "Records the destination refused for good (kept to replay)."),
    ];
    for (i, (name, help)) in counters.iter().enumerate() {
        f.header(name, "counter", help);
        for flow in &flows {
            let id = flow.id.to_string();
            let t = totals.get(&id);
            let value = t.map_or(0, |t| [t.received, t.written, t.excluded, t.failed][i]);
            f.sample(name, &[("flow", &id), ("sandbox", flow.sandbox.as_str()), ("job", &flow.job)], value);
        }
    }

    let mut backlogs = Vec::new();
    for flow in &flows {
        let backlog = match supervisor.job(&flow.job) {
            Some(job) => Some(job.backlog(store, flow.id).await?),
            None => None,
        };
        backlogs.push(backlog);
    }
    f.header("dynsync_flow_backlog_records", "gauge", "Records accepted and not yet acknowledged.");
    for (flow, backlog) in flows.iter().zip(&backlogs) {
        let value = backlog.as_ref().map_or(0, |b| b.records);
        f.sample("dynsync_flow_backlog_records", &[("flow", &flow.id.to_string())], value);
    }
    f.header("dynsync_flow_lag_seconds", "gauge", "Age of the oldest record not yet acknowledged (0 when none).");
    for (flow, backlog) in flows.iter().zip(&backlogs) {
        let lag = backlog
            .as_ref()
            .and_then(|b| b.oldest)
            .map_or(0.0, |t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0);
        f.sample("dynsync_flow_lag_seconds", &[("flow", &flow.id.to_string())], lag);
    }
    f.header(
        "dynsync_flow_owner",
        "gauge",
        "1 for the process that holds the flow's lease (0 once it expired), with the flow's status.",
    );
    for flow in &flows {
        let id = flow.id.to_string();
        if let Some(lease) = leases.get(&id) {
            let held = if lease.expires_at > now_ms { 1 } else { 0 };
            let labels = [
                ("flow", id.as_str()),
                ("owner", lease.owner.as_str()),
                ("generation", &lease.generation.to_string()),
                ("status", lease.status.as_str()),
            ];
            f.sample("dynsync_flow_owner", &labels, held);
        }
    }
    f.header("dynsync_flows_running_here", "gauge", "Flows this process runs.");
    let process = supervisor.process().to_string();
    f.sample("dynsync_flows_running_here", &[("process", &process)], supervisor.running().len());

    let connections = clients.all();
    let per_connection: Vec<(String, dataverse::Metrics)> =
        connections.iter().map(|(id, client)| (id.to_string(), client.metrics())).collect();
    f.header("dynsync_dataverse_responses_total", "counter", "Dataverse answers by HTTP status, retries included.");
    for (id, m) in &per_connection {
        for (status, count) in &m.responses {
            f.sample(
                "dynsync_dataverse_responses_total",
                &[("connection", id), ("status", &status.to_string())],
                count,
            );
        }
    }
    f.header("dynsync_dataverse_requests_total", "counter", "Dataverse requests sent, retries included.");
    for (id, m) in &per_connection {
        f.sample("dynsync_dataverse_requests_total", &[("connection", id)], m.requests);
    }
    f.header("dynsync_dataverse_throttled_total", "counter", "429 answers, by the service protection limit hit.");
    for (id, m) in &per_connection {
        for (limit, count) in [
            ("requests", m.throttled_requests),
            ("execution_time", m.throttled_execution_time),
            ("concurrency", m.throttled_concurrency),
        ] {
            f.sample("dynsync_dataverse_throttled_total", &[("connection", id), ("limit", limit)], count);
        }
    }
    f.header(
        "dynsync_dataverse_retries_total",
        "counter",
        "Requests sent again (throttled, transient, token renewal).",
    );
    for (id, m) in &per_connection {
        f.sample("dynsync_dataverse_retries_total", &[("connection", id)], m.retries);
    }
    f.header(
        "dynsync_dataverse_held_total",
        "counter",
        "Times a request waited for Dataverse's window to have room, by the client's own account of it.",
    );
    for (id, m) in &per_connection {
        f.sample("dynsync_dataverse_held_total", &[("connection", id)], m.held);
    }
    f.header(
        "dynsync_dataverse_burst_requests_total",
        "counter",
        "Requests sent beyond the concurrency limit while Dataverse's window had room for them.",
    );
    for (id, m) in &per_connection {
        f.sample("dynsync_dataverse_burst_requests_total", &[("connection", id)], m.burst_requests);
    }
    f.header("dynsync_dataverse_concurrency", "gauge", "The adaptive concurrency limit of the connection's client.");
    for (id, m) in &per_connection {
        f.sample("dynsync_dataverse_concurrency", &[("connection", id)], m.concurrency);
    }
    f.header(
        "dynsync_dataverse_others_requests",
        "gauge",
        "Requests other clients of the connection's app registrations (other processes) sent in Dataverse's window, as they reported them.",
    );
    for (id, m) in &per_connection {
        let requests: u64 = m.lanes.iter().map(|l| u64::from(l.others.requests)).sum();
        f.sample("dynsync_dataverse_others_requests", &[("connection", id)], requests);
    }
    f.header(
        "dynsync_dataverse_others_execution_seconds",
        "gauge",
        "Execution time other clients of the connection's app registrations spent in Dataverse's window, as they reported it or the server said it.",
    );
    for (id, m) in &per_connection {
        let seconds: f64 = m.lanes.iter().map(|l| l.others.execution_time.as_secs_f64()).sum();
        f.sample("dynsync_dataverse_others_execution_seconds", &[("connection", id)], seconds);
    }
    f.header(
        "dynsync_dataverse_window_limit",
        "gauge",
        "Dataverse's service protection limits the connection's client counts against, per user and web server: Dynamics 365's until a 429 states the environment's (to this process or another on the same store).",
    );
    for (id, m) in &per_connection {
        let limits = m.window_limits;
        for (limit, value) in [
            ("requests", f64::from(limits.requests)),
            ("execution_seconds", limits.execution_time.as_secs_f64()),
            ("window_seconds", limits.window.as_secs_f64()),
        ] {
            f.sample("dynsync_dataverse_window_limit", &[("connection", id), ("limit", limit)], value);
        }
    }
    f.header("dynsync_dataverse_request_duration_seconds", "histogram", "Dataverse request latency, per attempt.");
    for (id, m) in &per_connection {
        let name = "dynsync_dataverse_request_duration_seconds";
        for (bound, count) in m.latency.buckets() {
            let le = if bound.is_infinite() { "+Inf".to_string() } else { bound.to_string() };
            f.sample(&format!("{name}_bucket"), &[("connection", id), ("le", &le)], count);
        }
        f.sample(&format!("{name}_sum"), &[("connection", id)], m.latency.sum().as_secs_f64());
        f.sample(&format!("{name}_count"), &[("connection", id)], m.latency.count());
    }
    f.header(
        "dynsync_dataverse_registration_in_rotation",
        "gauge",
        "1 while an app registration of the connection signs in, 0 once its sign-in was refused (until its secret is replaced).",
    );
    for (id, client) in &connections {
        let id = id.to_string();
        for registration in client.registrations() {
            let labels = [("connection", id.as_str()), ("client_id", registration.name.as_str())];
            f.sample("dynsync_dataverse_registration_in_rotation", &labels, u8::from(registration.refused.is_none()));
        }
    }
    Ok(out)
}
