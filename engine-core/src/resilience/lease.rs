//! Leases with fencing tokens (`shared/docs/resilience.md`, "Leases and fencing"; rule numbers
//! below are that section's), as a state machine over one lease name. A store keeps
//! [`LeaseState`] in a row and applies these transitions inside its transaction, with the store's
//! clock as `now`.
//!
//! | state | on | result |
//! |---|---|---|
//! | free, expired or broken-and-expired | `acquire(holder, ttl)` | granted, token = last + 1 (never reused) |
//! | held, unexpired | `acquire` | `Held { holder, until }` |
//! | held by `holder` with `token`, unexpired | `renew(holder, token, ttl)` | expiry moved, token kept |
//! | otherwise | `renew` | `Lost` |
//! | held by `holder` with `token` | `release` | free at once |
//! | held | `break_lease` | ended; no new grant before its old expiry (rule 2) |
//!
//! [`Fence`] is the resource's side (rule 3): it refuses a write whose token is below the
//! highest it has seen.

use super::Nanos;

/// One lease name's row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseState {
    pub holder: Option<String>,
    /// The last token granted; the next grant gets one more.
    pub token: u64,
    pub expires_at: Nanos,
    /// Set by `break_lease`: nobody holds it, but no grant before `expires_at`.
    pub broken: bool,
}

/// A granted lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub token: u64,
    pub expires_at: Nanos,
}

/// Why a lease verb was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseRefused {
    /// Someone holds it (or it was broken) until then.
    Held {
        holder: Option<String>,
        until: Nanos,
    },
    /// The caller's lease expired, was released or broken, or was granted to someone else.
    Lost,
}

impl LeaseState {
    fn live(&self, now: Nanos) -> bool {
        now < self.expires_at && (self.holder.is_some() || self.broken)
    }

    /// Grants the lease to `holder` for `ttl` if nobody holds it (rule 1).
    pub fn acquire(&mut self, holder: &str, now: Nanos, ttl: Nanos) -> Result<Grant, LeaseRefused> {
        if self.live(now) {
            return Err(LeaseRefused::Held {
                holder: self.holder.clone(),
                until: self.expires_at,
            });
        }
        self.token += 1;
        self.holder = Some(holder.to_owned());
        self.expires_at = now.saturating_add(ttl.max(1));
        self.broken = false;
        Ok(Grant {
            token: self.token,
            expires_at: self.expires_at,
        })
    }

    fn holds(&self, holder: &str, token: u64, now: Nanos) -> bool {
        self.holder.as_deref() == Some(holder) && self.token == token && now < self.expires_at
    }

    /// Extends the caller's unexpired lease; the token stays (rule 2).
    pub fn renew(
        &mut self,
        holder: &str,
        token: u64,
        now: Nanos,
        ttl: Nanos,
    ) -> Result<Grant, LeaseRefused> {
        if !self.holds(holder, token, now) {
            return Err(LeaseRefused::Lost);
        }
        self.expires_at = now.saturating_add(ttl.max(1));
        Ok(Grant {
            token,
            expires_at: self.expires_at,
        })
    }

    /// Frees the caller's lease at once.
    pub fn release(&mut self, holder: &str, token: u64, now: Nanos) -> Result<(), LeaseRefused> {
        if !self.holds(holder, token, now) {
            return Err(LeaseRefused::Lost);
        }
        self.holder = None;
        self.expires_at = now;
        Ok(())
    }

    /// Ends the lease whoever holds it (an operator's verb); no new grant before its old expiry.
    pub fn break_lease(&mut self) {
        if self.holder.take().is_some() {
            self.broken = true;
        }
    }
}

/// The resource's check (rule 3): the highest token seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fence {
    highest: u64,
}

impl Fence {
    /// Accepts a write under `token` unless a newer holder has written already.
    pub fn admit(&mut self, token: u64) -> bool {
        if token < self.highest {
            return false;
        }
        self.highest = token;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_every_grant_gets_a_larger_token() {
        let mut lease = LeaseState::default();
        let a = lease.acquire("a", 0, 10).unwrap();
        assert_eq!(
            lease.acquire("b", 5, 10),
            Err(LeaseRefused::Held {
                holder: Some("a".into()),
                until: 10
            })
        );
        let b = lease.acquire("b", 10, 10).expect("a's lease ran out");
        assert!(b.token > a.token);
        assert_eq!(lease.renew("a", a.token, 11, 10), Err(LeaseRefused::Lost));
        assert_eq!(lease.renew("b", b.token, 15, 10).unwrap().expires_at, 25);
        lease.release("b", b.token, 16).unwrap();
        let c = lease.acquire("a", 16, 10).expect("released: free at once");
        assert_eq!(c.token, b.token + 1);
    }

    #[test]
    fn a_broken_lease_blocks_new_grants_until_its_old_expiry() {
        let mut lease = LeaseState::default();
        let a = lease.acquire("a", 0, 100).unwrap();
        lease.break_lease();
        assert_eq!(lease.renew("a", a.token, 1, 100), Err(LeaseRefused::Lost));
        assert!(matches!(
            lease.acquire("b", 50, 100),
            Err(LeaseRefused::Held {
                holder: None,
                until: 100
            })
        ));
        assert!(lease.acquire("b", 100, 100).is_ok());
    }

    #[test]
    fn the_resource_refuses_a_stale_holders_write() {
        // Kleppmann's example: a paused holder wakes after its lease passed to another.
        let (mut lease, mut fence) = (LeaseState::default(), Fence::default());
        let paused = lease.acquire("a", 0, 10).unwrap();
        let next = lease.acquire("b", 20, 10).unwrap();
        assert!(fence.admit(next.token));
        assert!(!fence.admit(paused.token), "the old token is refused");
        assert!(fence.admit(next.token), "the current holder writes again");
    }
}
