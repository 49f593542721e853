//! Validated identifiers: user, device, conversation and client message ids.
//! Each is parsed once at the edge; holding one means it is valid.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::ProtoError;

const MAX_ID_LEN: usize = 64;

fn is_id_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')
}

fn check_id_alphabet(what: &'static str, s: &str) -> Result<(), ProtoError> {
    let reason = if s.is_empty() {
        "must not be empty".to_string()
    } else if s.len() > MAX_ID_LEN {
        format!("must be at most {MAX_ID_LEN} characters")
    } else if !s.bytes().all(is_id_char) {
        "may only contain A-Z a-z 0-9 _ . -".to_string()
    } else {
        return Ok(());
    };
    Err(ProtoError::InvalidId { what, reason })
}

/// The id types hold their text in an `Arc<str>`: an id is cloned many
/// times per message (into every write, entry and notify), and a clone of
/// it is a count, not an allocation and a copy.
macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ProtoError;
            fn try_from(s: String) -> Result<Self, ProtoError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.as_ref().to_owned()
            }
        }

        // Written and read as the string itself, with no `String` copy
        // in between; read, it is parsed (validated) like any other.
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Text;
                impl serde::de::Visitor<'_> for Text {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a ", stringify!($name), " string"))
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        $name::parse(s).map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(Text)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ProtoError;
            fn from_str(s: &str) -> Result<Self, ProtoError> {
                Self::parse(s)
            }
        }
    };
}

/// A user id: 1-64 characters of `A-Z a-z 0-9 _ . -`, the first a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(Arc<str>);
string_newtype!(UserId);

impl UserId {
    /// Parses a user id.
    pub fn parse(s: &str) -> Result<Self, ProtoError> {
        check_id_alphabet("user id", s)?;
        if !s.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(ProtoError::InvalidId {
                what: "user id",
                reason: "must start with a letter or digit".into(),
            });
        }
        Ok(UserId(s.into()))
    }
}

/// A device id: 1-64 characters of `A-Z a-z 0-9 _ . -`; `default` when absent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceId(Arc<str>);
string_newtype!(DeviceId);

impl DeviceId {
    /// Parses a device id.
    pub fn parse(s: &str) -> Result<Self, ProtoError> {
        check_id_alphabet("device id", s)?;
        Ok(DeviceId(s.into()))
    }
}

impl Default for DeviceId {
    fn default() -> Self {
        DeviceId("default".into())
    }
}

/// A client message id: 1-64 printable ASCII characters without space.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientMsgId(Arc<str>);
string_newtype!(ClientMsgId);

impl ClientMsgId {
    /// Parses a client message id.
    pub fn parse(s: &str) -> Result<Self, ProtoError> {
        let reason = if s.is_empty() {
            "must not be empty"
        } else if s.len() > MAX_ID_LEN {
            "must be at most 64 characters"
        } else if !s.bytes().all(|c| (0x21..=0x7e).contains(&c)) {
            "may only contain printable ASCII without space"
        } else {
            return Ok(ClientMsgId(s.into()));
        };
        Err(ProtoError::InvalidId {
            what: "client_msg_id",
            reason: reason.into(),
        })
    }
}

/// Whether a conversation is a direct chat or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvKind {
    /// Two users, id `dm:<a>:<b>`.
    Dm,
    /// A group, id `g:<opaque>`.
    Group,
}

/// A conversation id: `dm:<a>:<b>` with `a < b` in byte order, or `g:<opaque>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConvId(Arc<str>);
string_newtype!(ConvId);

impl ConvId {
    /// Parses a conversation id, checking that a `dm:` id is sorted and not a self-chat.
    pub fn parse(s: &str) -> Result<Self, ProtoError> {
        let invalid = |reason: &str| ProtoError::InvalidId {
            what: "conv_id",
            reason: reason.into(),
        };
        if let Some(pair) = s.strip_prefix("dm:") {
            let (a, b) = pair
                .split_once(':')
                .ok_or_else(|| invalid("a dm id is dm:<user>:<user>"))?;
            let (a, b) = (UserId::parse(a)?, UserId::parse(b)?);
            if a >= b {
                return Err(invalid("the users of a dm id must be distinct and sorted"));
            }
            Ok(ConvId(s.into()))
        } else if let Some(opaque) = s.strip_prefix("g:") {
            check_id_alphabet("conv_id", opaque)?;
            Ok(ConvId(s.into()))
        } else {
            Err(invalid("must start with dm: or g:"))
        }
    }

    /// The direct conversation between two distinct users (sorted, so both compute it).
    pub fn dm(a: &UserId, b: &UserId) -> Result<Self, ProtoError> {
        let (lo, hi) = match a.cmp(b) {
            std::cmp::Ordering::Less => (a, b),
            std::cmp::Ordering::Greater => (b, a),
            std::cmp::Ordering::Equal => {
                return Err(ProtoError::InvalidId {
                    what: "conv_id",
                    reason: "a direct conversation needs two distinct users".into(),
                });
            }
        };
        Ok(ConvId(format!("dm:{lo}:{hi}").into()))
    }

    /// A group id from an opaque token of the id alphabet.
    pub fn group(opaque: &str) -> Result<Self, ProtoError> {
        Self::parse(&format!("g:{opaque}"))
    }

    /// Direct or group.
    pub fn kind(&self) -> ConvKind {
        if self.0.starts_with("dm:") {
            ConvKind::Dm
        } else {
            ConvKind::Group
        }
    }

    /// The two members of a direct conversation; `None` for a group.
    pub fn dm_members(&self) -> Option<(UserId, UserId)> {
        let (a, b) = self.0.strip_prefix("dm:")?.split_once(':')?;
        Some((UserId(a.into()), UserId(b.into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_follow_the_alphabet_and_length_rules() {
        assert!(UserId::parse("alice").is_ok());
        assert!(UserId::parse("a.b-c_9").is_ok());
        assert!(UserId::parse(&"a".repeat(64)).is_ok());
        for bad in ["", "-alice", ".a", "al ice", "al:ice", "é", &"a".repeat(65)] {
            assert!(UserId::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn a_dm_id_is_the_sorted_pair_on_both_sides() {
        let (a, b) = (
            UserId::parse("bob").unwrap(),
            UserId::parse("alice").unwrap(),
        );
        let id = ConvId::dm(&a, &b).unwrap();
        assert_eq!(id.as_str(), "dm:alice:bob");
        assert_eq!(ConvId::dm(&b, &a).unwrap(), id);
        assert_eq!(id.kind(), ConvKind::Dm);
        assert_eq!(id.dm_members(), Some((b, a)));
    }

    #[test]
    fn ids_are_json_strings_and_are_validated_when_read() {
        let user = UserId::parse("alice").unwrap();
        assert_eq!(serde_json::to_string(&user).unwrap(), r#""alice""#);
        assert_eq!(serde_json::from_str::<UserId>(r#""alice""#).unwrap(), user);
        // An escaped string is read like a plain one.
        assert_eq!(
            serde_json::from_str::<UserId>(r#""al\u0069ce""#).unwrap(),
            user
        );
        let refused = serde_json::from_str::<UserId>(r#""-alice""#).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("must start with a letter or digit"),
            "{refused}"
        );
        assert!(serde_json::from_str::<ConvId>(r#""dm:bob:alice""#).is_err());
        assert!(serde_json::from_str::<ClientMsgId>("7").is_err());
        let conv = ConvId::parse("dm:alice:bob").unwrap();
        let text = serde_json::to_string(&conv).unwrap();
        assert_eq!(serde_json::from_str::<ConvId>(&text).unwrap(), conv);
    }

    #[test]
    fn unsorted_self_and_malformed_conv_ids_are_refused() {
        for bad in [
            "dm:bob:alice",
            "dm:alice:alice",
            "dm:alice",
            "dm::bob",
            "x:1",
            "g:",
            "g:a b",
        ] {
            let err = ConvId::parse(bad).unwrap_err();
            assert_eq!(err.code(), crate::ErrorCode::BadRequest, "{bad}");
        }
        assert!(ConvId::dm(&UserId::parse("a").unwrap(), &UserId::parse("a").unwrap()).is_err());
        assert_eq!(ConvId::parse("g:abc").unwrap().kind(), ConvKind::Group);
    }

    #[test]
    fn client_msg_ids_are_printable_ascii_without_space() {
        assert!(ClientMsgId::parse("c-42").is_ok());
        assert!(ClientMsgId::parse(&"~".repeat(64)).is_ok());
        for bad in ["", "a b", "tab\t", "é", &"x".repeat(65)] {
            let err = ClientMsgId::parse(bad).unwrap_err();
            assert!(err.to_string().contains("client_msg_id"), "{err}");
        }
    }

    #[test]
    fn device_ids_default_to_default() {
        assert_eq!(DeviceId::default().as_str(), "default");
        assert!(DeviceId::parse("phone-1").is_ok());
        assert!(DeviceId::parse("ph one").is_err());
    }
}
