//! Codes and tokens: their types, how they are generated, and how they are kept at rest.
//!
//! Every secret (device code, access token, refresh token) is 256 bits from the thread-local
//! CSPRNG (ChaCha, seeded and periodically reseeded from the operating system), encoded as
//! unpadded base64url. Stores only ever see its SHA-256 [`Digest`], so a dump of a store reveals
//! no usable credential. `Debug` of a secret never prints it.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::{Rng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::ids::GrantId;

/// The SHA-256 digest of a secret: the only form in which stores keep codes and tokens.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The SHA-256 digest of `secret`.
    pub fn of(secret: &[u8]) -> Self {
        Digest(Sha256::digest(secret).into())
    }

    /// A digest from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    /// The digest's 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, as used in store keys.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 15)] as char);
        }
        s
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = u8::try_from(hi * 16 + lo).ok()?;
        }
        Some(Digest(out))
    }

    /// Compares two digests in constant time.
    pub fn ct_eq(&self, other: &Digest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to tell records apart in a debugger and reveals nothing usable.
        write!(f, "Digest({}..)", &self.to_hex()[..8])
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <Cow<'de, str>>::deserialize(d)?;
        Digest::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

macro_rules! secret {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            /// Wraps a value received from a client or produced by a custom generator.
            pub fn new(value: impl Into<String>) -> Self {
                $name(value.into())
            }

            /// A fresh random value: 256 bits, unpadded base64url (43 characters).
            pub fn generate() -> Self {
                $name(random_secret())
            }

            /// The secret itself, to hand to its owner. Never log it.
            pub fn expose(&self) -> &str {
                &self.0
            }

            /// The digest under which stores keep it.
            pub fn digest(&self) -> Digest {
                Digest::of(self.0.as_bytes())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

secret!(
    /// The device verification code (RFC 8628 3.2 `device_code`), known only to the device.
    DeviceCode
);
secret!(
    /// An access token (RFC 6749 1.4), presented as a bearer token (RFC 6750).
    AccessToken
);

/// The secret that ties every refresh token of one grant together: 128 random bits, carried
/// at the front of each of the grant's refresh tokens and nowhere else. The server never stores
/// it; the grant is stored under its SHA-256-derived [`GrantId`]. A refresh token presented
/// later thus names its grant even after it was rotated away, which is how reuse is caught
/// (RFC 9700 4.14.2), and only someone who once held one of the grant's tokens can name it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FamilyKey([u8; 16]);

impl FamilyKey {
    /// A fresh random key, for a new grant.
    pub fn generate() -> Self {
        let mut key = [0u8; 16];
        rand::rng().fill_bytes(&mut key);
        FamilyKey(key)
    }

    /// The id of the grant this key belongs to: the first 16 bytes of its SHA-256 digest.
    pub fn grant_id(&self) -> GrantId {
        let digest = Sha256::digest(self.0);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        GrantId::from_bytes(id)
    }
}

impl fmt::Debug for FamilyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FamilyKey(<redacted>)")
    }
}

/// A refresh token (RFC 6749 1.5): single use, rotated on every refresh. 48 random bytes as
/// unpadded base64url (64 characters): the grant's [`FamilyKey`], then 256 bits of its own.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    /// Wraps a value received from a client.
    pub fn new(value: impl Into<String>) -> Self {
        RefreshToken(value.into())
    }

    /// A fresh refresh token of the grant whose key is `family`.
    pub fn generate(family: &FamilyKey) -> Self {
        let mut bytes = [0u8; 48];
        bytes[..16].copy_from_slice(&family.0);
        rand::rng().fill_bytes(&mut bytes[16..]);
        RefreshToken(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The secret itself, to hand to its owner. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The digest under which its grant remembers it.
    pub fn digest(&self) -> Digest {
        Digest::of(self.0.as_bytes())
    }

    /// The key of the grant the token claims to belong to, or `None` if it is not shaped like
    /// one of this crate's refresh tokens (then it is unknown).
    pub fn family(&self) -> Option<FamilyKey> {
        Self::family_of(&self.0)
    }

    /// [`family`](Self::family) of a presented token string, without copying it.
    pub fn family_of(presented: &str) -> Option<FamilyKey> {
        if presented.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 48];
        let n = URL_SAFE_NO_PAD
            .decode_slice(presented.as_bytes(), &mut bytes)
            .ok()?;
        if n != 48 {
            return None;
        }
        let mut key = [0u8; 16];
        key.copy_from_slice(&bytes[..16]);
        Some(FamilyKey(key))
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

/// The SHA-256 JWK thumbprint of a public key (RFC 7638): the `cnf.jkt` a DPoP-bound token is
/// bound to (RFC 9449 6). Not a secret. Shown as unpadded base64url, as in `cnf.jkt`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Thumbprint([u8; 32]);

impl Thumbprint {
    /// A thumbprint from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Thumbprint(bytes)
    }

    /// The thumbprint's 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses the unpadded base64url form (43 characters).
    pub fn parse(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        if s.len() != 43 {
            return None;
        }
        let mut buf = [0u8; 33];
        let n = URL_SAFE_NO_PAD.decode_slice(s.as_bytes(), &mut buf).ok()?;
        if n != 32 {
            return None;
        }
        out.copy_from_slice(&buf[..32]);
        Some(Thumbprint(out))
    }

    /// Compares two thumbprints in constant time.
    pub fn ct_eq(&self, other: &Thumbprint) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Thumbprint({self})")
    }
}

impl Serialize for Thumbprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Thumbprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <Cow<'de, str>>::deserialize(d)?;
        Thumbprint::parse(&s)
            .ok_or_else(|| serde::de::Error::custom("expected a base64url SHA-256 thumbprint"))
    }
}

/// Produces device codes. The default is [`RandomDeviceCode`].
pub trait DeviceCodeGenerator: Send + Sync + 'static {
    /// A new, unguessable device code.
    fn generate(&self) -> DeviceCode;
}

/// 256-bit random device codes, unpadded base64url.
#[derive(Clone, Copy, Debug, Default)]
pub struct RandomDeviceCode;

impl DeviceCodeGenerator for RandomDeviceCode {
    fn generate(&self) -> DeviceCode {
        DeviceCode::generate()
    }
}

/// The end-user verification code (RFC 8628 3.2 `user_code`), in normalized form: the characters
/// of the code alone, upper case, without separators.
#[derive(Clone, PartialEq, Eq)]
pub struct UserCode(Box<str>);

impl UserCode {
    /// Wraps an already normalized code (as a custom [`UserCodeGenerator`] produces).
    pub fn from_normalized(code: impl Into<Box<str>>) -> Self {
        UserCode(code.into())
    }

    /// The normalized characters. The code is a short-lived secret: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The digest under which stores index the grant.
    pub fn digest(&self) -> Digest {
        Digest::of(self.0.as_bytes())
    }
}

impl fmt::Debug for UserCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UserCode(<redacted>)")
    }
}

/// Produces, normalizes and displays user codes. The default is [`UserCodeFormat::default`].
pub trait UserCodeGenerator: Send + Sync + 'static {
    /// A new random code.
    fn generate(&self) -> UserCode;
    /// What the end user typed, normalized for lookup; `None` if it cannot be a code at all.
    fn normalize(&self, input: &str) -> Option<UserCode>;
    /// The code as shown to the end user (for example `WDJB-MJHT`).
    fn display(&self, code: &UserCode) -> String;
}

/// A user code format: length, alphabet and grouping for display.
///
/// The default is RFC 8628 6.1's recommendation: 8 characters from the base-20 alphabet
/// `BCDFGHJKLMNPQRSTVWXZ` (no vowels, so no words; no easily confused characters), shown as
/// `XXXX-XXXX`, about 34.6 bits of entropy.
///
/// ```
/// use tower_device_flow::{UserCodeFormat, UserCodeGenerator};
///
/// let format = UserCodeFormat::default();
/// let code = format.normalize("wdjb mjht").unwrap();
/// assert_eq!(format.display(&code), "WDJB-MJHT");
/// assert!(format.normalize("WDJB-MJH").is_none()); // too short
/// assert!(format.normalize("AEIO-UAEI").is_none()); // vowels are not in the alphabet
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserCodeFormat {
    alphabet: Cow<'static, str>,
    length: usize,
    group: usize,
}

impl UserCodeFormat {
    /// RFC 8628 6.1's base-20 alphabet.
    pub const BASE20: &'static str = "BCDFGHJKLMNPQRSTVWXZ";

    /// A format with the given alphabet (ASCII upper-case letters and digits), code length and
    /// display group size (0 for no grouping). Returns `None` for an alphabet with fewer than two
    /// distinct characters, a character that is not an ASCII upper-case letter or digit, or a
    /// length of zero.
    pub fn new(
        alphabet: impl Into<Cow<'static, str>>,
        length: usize,
        group: usize,
    ) -> Option<Self> {
        let alphabet = alphabet.into();
        let mut seen = [false; 128];
        for b in alphabet.bytes() {
            if !(b.is_ascii_uppercase() || b.is_ascii_digit()) || seen[usize::from(b)] {
                return None;
            }
            seen[usize::from(b)] = true;
        }
        if alphabet.len() < 2 || length == 0 {
            return None;
        }
        Some(UserCodeFormat {
            alphabet,
            length,
            group,
        })
    }

    /// A digits-only format: `length` decimal digits shown in groups of `group`
    /// (RFC 8628 6.1 suggests digits for devices with numeric keypads).
    pub fn digits(length: usize, group: usize) -> Option<Self> {
        Self::new("0123456789", length, group)
    }

    /// The code length in characters.
    pub fn length(&self) -> usize {
        self.length
    }

    /// The alphabet codes are drawn from.
    pub fn alphabet(&self) -> &str {
        &self.alphabet
    }

    /// Bits of entropy in one code.
    pub fn entropy_bits(&self) -> f64 {
        self.length as f64 * (self.alphabet.len() as f64).log2()
    }
}

impl Default for UserCodeFormat {
    fn default() -> Self {
        UserCodeFormat {
            alphabet: Cow::Borrowed(Self::BASE20),
            length: 8,
            group: 4,
        }
    }
}

impl UserCodeGenerator for UserCodeFormat {
    fn generate(&self) -> UserCode {
        let alphabet = self.alphabet.as_bytes();
        let mut rng = rand::rng();
        let code: String = (0..self.length)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
            .collect();
        UserCode(code.into_boxed_str())
    }

    fn normalize(&self, input: &str) -> Option<UserCode> {
        // Bound the work on hostile input before looking at characters.
        if input.len() > self.length * 4 + 16 {
            return None;
        }
        let mut out = String::with_capacity(self.length);
        for c in input.chars() {
            // Separators the user may add or copy (RFC 8628 6.1): ignored. Letters and digits
            // outside the alphabet are a mistyped code, not decoration.
            if c.is_whitespace() || c.is_ascii_punctuation() {
                continue;
            }
            let c = c.to_ascii_uppercase();
            if !c.is_ascii() || !self.alphabet.as_bytes().contains(&(c as u8)) {
                return None;
            }
            out.push(c);
        }
        (out.len() == self.length).then(|| UserCode(out.into_boxed_str()))
    }

    fn display(&self, code: &UserCode) -> String {
        if self.group == 0 {
            return code.0.to_string();
        }
        let mut s = String::with_capacity(code.0.len() + code.0.len() / self.group);
        for (i, c) in code.0.chars().enumerate() {
            if i > 0 && i % self.group == 0 {
                s.push('-');
            }
            s.push(c);
        }
        s
    }
}

impl<G: UserCodeGenerator + ?Sized> UserCodeGenerator for Arc<G> {
    fn generate(&self) -> UserCode {
        (**self).generate()
    }
    fn normalize(&self, input: &str) -> Option<UserCode> {
        (**self).normalize(input)
    }
    fn display(&self, code: &UserCode) -> String {
        (**self).display(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn secrets_are_256_bit_base64url() {
        let a = DeviceCode::generate();
        let b = DeviceCode::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        let raw = URL_SAFE_NO_PAD.decode(a.expose()).unwrap();
        assert_eq!(raw.len(), 32);
        assert!(a
            .expose()
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn debug_never_prints_secrets() {
        let t = AccessToken::generate();
        let r = RefreshToken::generate(&FamilyKey::generate());
        let printed = format!("{t:?} {r:?} {:?}", DeviceCode::generate());
        assert!(!printed.contains(r.expose()));
        assert!(!printed.contains(t.expose()));
        assert!(printed.contains("<redacted>"));
        let code = UserCodeFormat::default().generate();
        assert!(!format!("{code:?}").contains(code.expose()));
        assert!(!format!("{:?}", t.digest()).contains(&t.digest().to_hex()));
    }

    #[test]
    fn digest_hex_round_trip() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Digest::from_hex("zz"), None);
        assert!(d.ct_eq(&Digest::of(b"abc")));
        assert!(!d.ct_eq(&Digest::of(b"abd")));
    }

    #[test]
    fn default_user_codes_use_base20_alphabet() {
        let f = UserCodeFormat::default();
        let mut counts = [0usize; 128];
        for _ in 0..2000 {
            let code = f.generate();
            assert_eq!(code.expose().len(), 8);
            for b in code.expose().bytes() {
                assert!(UserCodeFormat::BASE20.as_bytes().contains(&b));
                counts[usize::from(b)] += 1;
            }
        }
        // 16000 draws over 20 symbols: every symbol appears, none wildly over-represented.
        for b in UserCodeFormat::BASE20.bytes() {
            let n = counts[usize::from(b)];
            assert!((500..1100).contains(&n), "{} drawn {n} times", b as char);
        }
        assert!((f.entropy_bits() - 34.57).abs() < 0.01);
    }

    #[test]
    fn user_codes_rarely_repeat() {
        let f = UserCodeFormat::default();
        let set: HashSet<String> = (0..1000)
            .map(|_| f.generate().expose().to_owned())
            .collect();
        assert!(set.len() >= 999);
    }

    #[test]
    fn normalization_ignores_case_dashes_and_spaces() {
        let f = UserCodeFormat::default();
        let expected = f.normalize("WDJBMJHT").unwrap();
        for input in [
            "wdjb-mjht",
            " WdJb MjHt ",
            "W-D-J-B-M-J-H-T",
            "wdjb\tmjht",
            "wdjb.mjht",
            "WDJB_MJHT",
        ] {
            assert_eq!(f.normalize(input).as_ref(), Some(&expected), "{input:?}");
        }
        for input in [
            "",
            "WDJBMJH",
            "WDJBMJHTX",
            "WDJB-MJHA",
            "WDJB\u{2013}MJHT",
            "ẀDJBMJHT",
        ] {
            assert!(f.normalize(input).is_none(), "{input:?}");
        }
        assert!(f.normalize(&"-".repeat(10_000)).is_none());
    }

    #[test]
    fn digit_codes() {
        let f = UserCodeFormat::digits(9, 3).unwrap();
        let code = f.generate();
        assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
        let shown = f.display(&code);
        assert_eq!(shown.len(), 11);
        assert_eq!(shown.as_bytes()[3], b'-');
        assert_eq!(f.normalize(&shown), Some(code));
    }

    #[test]
    fn invalid_formats_are_refused() {
        assert!(UserCodeFormat::new("A", 8, 4).is_none());
        assert!(UserCodeFormat::new("AAB", 8, 4).is_none());
        assert!(UserCodeFormat::new("ab", 8, 4).is_none());
        assert!(UserCodeFormat::new("AB", 0, 4).is_none());
        assert!(UserCodeFormat::new("AB", 4, 0).is_some());
    }

    #[test]
    fn refresh_tokens_carry_their_family() {
        let key = FamilyKey::generate();
        let a = RefreshToken::generate(&key);
        let b = RefreshToken::generate(&key);
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 64);
        assert_eq!(a.family(), Some(key));
        assert_eq!(b.family().map(|k| k.grant_id()), Some(key.grant_id()));
        assert_ne!(FamilyKey::generate().grant_id(), key.grant_id());
        for bad in [
            "",
            "short",
            &"!".repeat(64),
            &"A".repeat(63),
            &"A".repeat(65),
        ] {
            assert_eq!(RefreshToken::new(bad).family(), None, "{bad:?}");
        }
        assert!(!format!("{key:?}").contains(&format!("{:?}", key.0)));
    }

    #[test]
    fn thumbprints_round_trip() {
        let t = Thumbprint::from_bytes([7; 32]);
        assert_eq!(Thumbprint::parse(&t.to_string()), Some(t));
        assert_eq!(Thumbprint::parse("abc"), None);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Thumbprint>(&json).unwrap(), t);
    }
}
