//! The credential store: one trait an application implements once for its database.
//!
//! A backend supplies only atomic primitives (insert-if-absent, get, compare-and-swap of a
//! versioned record, take-once, counters with expiry). Every protocol rule (expiry,
//! `slow_down`, single use, client binding) is decided by [`crate::grant`] and the services,
//! so a new backend cannot get the protocol wrong; it can only fail to be atomic, and
//! [`MemoryStore`] shows what atomic means for each method.

mod memory;
mod records;
mod traits;

pub use crate::ids::{ClientId, Subject};
pub use memory::{MemoryStore, MemoryStoreBuilder};
pub use records::{Client, ClientRegistry, IssuedTokens, RefreshTokenRecord, TokenInfo, Versioned};
pub(crate) use traits::{find_token, FoundToken};
pub use traits::{Store, StoreError, StoreResult};

#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
pub use redis::{RedisStore, RedisStoreBuilder};
#[cfg(feature = "test-kit")]
pub mod test_kit;
