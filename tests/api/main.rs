//! The API integration suite: the real application on port 0, a fresh
//! SQLite file per test, driven over HTTP.

mod cleanup;
mod cli;
mod contract;
mod errors;
mod helpers;
mod lifetimes;
mod logs;
mod race;
mod tls;
