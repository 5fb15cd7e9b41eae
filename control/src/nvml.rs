//! The real [`GpuSource`]: NVML through nvml-wrapper, which loads `libnvidia-ml.so` at run time
//! (so the binary builds and starts on machines without a GPU driver). Critical XID errors arrive
//! as NVML events and are counted per GPU between reads.

use std::collections::HashMap;
use std::time::Duration;

use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{EventSet, Nvml};

use meridian_clock::Clock;

use crate::gpu::{GpuError, GpuReading, GpuSource};

/// NVML, loaded once for the life of the process (the event set borrows it).
pub struct NvmlSource {
    nvml: &'static Nvml,
    clock: std::sync::Arc<dyn Clock>,
    events: Option<EventSet<'static>>,
    xids: HashMap<String, (u64, u64)>,
}

impl NvmlSource {
    /// Loads NVML and registers for critical XID events on every GPU that supports them.
    pub fn init(clock: std::sync::Arc<dyn Clock>) -> Result<NvmlSource, GpuError> {
        let nvml: &'static Nvml = Box::leak(Box::new(Nvml::init().map_err(|e| GpuError::new("NVML", e))?));
        let mut events = nvml.create_event_set().ok();
        let count = nvml.device_count().map_err(|e| GpuError::new("NVML device count", e))?;
        for i in 0..count {
            let (Some(set), Ok(device)) = (events.take(), nvml.device_by_index(i)) else {
                continue;
            };
            // A GPU without event support costs only its events; make a fresh set for the rest.
            events = device
                .register_events(EventTypes::CRITICAL_XID_ERROR, set)
                .ok()
                .or_else(|| nvml.create_event_set().ok());
        }
        Ok(NvmlSource {
            nvml,
            clock,
            events,
            xids: HashMap::new(),
        })
    }

    fn read(&self) -> Result<Vec<GpuReading>, NvmlError> {
        let mut out = Vec::new();
        for i in 0..self.nvml.device_count()? {
            let d = self.nvml.device_by_index(i)?;
            let uuid = d.uuid()?;
            let mem = d.memory_info()?;
            let (xid_errors, last) = self.xids.get(&uuid).copied().unwrap_or((0, 0));
            out.push(GpuReading {
                index: i,
                name: d.name().unwrap_or_default(),
                utilization: d.utilization_rates().map_or(0.0, |u| f64::from(u.gpu) / 100.0),
                memory_used_bytes: mem.used,
                memory_total_bytes: mem.total,
                temperature_celsius: d.temperature(TemperatureSensor::Gpu).unwrap_or(0),
                power_watts: d.power_usage().map_or(0.0, |mw| f64::from(mw) / 1000.0),
                // Not every GPU has ECC (consumer cards): absent counts as none.
                ecc_uncorrected: d
                    .total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
                    .unwrap_or(0),
                xid_errors,
                last_xid: (xid_errors > 0).then_some(last),
                uuid,
            });
        }
        Ok(out)
    }
}

impl GpuSource for NvmlSource {
    fn poll(&mut self, wait: Duration) -> Result<Vec<GpuReading>, GpuError> {
        match &self.events {
            Some(set) => {
                // Wait on XID events for the interval; each one is counted, then waiting resumes.
                let until = self.clock.now().saturating_add(meridian_clock::nanos(wait));
                loop {
                    let left = Duration::from_nanos(until.saturating_sub(self.clock.now()));
                    if left.is_zero() {
                        break;
                    }
                    match set.wait(left.as_millis().min(u128::from(u32::MAX)) as u32) {
                        Ok(ev) => {
                            if let Ok(uuid) = ev.device.uuid() {
                                let e = self.xids.entry(uuid).or_insert((0, 0));
                                e.0 += 1;
                                e.1 = match ev.event_data {
                                    Some(nvml_wrapper::enums::event::XidError::Value(v)) => v,
                                    _ => e.1,
                                };
                            }
                        }
                        Err(NvmlError::Timeout) => break,
                        Err(_) => {
                            std::thread::sleep(left);
                            break;
                        }
                    }
                }
            }
            None => std::thread::sleep(wait),
        }
        self.read().map_err(|e| GpuError::new("NVML read", e))
    }

    fn driver(&self) -> Option<String> {
        self.nvml.sys_driver_version().ok()
    }
}
