//! Topic layout: `vigie/v1/{site}/{host}/{telemetry|status|meta}`.

use crate::{IdError, TOPIC_PREFIX, is_valid_host_or_site};
use std::fmt;

/// The three kinds of message an agent publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// Batches of interval energy (QoS 1, not retained).
    Telemetry,
    /// Online/offline (retained; offline is also the MQTT last will).
    Status,
    /// Host inventory (retained).
    Meta,
}

impl TopicKind {
    /// The last topic level for this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            TopicKind::Telemetry => "telemetry",
            TopicKind::Status => "status",
            TopicKind::Meta => "meta",
        }
    }
}

/// A parsed vigie topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    /// Site the host belongs to.
    pub site: String,
    /// Host that published.
    pub host: String,
    /// Message kind.
    pub kind: TopicKind,
}

/// Why a topic is not a vigie v1 topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Not under `vigie/v1/`, or not five levels.
    #[error("not a vigie/v1/{{site}}/{{host}}/{{kind}} topic")]
    Shape,
    /// Last level is not telemetry, status or meta.
    #[error("unknown message kind {0:?}")]
    Kind(String),
    /// Site or host level is not a valid identifier.
    #[error("bad site or host in topic: {0}")]
    Id(#[from] IdError),
}

impl Topic {
    /// Builds a topic, checking site and host.
    pub fn new(site: &str, host: &str, kind: TopicKind) -> Result<Self, IdError> {
        is_valid_host_or_site(site)?;
        is_valid_host_or_site(host)?;
        Ok(Topic {
            site: site.to_owned(),
            host: host.to_owned(),
            kind,
        })
    }

    /// Parses a topic string as received from the broker.
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        let rest = s
            .strip_prefix(TOPIC_PREFIX)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or(TopicError::Shape)?;
        let mut parts = rest.split('/');
        let (Some(site), Some(host), Some(kind), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TopicError::Shape);
        };
        let kind = match kind {
            "telemetry" => TopicKind::Telemetry,
            "status" => TopicKind::Status,
            "meta" => TopicKind::Meta,
            other => return Err(TopicError::Kind(other.chars().take(32).collect())),
        };
        is_valid_host_or_site(site)?;
        is_valid_host_or_site(host)?;
        Ok(Topic {
            site: site.to_owned(),
            host: host.to_owned(),
            kind,
        })
    }

    /// The subscription filter for one kind across all sites and hosts, or one site.
    pub fn filter(site: Option<&str>, kind: TopicKind) -> String {
        format!("{TOPIC_PREFIX}/{}/+/{}", site.unwrap_or("+"), kind.as_str())
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOPIC_PREFIX}/{}/{}/{}",
            self.site,
            self.host,
            self.kind.as_str()
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = Topic::new("par1", "node-7", TopicKind::Telemetry).unwrap();
        assert_eq!(t.to_string(), "vigie/v1/par1/node-7/telemetry");
        assert_eq!(Topic::parse(&t.to_string()).unwrap(), t);
        assert_eq!(
            Topic::parse("vigie/v1/par1/node-7/status").unwrap().kind,
            TopicKind::Status
        );
    }

    #[test]
    fn refuses_bad_topics() {
        assert_eq!(
            Topic::parse("vigie/v2/a/b/telemetry"),
            Err(TopicError::Shape)
        );
        assert_eq!(Topic::parse("vigie/v1/a/b"), Err(TopicError::Shape));
        assert_eq!(
            Topic::parse("vigie/v1/a/b/telemetry/x"),
            Err(TopicError::Shape)
        );
        assert!(matches!(
            Topic::parse("vigie/v1/a/b/power"),
            Err(TopicError::Kind(_))
        ));
        assert!(matches!(
            Topic::parse("vigie/v1/a/+/telemetry"),
            Err(TopicError::Id(_))
        ));
        assert!(matches!(
            Topic::parse("vigie/v1//b/telemetry"),
            Err(TopicError::Id(_))
        ));
    }

    #[test]
    fn filters() {
        assert_eq!(
            Topic::filter(None, TopicKind::Telemetry),
            "vigie/v1/+/+/telemetry"
        );
        assert_eq!(
            Topic::filter(Some("par1"), TopicKind::Meta),
            "vigie/v1/par1/+/meta"
        );
    }
}
