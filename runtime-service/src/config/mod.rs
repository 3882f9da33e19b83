//! Node configuration: built-in defaults, then a TOML file, then `JSHEETS_RUNTIME_*`
//! environment variables, all validated before anything starts.
//!
//! Keys are camelCase dotted paths (`server.features.enableGrpcReflection`), as in jsheets.
//! A key's environment variable is `JSHEETS_RUNTIME_` plus the path in SCREAMING_SNAKE with
//! dots as `_` (`JSHEETS_RUNTIME_SERVER_FEATURES_ENABLE_GRPC_REFLECTION`). Such names
//! cannot be split back into paths, so variables are mapped through the table of known
//! keys (`keys::KEYS`); unknown `JSHEETS_RUNTIME_*` variables and unknown file keys are
//! warnings. Every bad value is reported on one line naming the key, the value and where
//! it came from.
//!
//! Settings that also have a command-line flag (`--runtimes-dir`, `--state-dir`) are one
//! key each; the flag, given to any command, is the top layer ([`Overrides`]), so every
//! command sees the same value: flag, then environment, then file, then default.
//!
//! [`schema`] holds the types and their defaults, [`load`] the layering, [`keys`] the
//! table of keys, [`validate`] the checks and their messages, [`syntax`] what names and
//! addresses look like.

mod keys;
mod load;
mod schema;
mod syntax;
mod validate;

pub use load::{load, Overrides};
/// For the pool plan's tests, which build tables by hand.
#[cfg(test)]
pub use schema::PoolConfig;
pub use schema::{
    Config, EvaluationConfig, InfluxConfig, LimitValues, LogFormat, MonitoringBackend,
    DEFAULT_ACCESS_LISTS_DIR,
};
