//! Black-box tests of the offpeak server: the real server on port 0, a fresh PostgreSQL
//! database per test, HTTP in and out (plus SQL where the contract is a table).

mod admin;
mod auth;
mod capacity;
mod cli;
mod cluster;
mod cluster_signals;
mod commit_pipeline;
mod crash;
mod demo;
mod embedded;
mod first_start;
mod handoff;
mod health;
mod helpers;
mod leases;
mod logs;
mod market_data;
mod metrics;
mod openapi;
mod orders;
mod outage;
mod redis;
mod report;
mod restart;
mod simulate;
mod store_conformance;
mod validation;
mod ws;
