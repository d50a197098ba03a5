//! ipmi driver (being written).
