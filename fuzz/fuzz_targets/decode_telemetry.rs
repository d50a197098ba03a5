//! Arbitrary payload bytes on a valid telemetry topic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigie_protocol::{Topic, TopicKind};

fuzz_target!(|payload: &[u8]| {
    let Ok(topic) = Topic::new("par1", "node-01", TopicKind::Telemetry) else {
        unreachable!("a valid topic");
    };
    vigie_fuzz::decode_and_check(&topic, payload, &vigie_fuzz::limits());
});
