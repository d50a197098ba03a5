//! Values and a scripted device shared by the device module's tests.

use super::{Device, DeviceError, PointValue, PollFuture, Value};

pub(crate) fn counter(point: &str, raw: u64) -> PointValue {
    PointValue {
        point: point.into(),
        value: Value::EnergyCounter {
            raw,
            // Tenths of kWh, as APC reports device energy.
            uj_per_unit: 360_000_000_000,
            max_raw: u64::from(u32::MAX),
        },
    }
}

pub(crate) fn power(point: &str, w: f64) -> PointValue {
    PointValue {
        point: point.into(),
        value: Value::PowerW(w),
    }
}

/// A device that replays scripted polls.
pub(crate) struct Scripted(pub(crate) Vec<Result<Vec<PointValue>, DeviceError>>);
impl Device for Scripted {
    fn kind(&self) -> &'static str {
        "script"
    }
    fn source(&self) -> String {
        "test://scripted".into()
    }
    fn poll(&mut self) -> PollFuture<'_> {
        let next = if self.0.is_empty() {
            Err(DeviceError::Unreachable("script over".into()))
        } else {
            self.0.remove(0)
        };
        Box::pin(async move { next })
    }
}
