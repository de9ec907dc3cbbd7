//! The credential store: one trait an application implements once for its database.
//!
//! A backend supplies only atomic primitives (insert-if-absent, get, compare-and-swap of a
//! versioned record, revoke, counters with a ceiling, claim-once). Every protocol rule
//! (expiry, `slow_down`, single use, refresh rotation and reuse, client binding) is decided by
//! [`crate::grant`], [`crate::family`] and the services,
//! so a new backend cannot get the protocol wrong; it can only fail to be atomic, and
//! [`MemoryStore`] shows what atomic means for each method.

mod clients;
mod lookup;
mod memory;
mod records;
mod timed;
mod traits;

pub use crate::ids::{ClientId, Subject};
pub use clients::{ClientRegistry, ClientSource};
pub(crate) use clients::{Clients, DynClientSource};
pub(crate) use lookup::{find_token, FoundToken};
pub use memory::{MemoryStore, MemoryStoreBuilder, DEFAULT_MAX_PENDING_GRANTS};
pub use records::{Client, Count, Insert, IssuedGrant, TokenInfo, Versioned};
pub(crate) use timed::TimedStore;
pub use traits::{Store, StoreError, StoreResult};

#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
pub use redis::{RedisStore, RedisStoreBuilder};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql;
#[cfg(feature = "postgres")]
pub use sql::{PostgresStore, PostgresStoreBuilder, DEFAULT_SCHEMA};
#[cfg(feature = "sqlite")]
pub use sql::{SqliteStore, SqliteStoreBuilder};
#[cfg(feature = "test-kit")]
pub mod test_kit;
