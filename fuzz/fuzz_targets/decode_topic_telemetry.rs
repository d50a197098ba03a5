//! Arbitrary topic and payload, split at the first newline (the seeds are
//! `vigie/v1/par1/node-01/telemetry\n{...}`), processed as the collector's
//! ingest does: parse the topic (as lossy UTF-8, like the MQTT module),
//! then decode telemetry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigie_protocol::{Rejection, Topic, TopicKind};

fuzz_target!(|data: &[u8]| {
    let cut = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let topic_text = String::from_utf8_lossy(&data[..cut]);
    let payload = data.get(cut + 1..).unwrap_or_default();
    match Topic::parse(&topic_text) {
        Err(e) => vigie_fuzz::check_rejected(&Rejection::BadTopic(e)),
        Ok(topic) => {
            // A parsed topic is exactly the text it came from, so the
            // host and site it names are the ones the broker routed on.
            assert_eq!(topic.to_string(), topic_text);
            if topic.kind == TopicKind::Telemetry {
                vigie_fuzz::decode_and_check(&topic, payload, &vigie_fuzz::limits());
            }
        }
    }
});
