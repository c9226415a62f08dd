//! The store conformance suite (`engine::store::conformance`) against SQLite: every check on a
//! fresh database file.

use std::sync::atomic::{AtomicU32, Ordering};

use engine::{SqliteStore, store::conformance::Harness};

/// Fresh SQLite files in one temporary directory, removed with the harness.
pub struct SqliteHarness {
    dir: tempfile::TempDir,
    next: AtomicU32,
}

impl SqliteHarness {
    pub fn new() -> SqliteHarness {
        SqliteHarness {
            dir: tempfile::tempdir().expect("a temporary directory"),
            next: AtomicU32::new(0),
        }
    }
}

impl Harness for SqliteHarness {
    type Store = SqliteStore;

    async fn store(&self) -> SqliteStore {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        crate::runtime::open_file(&self.dir.path().join(format!("store-{n}.db"))).await
    }
}

mod sqlite {
    engine::store_conformance!(super::SqliteHarness::new());
}
