//! Where clients come from: [`ClientSource`], and [`ClientRegistry`] for clients registered in
//! the process.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};

use super::records::{Client, StoreResult};

/// Looks clients up by id: the one thing the endpoints need to know about clients.
///
/// Every [`Store`](super::Store) is a client source: usually by holding a [`ClientRegistry`],
/// or, for an application that keeps its clients in its own database, by asking it.
///
/// ```
/// use tower_device_flow::store::{ClientSource, StoreResult};
/// use tower_device_flow::{Client, Scope};
///
/// struct MyClients; // e.g. a table of the application's database
///
/// impl ClientSource for MyClients {
///     async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
///         Ok((client_id == "tv-app").then(|| Client::public("tv-app", Scope::parse("profile").unwrap())))
///     }
/// }
/// ```
pub trait ClientSource: Send + Sync + 'static {
    /// The client registered as `client_id`, if any.
    fn client(&self, client_id: &str) -> impl Future<Output = StoreResult<Option<Client>>> + Send;
}

impl<C: ClientSource + ?Sized> ClientSource for Arc<C> {
    fn client(&self, client_id: &str) -> impl Future<Output = StoreResult<Option<Client>>> + Send {
        (**self).client(client_id)
    }
}

/// Clients registered in this process: what stores that keep clients in memory (rather than in
/// their database) use to answer [`ClientSource::client`].
#[derive(Debug, Default)]
pub struct ClientRegistry {
    clients: RwLock<HashMap<Box<str>, Client>>,
}

impl ClientRegistry {
    /// A registry holding `clients`.
    pub fn new(clients: impl IntoIterator<Item = Client>) -> Self {
        let registry = ClientRegistry::default();
        for c in clients {
            registry.add(c);
        }
        registry
    }

    /// Registers a client, or replaces the one registered under its id (an update). Grants
    /// already issued keep their scope.
    pub fn add(&self, client: Client) {
        // A panic elsewhere cannot leave the map half-written (every write is one insert), so a
        // poisoned lock is safe to keep using.
        let mut clients = self.clients.write().unwrap_or_else(|p| p.into_inner());
        clients.insert(Box::from(client.id().as_str()), client);
    }

    /// Removes the client registered as `client_id`, returning it. Its grants stay until they
    /// are revoked or expire, but it can no longer authenticate, so it can neither redeem nor
    /// refresh.
    pub fn remove(&self, client_id: &str) -> Option<Client> {
        let mut clients = self.clients.write().unwrap_or_else(|p| p.into_inner());
        clients.remove(client_id)
    }

    /// The client registered as `client_id`.
    pub fn get(&self, client_id: &str) -> Option<Client> {
        let clients = self.clients.read().unwrap_or_else(|p| p.into_inner());
        clients.get(client_id).cloned()
    }
}

impl ClientSource for ClientRegistry {
    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        Ok(self.get(client_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scope;

    #[test]
    fn clients_can_be_added_updated_and_removed() {
        let scope = Scope::parse("profile").unwrap();
        let registry = ClientRegistry::new([Client::public("tv", scope.clone())]);
        assert!(registry.get("tv").unwrap().name().is_none());
        registry.add(Client::public("tv", scope).with_name("TV"));
        assert_eq!(registry.get("tv").unwrap().name(), Some("TV"));
        assert!(registry.remove("tv").is_some());
        assert!(registry.get("tv").is_none());
        assert!(registry.remove("tv").is_none());
    }
}
