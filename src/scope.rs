//! OAuth scopes (RFC 6749 3.3) as a normalized, cheaply cloned value.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::OAuthError;

/// A set of scope tokens, kept sorted and without duplicates.
///
/// Stored as one shared string (`"email profile"`), so cloning a scope into a grant and its tokens
/// costs a reference count, not an allocation.
///
/// ```
/// use tower_device_flow::Scope;
///
/// let requested = Scope::parse("profile email profile").unwrap();
/// assert_eq!(requested.as_str(), "email profile");
/// assert!(requested.contains("email"));
/// assert!(requested.is_subset_of(&Scope::parse("email profile admin").unwrap()));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Scope(Arc<str>);

/// A scope string that breaks RFC 6749 3.3's syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidScope;

impl fmt::Display for InvalidScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("scope tokens must be printable ASCII without '\"' or '\\'")
    }
}

impl std::error::Error for InvalidScope {}

fn is_scope_token(token: &str) -> bool {
    // scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

impl Scope {
    /// The empty scope.
    pub fn empty() -> Self {
        Scope(Arc::from(""))
    }

    /// Parses a space-delimited scope string. Repeated spaces and duplicates are tolerated.
    pub fn parse(s: &str) -> Result<Self, InvalidScope> {
        Self::from_tokens(s.split(' ').filter(|t| !t.is_empty()))
    }

    /// Builds a scope from its tokens.
    pub fn from_tokens<I, T>(tokens: I) -> Result<Self, InvalidScope>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let mut list: Vec<String> = Vec::new();
        for t in tokens {
            let t = t.as_ref();
            if !is_scope_token(t) {
                return Err(InvalidScope);
            }
            list.push(t.to_owned());
        }
        list.sort_unstable();
        list.dedup();
        Ok(Scope(Arc::from(list.join(" "))))
    }

    /// The normalized scope string, tokens sorted and separated by single spaces.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when no token is in the scope.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scope tokens, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.split(' ').filter(|t| !t.is_empty())
    }

    /// True when `token` is one of the scope's tokens.
    pub fn contains(&self, token: &str) -> bool {
        self.iter().any(|t| t == token)
    }

    /// True when every token of `self` is in `other`.
    pub fn is_subset_of(&self, other: &Scope) -> bool {
        self.0 == other.0 || self.iter().all(|t| other.contains(t))
    }

    /// True when `self` holds every token of `required`.
    pub fn contains_all(&self, required: &Scope) -> bool {
        required.is_subset_of(self)
    }

    /// True when `self` holds at least one token of `any` (or `any` is empty).
    pub fn contains_any(&self, any: &Scope) -> bool {
        any.is_empty() || any.iter().any(|t| self.contains(t))
    }

    /// Every token of `self` and of `other`.
    pub fn union(&self, other: &Scope) -> Scope {
        if other.is_subset_of(self) {
            return self.clone();
        }
        let mut list: Vec<&str> = self.iter().chain(other.iter()).collect();
        list.sort_unstable();
        list.dedup();
        // Both sides hold valid tokens only, so the union needs no check.
        Scope(Arc::from(list.join(" ")))
    }
}

impl Default for Scope {
    fn default() -> Self {
        Scope::empty()
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({:?})", &*self.0)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Scope {
    type Err = InvalidScope;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::parse(s)
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Scope::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses a `scope` parameter of a request: RFC 6749 3.3 syntax with at least one scope
/// token, refused as `invalid_scope` otherwise. The one rule for every endpoint that takes a
/// scope (device authorization, refresh).
pub(crate) fn parse_requested(s: &str) -> Result<Scope, OAuthError> {
    match Scope::parse(s) {
        Ok(scope) if !scope.is_empty() => Ok(scope),
        Ok(_) => Err(OAuthError::invalid_scope(
            "scope must name at least one scope token",
        )),
        Err(_) => Err(OAuthError::invalid_scope("malformed scope")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_order_and_duplicates() {
        let s = Scope::parse("  b a  b ").unwrap();
        assert_eq!(s.as_str(), "a b");
        assert_eq!(s.iter().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn union_is_sorted_and_deduplicated() {
        let a = Scope::parse("profile email").unwrap();
        let b = Scope::parse("offline email").unwrap();
        assert_eq!(a.union(&b).as_str(), "email offline profile");
        assert_eq!(a.union(&Scope::empty()), a);
        assert_eq!(Scope::empty().union(&b), b);
    }

    #[test]
    fn rejects_bad_characters() {
        assert_eq!(Scope::parse("a\"b"), Err(InvalidScope));
        assert_eq!(Scope::parse("a\\b"), Err(InvalidScope));
        assert_eq!(Scope::parse("caf\u{e9}"), Err(InvalidScope));
        assert_eq!(Scope::parse("a\tb"), Err(InvalidScope));
    }

    #[test]
    fn subset_and_any() {
        let all = Scope::parse("email profile").unwrap();
        let email = Scope::parse("email").unwrap();
        assert!(email.is_subset_of(&all));
        assert!(!all.is_subset_of(&email));
        assert!(Scope::empty().is_subset_of(&email));
        assert!(email.contains_any(&Scope::parse("admin email").unwrap()));
        assert!(!email.contains_any(&Scope::parse("admin").unwrap()));
        assert!(!email.contains("emai"));
    }
}
