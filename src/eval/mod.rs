//! Evaluation: OpenOOD metrics, the `nac eval` configuration and pipeline, reports and pictures.

pub mod adversarial;
pub mod config;
/// The metrics live below `nac` and `eval` (`crate::metrics`); re-exported under their old path.
pub use crate::metrics;
pub mod demo;
pub mod plots;
pub mod report;
pub mod run;
pub mod shift;

pub use config::EvalConfig;
pub use run::{run, EvalOptions, EvalReport};
