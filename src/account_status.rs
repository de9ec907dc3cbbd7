//! [`AccountStatus`]: the application's answer to "may this end user still be given tokens?",
//! asked whenever the token endpoint hands tokens out.
//!
//! An approval must not outlive the account that gave it. The verification page checks who the
//! end user is once, when they approve; a device then refreshes for months. So, when one is
//! configured ([`DeviceFlowBuilder::account_status`](crate::DeviceFlowBuilder::account_status)),
//! the token endpoint asks the application about the grant's subject at redemption (before it
//! stores the grant, and once more after, so an account disabled in between is caught too)
//! and at every refresh. A refused subject gets `invalid_grant`, and every grant of theirs is
//! revoked at once. A failure to answer is no refusal: it is 503 `temporarily_unavailable`
//! (or 500), and nothing is revoked, so an outage of the user database signs nobody out.
//!
//! To end an account for good: make the check refuse it first, then call
//! [`DeviceFlow::revoke_all_devices`](crate::DeviceFlow::revoke_all_devices) to end what is
//! live now. Without a check configured nothing is asked and nothing is allocated.
//!
//! ```
//! use std::collections::HashSet;
//! use std::sync::{Arc, RwLock};
//! use tower_device_flow::{DeviceFlow, MemoryStore, StoreError, Subject};
//!
//! // The application's own record of disabled accounts.
//! let disabled: Arc<RwLock<HashSet<String>>> = Arc::default();
//! let check = disabled.clone();
//! let flow = DeviceFlow::builder(MemoryStore::default())
//!     .issuer("https://auth.example.com")
//!     .account_status(move |subject: Subject| {
//!         let disabled = check.clone();
//!         async move {
//!             let disabled = disabled.read().map_err(|_| StoreError::Backend("poisoned".into()))?;
//!             Ok::<_, StoreError>(!disabled.contains(subject.as_str()))
//!         }
//!     })
//!     .build();
//! # let _ = flow;
//! ```

use std::future::Future;
use std::pin::Pin;

use crate::ids::Subject;
use crate::store::StoreError;

/// Whether an end user may still be issued tokens: not disabled, not deleted, still entitled.
///
/// Implement it with `async fn`, or pass a closure `Fn(Subject) -> impl Future<Output =
/// Result<bool, StoreError>>`. Answer `Ok(false)` to refuse the subject (their grants are
/// revoked); `Err` when the answer cannot be known now:
/// [`StoreError::Unavailable`] is answered 503 with `Retry-After`, [`StoreError::Backend`]
/// 500, and neither revokes anything.
pub trait AccountStatus: Send + Sync + 'static {
    /// True if `subject` may still be issued tokens.
    fn is_active(&self, subject: &Subject)
        -> impl Future<Output = Result<bool, StoreError>> + Send;
}

impl<F, Fut> AccountStatus for F
where
    F: Fn(Subject) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<bool, StoreError>> + Send,
{
    fn is_active(
        &self,
        subject: &Subject,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self(subject.clone())
    }
}

type Answer<'a> = Pin<Box<dyn Future<Output = Result<bool, StoreError>> + Send + 'a>>;

/// [`AccountStatus`] behind a pointer: the configuration keeps one without being generic.
pub(crate) trait DynAccountStatus: Send + Sync {
    fn is_active<'a>(&'a self, subject: &'a Subject) -> Answer<'a>;
}

impl<T: AccountStatus> DynAccountStatus for T {
    fn is_active<'a>(&'a self, subject: &'a Subject) -> Answer<'a> {
        Box::pin(AccountStatus::is_active(self, subject))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct OnlyAlice;

    impl AccountStatus for OnlyAlice {
        async fn is_active(&self, subject: &Subject) -> Result<bool, StoreError> {
            Ok(subject.as_str() == "alice")
        }
    }

    fn block<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn impls_and_closures_answer_through_the_pointer() {
        let checks: [Box<dyn DynAccountStatus>; 2] = [
            Box::new(OnlyAlice),
            Box::new(|s: Subject| async move { Ok(s.as_str() == "alice") }),
        ];
        for check in &checks {
            assert_eq!(block(check.is_active(&Subject::new("alice"))), Ok(true));
            assert_eq!(block(check.is_active(&Subject::new("bob"))), Ok(false));
        }
        let failing = |_: Subject| async { Err(StoreError::Unavailable("down".into())) };
        let failing: &dyn DynAccountStatus = &failing;
        assert!(block(failing.is_active(&Subject::new("alice"))).is_err());
    }
}
