//! snmp driver (being written).
