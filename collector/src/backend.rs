//! The one place the collector opens its storage backend. Everything else
//! reads and writes through the traits: the ledger's
//! [`LedgerRead`]/[`LedgerWrite`] and the grid store's
//! [`GridRead`]/[`GridWrite`], joined here as [`Db`]. No SQL and no
//! backend type outside this file (the ingest writer, which commits
//! through `vigie_ledger::ingest`, opens its own connection in `lib.rs`).

use crate::grid::store::{GridRead, GridWrite};
use std::path::Path;
pub use vigie_ledger::{LedgerError, LedgerRead, LedgerWrite};

/// A backend of the ledger and of the grid points: what the API, the
/// figures, the documents and the background tasks hold.
pub trait Db: LedgerRead + LedgerWrite + GridRead + GridWrite + Send {}

impl<T: LedgerRead + LedgerWrite + GridRead + GridWrite + Send + ?Sized> Db for T {}

/// An open backend.
pub type Backend = Box<dyn Db>;

/// Opens (creating if needed) the SQLite ledger at `path`, with the grid
/// table.
pub fn open(path: &Path) -> Result<Backend, LedgerError> {
    let conn = vigie_ledger::sqlite::open(path)?;
    crate::grid::store::init(&conn)?;
    Ok(Box::new(conn))
}

/// An in-memory ledger with the grid table (tests).
pub fn open_in_memory() -> Result<Backend, LedgerError> {
    let conn = vigie_ledger::sqlite::open_in_memory()?;
    crate::grid::store::init(&conn)?;
    Ok(Box::new(conn))
}

/// The grid store's failure as a ledger error (one error type for callers
/// that read both).
pub fn grid_err(e: crate::grid::store::GridStoreError) -> LedgerError {
    LedgerError::backend(e)
}
