//! The PostgreSQL store, so far its resilience part: shared limiter budgets and published
//! snapshots ([`ResilienceStore`]), which is what lets several processes on one database hold one
//! limiter's budget. The engine's hot path on PostgreSQL (instances, queues, leases) is issue 15.
//!
//! A budget decision is one transaction: the limiter's row is created if missing, locked with
//! `SELECT … FOR UPDATE`, decided with the engine's [`Gcra::check`], and rewritten only when
//! admitted. Competing processes queue on the row lock, so no decision is lost.

use futures_util::future::BoxFuture;
use sqlx::{PgPool, Row};

use crate::{
    history::TimestampMs,
    resilience::{
        Nanos,
        gcra::{Decision, Gcra},
    },
    store::{PublishedState, ResilienceStore, StoreError, check_published},
};

/// Resilience state on a migrated PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgResilience {
    pool: PgPool,
}

impl PgResilience {
    pub fn new(pool: PgPool) -> PgResilience {
        PgResilience { pool }
    }
}

impl ResilienceStore for PgResilience {
    fn take_budget<'a>(
        &'a self,
        name: &'a str,
        gcra: Gcra,
        cells: u32,
        now: Nanos,
    ) -> BoxFuture<'a, Result<Decision, StoreError>> {
        Box::pin(async move {
            let now_ms = i64::try_from(now / 1_000_000).unwrap_or(i64::MAX);
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "INSERT INTO limiter_budgets (name, tat, updated_at) VALUES ($1, 0, $2) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            let stored: i64 =
                sqlx::query_scalar("SELECT tat FROM limiter_budgets WHERE name = $1 FOR UPDATE")
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await?;
            let mut tat = stored.max(0) as u64;
            let decision = gcra.check(&mut tat, now, cells);
            if let Decision::Allowed { .. } = decision
                && cells > 0
            {
                sqlx::query("UPDATE limiter_budgets SET tat = $2, updated_at = $3 WHERE name = $1")
                    .bind(name)
                    .bind(i64::try_from(tat).unwrap_or(i64::MAX))
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(decision)
        })
    }

    fn publish<'a>(&'a self, state: &'a PublishedState) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            check_published(state)?;
            sqlx::query(
                "INSERT INTO resilience_state (process, published_at, snapshot) VALUES ($1, $2, $3) \
                 ON CONFLICT (process) DO UPDATE SET published_at = excluded.published_at, \
                 snapshot = excluded.snapshot",
            )
            .bind(&state.process)
            .bind(state.published_at)
            .bind(&state.snapshot)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn published(
        &self,
        since: TimestampMs,
    ) -> BoxFuture<'_, Result<Vec<PublishedState>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT process, published_at, snapshot FROM resilience_state \
                 WHERE published_at >= $1 ORDER BY process",
            )
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|row| PublishedState {
                    process: row.get(0),
                    published_at: row.get(1),
                    snapshot: row.get(2),
                })
                .collect())
        })
    }
}
