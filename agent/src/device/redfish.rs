//! redfish driver (being written).
