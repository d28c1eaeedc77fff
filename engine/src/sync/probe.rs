//! Reading expiries back from a source master, for the writes the stream alone cannot give
//! an exact expiry ([`Probe`](super::expiry::Probe)): one pipeline per batch, `PTTL key` then `TIME` per probe.
//!
//! The source's expiry of a key is its clock right after `PTTL` plus the `PTTL`, rounded up
//! to the next millisecond: never earlier than the source's own expiry, at most a
//! millisecond later. The read comes after the write it completes ran on the source, so it
//! may see later changes of that key too; those changes come later in the stream and are
//! applied after it, which leaves the target as the source once they are.

use std::time::Duration;

use super::stream::Write;
use crate::endpoint::Endpoint;
use crate::link::{Link, LinkError};
use crate::replica::ReplOffset;
use crate::resp::Frame;
use crate::route::NodeAddr;

/// Round trips of `TIME` the clock offset is taken from.
const CLOCK_SAMPLES: usize = 5;

/// Why the source's expiries could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("{addr} refused {command}: {reply}")]
    Refused {
        addr: String,
        command: &'static str,
        reply: String,
    },
}

/// A link to a source shard's master for expiry reads, opened when first needed.
pub(super) struct Prober {
    endpoint: Endpoint,
    master: NodeAddr,
    timeout: Duration,
    link: Option<Link>,
}

impl Prober {
    pub(super) fn new(endpoint: Endpoint, master: NodeAddr, timeout: Duration) -> Self {
        Prober {
            endpoint,
            master,
            timeout,
            link: None,
        }
    }

    /// The shard's master changed (a failover): later reads go there.
    pub(super) fn set_master(&mut self, master: NodeAddr) {
        if master != self.master {
            self.master = master;
            self.link = None;
        }
    }

    async fn link(&mut self) -> Result<&mut Link, ProbeError> {
        if self.link.is_none() {
            let link = Link::connect(
                &self.master.host,
                self.master.port,
                &self.endpoint,
                self.timeout,
            )
            .await?;
            self.link = Some(link);
        }
        Ok(self.link.as_mut().expect("connected"))
    }

    /// The master's `master_repl_offset`: every command the stream carries up to it had run
    /// before this call.
    pub(super) async fn master_offset(&mut self) -> Result<ReplOffset, ProbeError> {
        let result = self.read_offset().await;
        if result.is_err() {
            self.link = None;
        }
        result
    }

    async fn read_offset(&mut self) -> Result<ReplOffset, ProbeError> {
        let link = self.link().await?;
        let addr = link.addr().to_string();
        let reply = link.call(&["INFO", "replication"]).await?;
        let text = match reply {
            Frame::Bulk(Some(text)) => String::from_utf8_lossy(&text).into_owned(),
            other => {
                return Err(ProbeError::Refused {
                    addr,
                    command: "INFO replication",
                    reply: format!("{other:?}"),
                })
            }
        };
        let info = crate::deployment::parse_info(&text);
        info.get("master_repl_offset")
            .and_then(|o| o.parse().ok())
            .map(ReplOffset::new)
            .ok_or(ProbeError::Refused {
                addr,
                command: "INFO replication",
                reply: "no master_repl_offset".into(),
            })
    }

    /// How far the master's clock is ahead of this host's, in milliseconds: `TIME` against
    /// the local clock at the middle of the round trip, from the quickest of a few round
    /// trips (a slow one says little), and 0 when that round trip cannot tell the clocks
    /// apart.
    pub(super) async fn clock_offset_ms(&mut self) -> Result<i64, ProbeError> {
        let result = self.read_clock_offset().await;
        if result.is_err() {
            self.link = None;
        }
        result
    }

    async fn read_clock_offset(&mut self) -> Result<i64, ProbeError> {
        let link = self.link().await?;
        let addr = link.addr().to_string();
        let mut best: Option<(u64, i64)> = None;
        for _ in 0..CLOCK_SAMPLES {
            let sent = crate::replica::unix_ms();
            let reply = link.call(&["TIME"]).await?;
            let received = crate::replica::unix_ms();
            let source_ms = source_clock(&reply).ok_or_else(|| ProbeError::Refused {
                addr: addr.clone(),
                command: "TIME",
                reply: format!("{reply:?}"),
            })?;
            let round_trip = received.saturating_sub(sent);
            let offset = source_ms as i64 - (sent + received).div_ceil(2) as i64;
            if best.is_none_or(|(quickest, _)| round_trip < quickest) {
                best = Some((round_trip, offset));
            }
        }
        let (round_trip, offset) = best.expect("sampled");
        Ok(if offset.unsigned_abs() <= round_trip / 2 + 1 {
            0
        } else {
            offset
        })
    }

    /// Reads the expiry of every probe of `writes` and puts it in place of its placeholder.
    pub(super) async fn resolve(
        &mut self,
        writes: &mut [(Write, ReplOffset)],
    ) -> Result<(), ProbeError> {
        let result = self.read(writes).await;
        if result.is_err() {
            self.link = None;
        }
        result
    }

    async fn read(&mut self, writes: &mut [(Write, ReplOffset)]) -> Result<(), ProbeError> {
        let link = self.link().await?;
        let mut count = 0;
        for (write, _) in writes.iter() {
            for probe in &write.probes {
                link.queue(&[&b"PTTL"[..], &probe.key]);
                link.queue(&["TIME"]);
                count += 1;
            }
        }
        if count == 0 {
            return Ok(());
        }
        let replies = link.exchange().await?;
        let addr = link.addr().to_string();
        let mut replies = replies.chunks(2);
        for (write, _) in writes.iter_mut() {
            let probes = std::mem::take(&mut write.probes);
            let mut resolved: Vec<(usize, Option<crate::resp::Command>)> = Vec::new();
            for probe in &probes {
                let pair = replies.next().expect("two replies per probe");
                let (pttl, now_ms) = expiry_reading(pair).ok_or_else(|| ProbeError::Refused {
                    addr: addr.clone(),
                    command: "PTTL/TIME",
                    reply: format!("{pair:?}"),
                })?;
                resolved.push((probe.at, probe.resolve(pttl, now_ms)));
            }
            // From the last placeholder back, so that removing one moves none still to come.
            for (at, command) in resolved.into_iter().rev() {
                match command {
                    Some(command) => write.commands[at] = command,
                    None => {
                        write.commands.remove(at);
                    }
                }
            }
        }
        Ok(())
    }
}

/// `PTTL`'s reply and the `TIME` right after it, in Unix milliseconds rounded up.
fn expiry_reading(pair: &[Frame]) -> Option<(i64, u64)> {
    let [Frame::Integer(pttl), time] = pair else {
        return None;
    };
    Some((*pttl, source_clock(time)?))
}

/// A `TIME` reply in Unix milliseconds, rounded up.
fn source_clock(reply: &Frame) -> Option<u64> {
    let Frame::Array(Some(time)) = reply else {
        return None;
    };
    let number = |frame: &Frame| -> Option<u64> {
        match frame {
            Frame::Bulk(Some(text)) => std::str::from_utf8(text).ok()?.parse().ok(),
            _ => None,
        }
    };
    let seconds = number(time.first()?)?;
    let micros = number(time.get(1)?)?;
    Some(seconds * 1000 + micros.div_ceil(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn the_source_clock_is_rounded_up() {
        let time = |s: &str, us: &str| {
            Frame::Array(Some(vec![
                Frame::Bulk(Some(Bytes::from(s.to_string()))),
                Frame::Bulk(Some(Bytes::from(us.to_string()))),
            ]))
        };
        assert_eq!(
            expiry_reading(&[Frame::Integer(500), time("1700000000", "1")]),
            Some((500, 1_700_000_000_001))
        );
        assert_eq!(
            expiry_reading(&[Frame::Integer(-2), time("1700000000", "0")]),
            Some((-2, 1_700_000_000_000))
        );
        assert_eq!(
            expiry_reading(&[Frame::Error(Bytes::from_static(b"NOPERM")), time("1", "0")]),
            None
        );
    }
}
