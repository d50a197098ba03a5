//! modbus driver (being written).
