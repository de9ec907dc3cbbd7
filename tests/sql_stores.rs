//! The SQL stores against real servers: the store conformance kit on `PostgresStore` and
//! `SqliteStore`, then what only SQL stores have (their tables, the purge, clients in the
//! database, corrupt rows, faults).
//!
//! ```text
//! POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo test --features postgres,sqlite,test-kit --test sql_stores
//! ```
//!
//! Every PostgreSQL test creates a schema of its own and drops it afterwards, every SQLite test
//! a file in a temporary directory of its own, so tests run in parallel. Without
//! `POSTGRES_URL` every PostgreSQL test says loudly on stderr that it did not run, and fails if
//! `CI` is set. Built without the features, the tests do not exist, and `sql_tests_are_built`
//! says so.

mod sql_support;

/// Says loudly when this build leaves the SQL tests out.
#[test]
fn sql_tests_are_built() {
    if cfg!(not(all(
        feature = "postgres",
        feature = "sqlite",
        feature = "test-kit"
    ))) {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** built without `--features postgres,sqlite,test-kit`: \
             some SQL store tests did NOT run ***"
        );
    }
}

/// One test per check and backend, so a failure names both.
#[cfg(feature = "test-kit")]
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        #[cfg(feature = "postgres")]
        mod postgres_kit {
            use tower_device_flow::store::test_kit;
            use super::sql_support::{pg, KIT_CLIENT};

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    pg::with_store(stringify!($check), test_kit::$check).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn run_all() {
                pg::with_store("run_all", |store| async move {
                    test_kit::run_all(|| store.clone()).await;
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn check_client_lookup() {
                pg::with_store("check_client_lookup", |store| async move {
                    test_kit::check_client_lookup(store, KIT_CLIENT).await;
                })
                .await;
            }
        }

        #[cfg(feature = "sqlite")]
        mod sqlite_kit {
            use tower_device_flow::store::test_kit;
            use super::sql_support::{lite, KIT_CLIENT};

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    lite::with_store(stringify!($check), test_kit::$check).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn run_all() {
                lite::with_store("run_all", |store| async move {
                    test_kit::run_all(|| store.clone()).await;
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn check_client_lookup() {
                lite::with_store("check_client_lookup", |store| async move {
                    test_kit::check_client_lookup(store, KIT_CLIENT).await;
                })
                .await;
            }
        }
    };
}

#[cfg(feature = "test-kit")]
conformance!(
    // Device grants.
    check_insert_if_absent,
    check_concurrent_inserts_claim_user_code_once,
    check_lookups,
    check_compare_and_swap,
    check_approve_then_poll_issues_once,
    check_concurrent_polls_issue_once,
    check_slow_down,
    check_denied,
    check_expiry,
    check_pending_device_grants,
    // Redemption and grants.
    check_redemption_stores_grant,
    check_redemption_is_atomic,
    check_grant_compare_and_swap,
    check_concurrent_rotations_rotate_once,
    check_rotation_replaces_access_token,
    check_racing_refreshes_leave_one_pair,
    check_revoke_grant,
    check_revoke_racing_rotation,
    check_grants_of,
    check_grant_expiry,
    check_revoke_access_token,
    // Limits and one-time values.
    check_try_increment,
    check_try_increment_under_race,
    check_decrement,
    check_claim_once,
);
