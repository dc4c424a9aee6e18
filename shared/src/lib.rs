//! placeholder
pub mod breaker;
pub mod config;
pub mod connection;
pub mod http;
pub mod keys;
