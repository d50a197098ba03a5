//! vigie-ledger: the exact microjoule ledger.
//!
//! [`store`] holds the schema and every read and write of the ledger
//! (energy buckets, batch keys with their digests, hosts, registers,
//! quarantine, known losses in [`store::losses`], hand readings in
//! [`store::manual`], imported histories in [`store::history`]);
//! [`ingest`] decodes, authenticates, validates, dedupes and commits
//! groups of messages in one transaction each, and says what became of
//! each message.
//!
//! Invariant: no MQTT, no HTTP server, no Prometheus, no clock and no
//! collector configuration here: the time of a commit and the limits are
//! arguments, the caller acknowledges messages and counts outcomes.

pub mod ingest;
pub mod store;
