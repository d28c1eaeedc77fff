//! The likely cause of a difference, where the evidence shows one.

use ferry_engine::route::Slot;

use crate::diff::{Cause, Detail, DiffKind, Difference, TtlChange};
use crate::side::Side;

/// What the causes are judged against.
pub(crate) struct Evidence<'a> {
    pub(crate) target: &'a Side,
    /// Target clock minus source clock.
    pub(crate) skew_ms: f64,
    pub(crate) tolerance_ms: i64,
    /// Both clocks when the key was read: (source, target) Unix ms.
    pub(crate) now_ms: (i64, i64),
}

/// Sets the cause of `diff` when the evidence points at one (a cause found while
/// comparing, such as a duplicated list tail, is kept).
pub(crate) fn diagnose(diff: &mut Difference, evidence: &Evidence) {
    if diff.cause.is_some() {
        return;
    }
    let skew = evidence.skew_ms.round() as i64;
    let slack = evidence.tolerance_ms + skew.abs();
    diff.cause = match diff.kind {
        DiffKind::Missing => {
            let expire_at = diff.source.as_ref().and_then(|f| f.expire_at_ms);
            match expire_at.map(|at| at - evidence.now_ms.0) {
                Some(remaining) if remaining <= slack => Some(Cause::ExpiredInFlight {
                    remaining_ttl_ms: remaining,
                }),
                _ => eviction(diff, evidence.target),
            }
        }
        DiffKind::Extra => {
            let expire_at = diff.target.as_ref().and_then(|f| f.expire_at_ms);
            match expire_at.map(|at| at - evidence.now_ms.1) {
                Some(remaining) if remaining <= slack => Some(Cause::ExpiredInFlight {
                    remaining_ttl_ms: remaining,
                }),
                _ => None,
            }
        }
        DiffKind::Ttl => match &diff.detail {
            Some(Detail::Ttl {
                change: TtlChange::Changed,
                delta_ms: Some(delta),
                ..
            }) if skew.abs() > evidence.tolerance_ms
                && (delta - skew).abs() <= evidence.tolerance_ms =>
            {
                Some(Cause::ClockSkew { skew_ms: skew })
            }
            _ => None,
        },
        // A key that vanished while its value was read may have been evicted meanwhile.
        DiffKind::Value if matches!(diff.detail, Some(Detail::Unreadable { .. })) => {
            eviction(diff, evidence.target)
        }
        DiffKind::Type | DiffKind::Value => None,
    };
}

/// Eviction, when the target node owning the key reports evicted keys or runs a policy
/// that may evict it.
pub(crate) fn eviction(diff: &Difference, target: &Side) -> Option<Cause> {
    let slot = Slot::new(diff.slot).ok()?;
    let facts = &target.shard_for(slot).ok()?.facts;
    let has_ttl = diff
        .source
        .as_ref()
        .is_some_and(|f| f.expire_at_ms.is_some());
    (facts.evicted_keys > 0 || facts.may_evict(has_ttl)).then(|| Cause::Evicted {
        node: facts.addr.to_string(),
        evicted_keys: facts.evicted_keys,
        maxmemory_policy: facts.maxmemory_policy.clone(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::diff::Facts;
    use crate::key::{Key, KeyType};
    use crate::side::{NodeAddr, NodeFacts};

    fn target(policy: &str, evicted_keys: u64) -> Side {
        Side::fixed(NodeFacts {
            addr: NodeAddr {
                host: "127.0.0.1".into(),
                port: 7000,
            },
            version: "7.0.15".into(),
            valkey_version: None,
            evicted_keys,
            expired_keys: 0,
            maxmemory_policy: policy.into(),
            keys: BTreeMap::new(),
            clock_offset_ms: 0.0,
            clock_uncertainty_ms: 0.0,
        })
    }

    fn diff(kind: DiffKind, source_expiry: Option<i64>, detail: Option<Detail>) -> Difference {
        let facts = |expire_at_ms| Facts {
            key_type: KeyType::String,
            expire_at_ms,
            len: None,
        };
        Difference {
            key: Key(b"k".to_vec()),
            key_escaped: false,
            db: 0,
            slot: 0,
            kind,
            key_type: KeyType::String,
            source: Some(facts(source_expiry)),
            target: (kind != DiffKind::Missing).then(|| facts(None)),
            detail,
            cause: None,
        }
    }

    fn evidence(target: &Side, skew_ms: f64) -> Evidence<'_> {
        Evidence {
            target,
            skew_ms,
            tolerance_ms: 1_000,
            now_ms: (1_000_000, 1_000_000),
        }
    }

    #[test]
    fn missing_keys_about_to_expire_expired_in_flight() {
        let side = target("noeviction", 0);
        let mut d = diff(DiffKind::Missing, Some(1_000_500), None);
        diagnose(&mut d, &evidence(&side, 0.0));
        assert_eq!(
            d.cause,
            Some(Cause::ExpiredInFlight {
                remaining_ttl_ms: 500
            })
        );
        let mut far = diff(DiffKind::Missing, Some(9_000_000), None);
        diagnose(&mut far, &evidence(&side, 0.0));
        assert_eq!(far.cause, None);
    }

    #[test]
    fn eviction_needs_evidence_and_a_policy_that_applies_to_the_key() {
        let volatile = target("volatile-lru", 0);
        let mut persistent = diff(DiffKind::Missing, None, None);
        diagnose(&mut persistent, &evidence(&volatile, 0.0));
        assert_eq!(persistent.cause, None);
        let mut expiring = diff(DiffKind::Missing, Some(9_000_000), None);
        diagnose(&mut expiring, &evidence(&volatile, 0.0));
        assert!(matches!(expiring.cause, Some(Cause::Evicted { .. })));
        let counted = target("noeviction", 12);
        let mut d = diff(DiffKind::Missing, None, None);
        diagnose(&mut d, &evidence(&counted, 0.0));
        assert!(matches!(
            d.cause,
            Some(Cause::Evicted {
                evicted_keys: 12,
                ..
            })
        ));
    }

    #[test]
    fn ttls_apart_by_the_clock_skew_blame_the_skew() {
        let side = target("noeviction", 0);
        let ttl = |delta| {
            diff(
                DiffKind::Ttl,
                Some(5_000_000),
                Some(Detail::Ttl {
                    change: TtlChange::Changed,
                    source_expire_at_ms: Some(5_000_000),
                    target_expire_at_ms: Some(5_000_000 + delta),
                    delta_ms: Some(delta),
                }),
            )
        };
        let mut skewed = ttl(30_200);
        diagnose(&mut skewed, &evidence(&side, 30_000.0));
        assert_eq!(skewed.cause, Some(Cause::ClockSkew { skew_ms: 30_000 }));
        let mut other = ttl(90_000);
        diagnose(&mut other, &evidence(&side, 30_000.0));
        assert_eq!(other.cause, None);
        let mut no_skew = ttl(5_000);
        diagnose(&mut no_skew, &evidence(&side, 0.0));
        assert_eq!(no_skew.cause, None);
    }
}
