//! Where counters stood when the last batch was spooled, and why one could
//! not be used at the next start. Shared by every counter source (RAPL,
//! NVML, remote devices), the spool that persists them and the agent's
//! start-up, so that none of them imports another for these types.

/// Where a counter stood when the last batch was spooled: restored at the
/// next start within the same boot, so that energy spent while the agent
/// was down is counted in its first reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Sensor name.
    pub sensor: String,
    /// Raw counter value, µJ.
    pub raw_uj: u64,
    /// When it was read, ms since the Unix epoch.
    pub at_ms: i64,
}

/// Why a checkpoint was not used (the downtime is then a gap, never a guess).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresumed {
    /// The agent was down longer than the counter can go without a wrap
    /// being missed at the assumed peak power.
    TooLong {
        /// Sensor.
        sensor: String,
        /// Downtime.
        down_ms: i64,
        /// Longest downtime that can be bridged.
        safe_ms: u64,
    },
    /// The checkpoint does not fit the counter (range changed, clock went back).
    Invalid {
        /// Sensor.
        sensor: String,
    },
}
