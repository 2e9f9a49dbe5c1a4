//! Integration tests against a real `nats-server` (started per test by `vibehq-test-support`)
//! and real SQLite files. Each module is one area of the system, written as its specification.

mod ai;
mod api;
mod balancer;
mod cli;
mod client;
mod cluster;
mod common;
mod crash;
mod dashboard;
mod delayed;
mod dependencies;
mod docker;
mod keys;
mod metrics;
mod new_worker;
mod openapi;
mod outage;
mod pauses;
mod projection;
mod queue;
mod queue_api;
mod queue_live;
mod schedules;
mod traces;
mod trust;
mod why;
mod worker;
