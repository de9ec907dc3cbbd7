//! Where clients come from: [`ClientSource`], and [`ClientRegistry`] for clients registered in
//! the process.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use super::records::{Client, StoreResult};
use crate::scope::Scope;

/// Looks clients up by id: the one thing the endpoints need to know about clients.
///
/// Every [`Store`](super::Store) is a client source: usually by holding a [`ClientRegistry`],
/// or, for an application that keeps its clients in its own database, by asking it. An
/// application can also keep the store for grants and tokens and answer for clients itself,
/// with [`DeviceFlowBuilder::clients`](crate::DeviceFlowBuilder::clients): every endpoint then
/// asks that source, on every request, so a client removed or changed there is removed or
/// changed at once (a removed client can no longer authenticate, so it can neither redeem
/// nor refresh).
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::{Arc, RwLock};
///
/// use tower_device_flow::store::{ClientSource, StoreResult};
/// use tower_device_flow::{Client, DeviceFlow, MemoryStore, Scope};
///
/// /// The application's own table of clients (here a map; usually a database query).
/// #[derive(Clone, Default)]
/// struct MyClients(Arc<RwLock<HashMap<String, Client>>>);
///
/// impl ClientSource for MyClients {
///     async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
///         Ok(self.0.read().unwrap().get(client_id).cloned())
///     }
///
///     // Optional: lets the metadata advertise `scopes_supported` without configuring it.
///     async fn known_scopes(&self) -> StoreResult<Option<Scope>> {
///         let clients = self.0.read().unwrap();
///         let all = clients.values().fold(Scope::empty(), |all, c| all.union(c.allowed_scope()));
///         Ok(Some(all))
///     }
/// }
///
/// let clients = MyClients::default();
/// clients.0.write().unwrap().insert(
///     "tv-app".into(),
///     Client::public("tv-app", Scope::parse("profile").unwrap()),
/// );
/// // The store keeps grants and tokens; clients come from `MyClients` alone.
/// let flow = DeviceFlow::builder(MemoryStore::default())
///     .issuer("https://auth.example.com")
///     .clients(clients.clone())
///     .build();
/// # let _ = flow;
/// ```
pub trait ClientSource: Send + Sync + 'static {
    /// The client registered as `client_id`, if any.
    fn client(&self, client_id: &str) -> impl Future<Output = StoreResult<Option<Client>>> + Send;

    /// The union of the scopes every registered client may request, for the metadata's
    /// `scopes_supported` when the flow is not given one
    /// ([`DeviceFlowBuilder::scopes_supported`](crate::DeviceFlowBuilder::scopes_supported)).
    /// `None` (the default) when the source cannot list its clients: the metadata then leaves
    /// the field out. Asked on every metadata request, so keep it cheap.
    fn known_scopes(&self) -> impl Future<Output = StoreResult<Option<Scope>>> + Send {
        async { Ok(None) }
    }
}

impl<C: ClientSource + ?Sized> ClientSource for Arc<C> {
    fn client(&self, client_id: &str) -> impl Future<Output = StoreResult<Option<Client>>> + Send {
        (**self).client(client_id)
    }
    fn known_scopes(&self) -> impl Future<Output = StoreResult<Option<Scope>>> + Send {
        (**self).known_scopes()
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`ClientSource`] as an object: how the flow holds a source of the application's choosing
/// without a type parameter (the futures are boxed; only a flow given its own source pays).
pub(crate) trait DynClientSource: Send + Sync + 'static {
    fn client_dyn<'a>(&'a self, client_id: &'a str) -> BoxFuture<'a, StoreResult<Option<Client>>>;
    fn known_scopes_dyn(&self) -> BoxFuture<'_, StoreResult<Option<Scope>>>;
}

impl<C: ClientSource> DynClientSource for C {
    fn client_dyn<'a>(&'a self, client_id: &'a str) -> BoxFuture<'a, StoreResult<Option<Client>>> {
        Box::pin(self.client(client_id))
    }
    fn known_scopes_dyn(&self) -> BoxFuture<'_, StoreResult<Option<Scope>>> {
        Box::pin(self.known_scopes())
    }
}

/// Where the endpoints look clients up: the application's own source when the flow has one,
/// the store otherwise (statically dispatched: the default path boxes nothing).
pub(crate) struct Clients<'a, S> {
    store: &'a S,
    source: Option<&'a dyn DynClientSource>,
}

impl<S> Clone for Clients<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Clients<'_, S> {}

impl<'a, S: ClientSource> Clients<'a, S> {
    pub(crate) fn new(store: &'a S, source: Option<&'a dyn DynClientSource>) -> Self {
        Clients { store, source }
    }

    /// The client registered as `client_id`, asked of the source in charge.
    pub(crate) async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        match self.source {
            Some(source) => source.client_dyn(client_id).await,
            None => self.store.client(client_id).await,
        }
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

    /// The union of the scopes the registered clients may request.
    pub fn known_scopes(&self) -> Scope {
        let clients = self.clients.read().unwrap_or_else(|p| p.into_inner());
        clients
            .values()
            .fold(Scope::empty(), |all, c| all.union(c.allowed_scope()))
    }
}

impl ClientSource for ClientRegistry {
    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        Ok(self.get(client_id))
    }

    async fn known_scopes(&self) -> StoreResult<Option<Scope>> {
        Ok(Some(ClientRegistry::known_scopes(self)))
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

    #[test]
    fn known_scopes_are_the_union_of_the_clients() {
        let registry = ClientRegistry::default();
        assert!(registry.known_scopes().is_empty());
        registry.add(Client::public("tv", Scope::parse("profile").unwrap()));
        registry.add(Client::public(
            "box",
            Scope::parse("email profile").unwrap(),
        ));
        assert_eq!(registry.known_scopes().as_str(), "email profile");
        registry.remove("box");
        assert_eq!(registry.known_scopes().as_str(), "profile");
    }
}
