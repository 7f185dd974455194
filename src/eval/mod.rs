//! Evaluation: OpenOOD metrics, the `nac eval` configuration and pipeline, reports and pictures.

pub mod config;
pub mod demo;
pub mod metrics;
pub mod plots;
pub mod report;
pub mod run;
pub mod shift;

pub use config::EvalConfig;
pub use run::{run, EvalOptions, EvalReport};
