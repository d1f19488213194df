//! The clock the kernel side stamps allocations with.
//!
//! Reading CLOCK_MONOTONIC in a probe (`bpf_ktime_get_ns`) reads the TSC, about 35 ns of every
//! allocation on a VM, and tracing programs may not use the coarse clock. Ages only need
//! milliseconds, so a thread here writes CLOCK_MONOTONIC into a one-slot array every
//! [`TICK`] and the probes read the slot: allocations are stamped up to one tick early.
use std::{
    sync::mpsc::{self, RecvTimeoutError, Sender},
    thread::{self, JoinHandle},
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{Array, MapData},
};

use super::{CollectError, monotonic_ns};

pub const TICK: Duration = Duration::from_millis(10);

/// Keeps the kernel side's clock running until dropped.
pub struct KernelClock {
    stop: Option<Sender<()>>,
    ticker: Option<JoinHandle<()>>,
}

impl KernelClock {
    /// Sets the clock now and starts the thread that keeps it current.
    pub fn start(ebpf: &mut Ebpf) -> Result<Self, CollectError> {
        let map = ebpf
            .take_map("CLOCK")
            .ok_or(CollectError::MissingMap("CLOCK"))?;
        let mut clock: Array<MapData, u64> =
            Array::try_from(map).map_err(|source| CollectError::Map {
                map: "CLOCK",
                source,
            })?;
        clock
            .set(0, monotonic_ns(), 0)
            .map_err(|source| CollectError::Map {
                map: "CLOCK",
                source,
            })?;
        let (stop, stopped) = mpsc::channel::<()>();
        let ticker = thread::Builder::new()
            .name("leaktrace-clock".to_owned())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                    // A failed write leaves the previous time: ages come out a little long.
                    let _ = clock.set(0, monotonic_ns(), 0);
                }
            })
            .map_err(|e| CollectError::Thread(e.to_string()))?;
        Ok(Self {
            stop: Some(stop),
            ticker: Some(ticker),
        })
    }
}

impl Drop for KernelClock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}
