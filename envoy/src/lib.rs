//! `envoy-e2e`: everything needed to watch status-sync work inside a real Envoy.
//!
//! - [`drone_sim`]: a faithful drone-server stand-in: the `drone-model` crate's sans-IO drone
//!   (REST API + build lifecycles that send, and lose, webhooks the way drone does) behind
//!   threads and HTTP;
//! - [`pipeline_sim`]: the service behind the sidecar, which records what it believes;
//! - [`fast_upstream`]: the minimal upstream of the benchmarks (200 at once, keep-alive);
//! - [`h2c`]: a one-request HTTP/2 cleartext client that can send request trailers;
//! - [`drone_tls`]: a throwaway CA and certificate, and a TLS listener in front of drone-sim,
//!   so the tests reach drone through the shipped TLS `drone` cluster;
//! - [`envoy`]: rendering `envoy.yaml.tmpl`, running Envoy, reading its stats, pushing config;
//! - [`prometheus`]: Debian's Prometheus and promtool, for the alert rules and dashboard;
//! - [`etcd`]: Debian's etcd, a real 3-member cluster on loopback for cluster mode's tests;
//! - [`cluster`]: cluster mode end to end: drone-sim → a round-robin Service → one sidecar
//!   (`cluster-mode.yaml`) per pipeline replica, sharing one etcd (or none: embedded mode);
//! - [`process`]: starting those real parts so that they log to a file and die with the test;
//! - [`setup`]: what the tests set up alike (the parts to run, a lossy drone);
//! - [`scenario`]: the glue the demo and the end-to-end tests share (start everything, compare
//!   drone's truth with the pipeline's view).
//!
//! The simulators run in-process on threads ([`sim_server`]) and bind port 0, so two runs never collide and a
//! test owns everything it starts.

pub mod args;
pub mod cluster;
pub mod dist;
pub mod drone_model;
pub mod drone_sim;
pub mod drone_tls;
pub mod ecds;
pub mod envoy;
pub mod etcd;
pub mod fast_upstream;
pub mod h2c;
pub mod pipeline_sim;
pub mod process;
pub mod prometheus;
pub mod scenario;
pub mod setup;
pub mod sim_server;
pub mod util;
