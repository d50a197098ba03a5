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
//! Readers go through [`LedgerRead`] and [`LedgerWrite`] ([`api`]),
//! which speak the domain and name no backend; [`sqlite`] implements them
//! on a SQLite connection. No SQL is written outside this crate and the
//! grid crate's store.
//!
//! Invariant: no MQTT, no HTTP server, no Prometheus, no clock and no
//! collector configuration here: the time of a commit and the limits are
//! arguments, the caller acknowledges messages and counts outcomes.

pub mod api;
pub mod ingest;
pub mod sqlite;
pub mod store;

pub use api::{HistorySink, LedgerError, LedgerRead, LedgerWrite, write_history};
