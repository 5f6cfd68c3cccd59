//! The events the module publishes, by name. Every workflow step that publishes one names it
//! through [`EventName`], so a misspelt name is a compile error and the list below is the whole
//! vocabulary (the webhook filter and `--help` read it from here).

use std::fmt;

/// One kind of event keyward publishes. Data carries at least `{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventName {
    ApiKeyCreated,
    /// A new title, or sales channels added or removed.
    ApiKeyUpdated,
    ApiKeyRevoked,
    /// `{id, previous_id}`.
    ApiKeyRolled,
    ApiKeyDeleted,
    /// `{id, expires_at}`, a set time before the key expires (7 days unless configured).
    ApiKeyExpiring,
    /// `{id, expires_at}`, once the key has expired.
    ApiKeyExpired,
    SalesChannelCreated,
    SalesChannelUpdated,
    SalesChannelDeleted,
    /// `{id, email}`.
    UserCreated,
}

impl EventName {
    /// Every event, in the order the docs list them.
    pub const ALL: [EventName; 11] = [
        EventName::ApiKeyCreated,
        EventName::ApiKeyUpdated,
        EventName::ApiKeyRevoked,
        EventName::ApiKeyRolled,
        EventName::ApiKeyDeleted,
        EventName::ApiKeyExpiring,
        EventName::ApiKeyExpired,
        EventName::SalesChannelCreated,
        EventName::SalesChannelUpdated,
        EventName::SalesChannelDeleted,
        EventName::UserCreated,
    ];

    /// The name on the wire (`api_key.created`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::ApiKeyCreated => "api_key.created",
            EventName::ApiKeyUpdated => "api_key.updated",
            EventName::ApiKeyRevoked => "api_key.revoked",
            EventName::ApiKeyRolled => "api_key.rolled",
            EventName::ApiKeyDeleted => "api_key.deleted",
            EventName::ApiKeyExpiring => "api_key.expiring",
            EventName::ApiKeyExpired => "api_key.expired",
            EventName::SalesChannelCreated => "sales_channel.created",
            EventName::SalesChannelUpdated => "sales_channel.updated",
            EventName::SalesChannelDeleted => "sales_channel.deleted",
            EventName::UserCreated => "user.created",
        }
    }

    /// The event with this wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// Every wire name, comma-separated (for messages and `--help`).
    pub fn list() -> String {
        Self::ALL.map(EventName::as_str).join(", ")
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<EventName> for String {
    fn from(name: EventName) -> Self {
        name.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_and_is_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for e in EventName::ALL {
            assert_eq!(EventName::parse(e.as_str()), Some(e));
            assert!(seen.insert(e.as_str()));
        }
        assert_eq!(EventName::parse("api_key.nope"), None);
    }
}
