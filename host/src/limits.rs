//! Per-component limits: the host's defaults, overridden per component, never above the host's.
//! Resolved once at start (pure), enforced on every call by the router and the runtime.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use trellis_proto as pb;

use crate::config::HostConfig;
use crate::runtime::Reuse;

/// What one component may use.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub max_memory_bytes: usize,
    pub timeout: Duration,
    /// `None`: only the host's admission limit applies.
    pub concurrency: Option<Arc<Semaphore>>,
    pub max_concurrent: u32,
    pub max_request_bytes: usize,
    /// Warm instances, when the component asked for them.
    pub reuse: Option<Reuse>,
}

/// Largest request payload by default: what NATS carries by default.
pub(crate) const DEFAULT_MAX_REQUEST: usize = 1 << 20;

impl Limits {
    /// The limits for a component that asked for `requested`, on a host configured by `host`.
    pub fn resolve(
        requested: Option<&pb::ComponentLimits>,
        host: &HostConfig,
    ) -> Result<Self, String> {
        let r = requested.cloned().unwrap_or_default();
        let host_memory = host.runtime.max_memory_bytes;
        let max_memory_bytes = match usize::try_from(r.max_memory_bytes).unwrap_or(usize::MAX) {
            0 => host_memory,
            m if m > host_memory => {
                return Err(format!(
                    "max memory {} MiB exceeds this host's limit of {} MiB",
                    m >> 20,
                    host_memory >> 20
                ));
            }
            m => m,
        };
        let timeout = match r.timeout_ms {
            0 => host.call_timeout,
            ms => Duration::from_millis(u64::from(ms)).min(host.call_timeout),
        };
        let concurrency =
            (r.max_concurrent > 0).then(|| Arc::new(Semaphore::new(r.max_concurrent as usize)));
        let max_request_bytes = match usize::try_from(r.max_request_bytes).unwrap_or(usize::MAX) {
            0 => DEFAULT_MAX_REQUEST,
            n => n,
        };
        let max_concurrent = r.max_concurrent;
        let reuse = r.reuse.map(|r| Reuse {
            max_calls: if r.max_calls == 0 { Reuse::DEFAULT.max_calls } else { r.max_calls },
            idle: match r.idle_ms {
                0 => Reuse::DEFAULT.idle,
                ms => Duration::from_millis(u64::from(ms)),
            },
            // A shared instance takes as many calls at once as the component may have.
            at_once: match max_concurrent {
                0 => Reuse::DEFAULT.at_once,
                n => n,
            },
        });
        Ok(Self {
            max_memory_bytes,
            timeout,
            concurrency,
            max_concurrent: r.max_concurrent,
            max_request_bytes,
            reuse,
        })
    }

    /// As reported in the inventory.
    pub fn describe(&self) -> pb::ComponentLimits {
        pb::ComponentLimits {
            max_memory_bytes: self.max_memory_bytes as u64,
            timeout_ms: u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX),
            max_concurrent: self.max_concurrent,
            max_request_bytes: self.max_request_bytes as u64,
            reuse: self.reuse.map(|r| pb::Reuse {
                max_calls: r.max_calls,
                idle_ms: u32::try_from(r.idle.as_millis()).unwrap_or(u32::MAX),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_overrides_and_caps() {
        let host = HostConfig::new("nats://x", "l");
        let d = Limits::resolve(None, &host).unwrap();
        assert_eq!(d.max_memory_bytes, host.runtime.max_memory_bytes);
        assert_eq!(d.timeout, host.call_timeout);
        assert!(d.concurrency.is_none());

        let ask = pb::ComponentLimits {
            max_memory_bytes: 2 << 20,
            timeout_ms: 500,
            max_concurrent: 3,
            max_request_bytes: 10,
            reuse: Some(pb::Reuse { max_calls: 0, idle_ms: 250 }),
        };
        let l = Limits::resolve(Some(&ask), &host).unwrap();
        assert_eq!(
            (l.max_memory_bytes, l.timeout, l.max_request_bytes),
            (2 << 20, Duration::from_millis(500), 10)
        );
        assert_eq!(l.concurrency.map(|s| s.available_permits()), Some(3));
        let reuse = Reuse {
            max_calls: Reuse::DEFAULT.max_calls,
            idle: Duration::from_millis(250),
            at_once: 3,
        };
        assert_eq!(l.reuse, Some(reuse), "zero fields take the defaults");
        assert_eq!(d.reuse, None, "off unless asked for");

        let long = pb::ComponentLimits { timeout_ms: u32::MAX, ..Default::default() };
        assert_eq!(Limits::resolve(Some(&long), &host).unwrap().timeout, host.call_timeout);
        let huge = pb::ComponentLimits { max_memory_bytes: u64::MAX, ..Default::default() };
        assert!(
            Limits::resolve(Some(&huge), &host).unwrap_err().contains("exceeds this host's limit")
        );
    }
}
