//! Remote devices: rack PDUs, BMCs and facility meters, read over the
//! network (Redfish, SNMP, Modbus TCP) or through a local command (IPMI
//! DCMI). Each runs in its own task at its own period, so a slow BMC never
//! delays the host's counters.
//!
//! A driver ([`Device`]) only reads: it returns raw [`PointValue`]s. The
//! pure [`Tracker`] turns them into interval energy (counter differences
//! with wrap and reset handling, or integrated power when a point has no
//! energy register) and gauges; the runner stamps the time.
//!
//! One file per concern: `config` (`[[devices]]`), `driver` (the
//! [`Device`] trait and what it returns), `tracker` (the pure
//! [`Tracker`]), `runner` (the task, [`spawn`]), `fake` ([`FakePdu`],
//! [`FakeFacility`]), `scope` (one boundary per device scope, and none
//! for the host from a `counts_in = "site"` device); one module per
//! driver.

mod config;
mod driver;
mod fake;
pub mod ipmi;
pub mod modbus;
pub mod redfish;
mod runner;
pub mod scope;
pub mod snmp;
#[cfg(test)]
mod testing;
mod tracker;

pub use config::{CountsIn, DeviceConfig, PointTopology};
pub use driver::{Device, DeviceError, PointValue, PollFuture, Value};
pub use fake::{FakeFacility, FakePdu};
pub use runner::{DeviceOutput, spawn};
pub use tracker::{Tracker, TrackerEvent};

/// Makes the driver a device's configuration names.
pub fn build(cfg: &DeviceConfig) -> Result<Box<dyn Device>, DeviceError> {
    let sections = usize::from(cfg.redfish.is_some())
        + usize::from(cfg.ipmi.is_some())
        + usize::from(cfg.snmp.is_some())
        + usize::from(cfg.modbus.is_some());
    if sections != 1 {
        return Err(DeviceError::Config(format!(
            "device {}: exactly one driver section ([devices.redfish], .snmp, .modbus or .ipmi), found {sections}",
            cfg.name
        )));
    }
    if !cfg
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        || cfg.name.is_empty()
    {
        return Err(DeviceError::Config(format!(
            "device name {:?}: use [A-Za-z0-9._-] only",
            cfg.name
        )));
    }
    if let Some(c) = &cfg.redfish {
        return Ok(Box::new(redfish::build(c)?));
    }
    if let Some(c) = &cfg.ipmi {
        return Ok(Box::new(ipmi::build(c)?));
    }
    if let Some(c) = &cfg.snmp {
        return Ok(Box::new(snmp::build(c)?));
    }
    if let Some(c) = &cfg.modbus {
        return Ok(Box::new(modbus::build(c)?));
    }
    Err(DeviceError::Config(format!(
        "device {}: no driver",
        cfg.name
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_section_picks_the_driver() {
        let parse = |t: &str| toml::from_str::<crate::config::AgentConfig>(t).unwrap();
        let cfg = parse(
            "[[devices]]\nname = \"bmc-r12\"\nperiod = \"30s\"\n[devices.redfish]\nurl = \"https://10.0.0.5\"\n\n[[devices]]\nname = \"dcmi\"\n[devices.ipmi]\ntool = \"freeipmi\"\n",
        );
        assert_eq!(build(&cfg.devices[0]).unwrap().kind(), "redfish");
        assert_eq!(build(&cfg.devices[1]).unwrap().kind(), "ipmi");
        let none = parse("[[devices]]\nname = \"x\"\n");
        assert!(
            build(&none.devices[0])
                .err()
                .unwrap()
                .to_string()
                .contains("exactly one")
        );
        let two = parse(
            "[[devices]]\nname = \"x\"\n[devices.redfish]\nurl = \"https://a\"\n[devices.ipmi]\n",
        );
        assert!(build(&two.devices[0]).is_err());
        let bad_name = parse("[[devices]]\nname = \"a/b\"\n[devices.ipmi]\n");
        assert!(
            build(&bad_name.devices[0])
                .err()
                .unwrap()
                .to_string()
                .contains("A-Za-z0-9")
        );
    }
}
