//! Identifiers: who a client is and who an end user is, as cheaply cloned strings.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! shared_str {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps a string.
            pub fn new(s: impl AsRef<str>) -> Self {
                $name(Arc::from(s.as_ref()))
            }

            /// The string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), &*self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok($name::new(&*s))
            }
        }
    };
}

shared_str!(
    /// A client identifier (RFC 6749 2.2).
    ClientId
);
shared_str!(
    /// The end user a token acts for, as the application's own login names them.
    Subject
);

/// The stable identifier of a grant: one end user's approval of one device, which every access
/// and refresh token issued from it belongs to (see [`Grant`](crate::family::Grant)).
///
/// 128 bits, shown as 32 lower-case hex digits. It is derived from the grant's
/// [`FamilyKey`](crate::codes::FamilyKey) by SHA-256, so it names the grant without revealing
/// the key that every refresh token of the grant carries: knowing a grant id does not let
/// anyone forge a token of the grant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantId([u8; 16]);

impl GrantId {
    /// A grant id from its 16 bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        GrantId(bytes)
    }

    /// The id's 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses 32 hex digits (either case).
    pub fn parse(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if bytes.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = u8::try_from(hi * 16 + lo).ok()?;
        }
        Some(GrantId(out))
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GrantId({self})")
    }
}

impl std::str::FromStr for GrantId {
    type Err = InvalidGrantId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GrantId::parse(s).ok_or(InvalidGrantId)
    }
}

/// A string that is not 32 hex digits, given as a [`GrantId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidGrantId;

impl fmt::Display for InvalidGrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a grant id is 32 hex digits")
    }
}

impl std::error::Error for InvalidGrantId {}

impl Serialize for GrantId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GrantId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        GrantId::parse(&s).ok_or_else(|| serde::de::Error::custom("expected 32 hex digits"))
    }
}

/// The resources a token is meant for (RFC 8707 resource indicators), its `aud`: one or more
/// absolute URIs without a fragment, kept sorted and without duplicates in one shared string.
///
/// ```
/// use tower_device_flow::Audience;
///
/// let aud = Audience::from_resources(["https://api.example.com/", "https://a.example.com"]).unwrap();
/// assert_eq!(aud.as_str(), "https://a.example.com https://api.example.com/");
/// assert!(aud.contains("https://api.example.com/"));
/// assert!(Audience::from_resources(["relative/path"]).is_err());
/// assert!(Audience::from_resources(["https://x.example/#frag"]).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Audience(Arc<str>);

/// A resource indicator that is not an absolute URI without a fragment (RFC 8707 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidResource;

impl fmt::Display for InvalidResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a resource must be an absolute URI without a fragment")
    }
}

impl std::error::Error for InvalidResource {}

impl Audience {
    /// The audience of the given resource URIs; at least one.
    pub fn from_resources<I, T>(resources: I) -> Result<Self, InvalidResource>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let mut all: Vec<String> = Vec::new();
        for r in resources {
            let r = r.as_ref();
            if !is_absolute_uri(r) {
                return Err(InvalidResource);
            }
            all.push(r.to_owned());
        }
        if all.is_empty() {
            return Err(InvalidResource);
        }
        all.sort();
        all.dedup();
        Ok(Audience(Arc::from(all.join(" "))))
    }

    /// The resources, space-separated.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Each resource URI.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.split(' ')
    }

    /// True if `resource` is one of them.
    pub fn contains(&self, resource: &str) -> bool {
        self.iter().any(|r| r == resource)
    }

    /// True if every resource of `self` is in `other`.
    pub fn is_subset_of(&self, other: &Audience) -> bool {
        self.iter().all(|r| other.contains(r))
    }
}

/// RFC 3986 absolute-URI (a scheme, then `:`, then something) with no fragment and no space.
fn is_absolute_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.is_empty()
        && !s.contains('#')
        && s.len() <= 2048
        && s.bytes().all(|b| b.is_ascii_graphic())
}

impl fmt::Debug for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Audience({:?})", &*self.0)
    }
}

impl fmt::Display for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Audience {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Audience::from_resources(s.split(' ').filter(|r| !r.is_empty()))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_ids_round_trip_as_hex() {
        let id = GrantId::from_bytes([0xab; 16]);
        assert_eq!(id.to_string(), "ab".repeat(16));
        assert_eq!(GrantId::parse(&id.to_string()), Some(id));
        assert_eq!(GrantId::parse(&"AB".repeat(16)), Some(id));
        assert_eq!(GrantId::parse("abc"), None);
        assert_eq!(GrantId::parse(&"zz".repeat(16)), None);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<GrantId>(&json).unwrap(), id);
    }

    #[test]
    fn audiences_are_absolute_uris() {
        assert!(Audience::from_resources(["urn:example:api"]).is_ok());
        assert!(Audience::from_resources(Vec::<&str>::new()).is_err());
        for bad in ["", "api", "1http://x", "https://a b", "https://x/#f", ":x"] {
            assert!(Audience::from_resources([bad]).is_err(), "{bad:?}");
        }
        let a = Audience::from_resources(["https://b", "https://a", "https://b"]).unwrap();
        assert_eq!(a.iter().collect::<Vec<_>>(), ["https://a", "https://b"]);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Audience>(&json).unwrap(), a);
    }
}
