//! The schema's migrations, embedded in the crate and applied by sqlx's own migrator.
//!
//! The files under `migrations/` are what `sqlx::migrate!("migrations")` would embed, with the
//! same versions, descriptions and SHA-384 checksums, so the `_sqlx_migrations` bookkeeping is
//! the one sqlx and `sqlx-cli` know. They are listed here by hand rather than through the macro:
//! `migrate!` needs sqlx's `macros` feature, a proc-macro crate that compiles both database
//! drivers a second time, and that is most of the build time of these stores (the unit test
//! below checks that the list and the directory agree).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use crate::store::traits::{StoreError, StoreResult};

/// `(version, description, SQL)` of each file of `migrations/`, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "device flow",
    include_str!("../../../migrations/0001_device_flow.sql"),
)];

/// The embedded migrations, as a source for sqlx's [`Migrator`].
#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async { Ok(migrations()) })
    }
}

fn migrations() -> Vec<Migration> {
    MIGRATIONS
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect()
}

/// The migrator of the crate's schema.
pub(crate) async fn migrator() -> StoreResult<Migrator> {
    Migrator::new(Embedded)
        .await
        .map_err(|e| StoreError::Backend(format!("cannot load the migrations: {e}")))
}

/// A failed migration as a store error.
pub(crate) fn migrate_error(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::Execute(e) => super::shared::db_error(e),
        other => StoreError::Backend(format!("migration failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded list is exactly what sqlx reads from the directory: same versions,
    /// descriptions and checksums, so a migration added to `migrations/` but not here fails.
    #[test]
    fn embedded_migrations_match_the_directory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let from_disk = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(Migrator::new(dir))
            .unwrap();
        let embedded: Vec<_> = migrations()
            .into_iter()
            .map(|m| {
                (
                    m.version,
                    m.description.into_owned(),
                    m.checksum.into_owned(),
                )
            })
            .collect();
        let on_disk: Vec<_> = from_disk
            .iter()
            .map(|m| (m.version, m.description.to_string(), m.checksum.to_vec()))
            .collect();
        assert!(!embedded.is_empty());
        assert_eq!(embedded, on_disk);
    }
}
