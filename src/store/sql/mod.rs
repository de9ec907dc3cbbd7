//! The SQL stores: [`PostgresStore`] (feature `postgres`) for many instances on one database,
//! and [`SqliteStore`] (feature `sqlite`) for one instance that survives a restart.
//!
//! Both run on sqlx with runtime queries (building needs no database), one schema (the
//! migration under `migrations/`, applied by `migrate()`) and, where the dialects allow, the
//! same statements ([`shared`]). Each primitive of the [`Store`](super::Store) contract is one
//! statement or one transaction; the stores' docs say which, and what isolation it relies on.

mod schema;
mod shared;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, PostgresStoreBuilder, DEFAULT_SCHEMA};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteStore, SqliteStoreBuilder};
