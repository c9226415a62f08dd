//! The turn journal: which orchestration turn the process is running, kept where a crash of the
//! process leaves it, so a turn that kills the process (an abort, an allocation failure, the
//! kernel's OOM killer) is recognised when the process starts again.
//!
//! The dispatcher writes the instance id into the journal before it replays or runs a turn and
//! clears it afterwards: one `pwrite` each, into the page cache, with no `fsync`. A process
//! crash does not lose page-cache writes (only a power loss does, and a power loss is no crash
//! loop), so after a crash the journal names the turn that was running, if any.
//!
//! At start-up [`TurnJournal::open`] reads what the last process left and keeps a count beside
//! it (`<journal>.crashes`): how many starts in a row found the same instance in the journal. A
//! start that finds the journal clear resets the count. The runtime quarantines an instance once
//! its count reaches [`RuntimeOptions::quarantine_after`](crate::RuntimeOptions): it fails the
//! instance without running its code, and the other instances carry on.
//!
//! Record layout: eight ASCII digits giving the id's length, then the id (`00000000` is clear).
//!
//! Activities run many at a time, so their journal ([`ActivityJournal`], `<journal>.activities`)
//! has one slot per concurrency permit: the identity of the activity running in it, a hash of
//! its instance id and scheduled id ([`activity_identity`]; 8 bytes, little endian; 0 is free).
//! The identity, unlike a row id, is the same for an eager activity (which has no row yet) and
//! for the same activity scheduled again after the turns replay. A start reads which activities were running when the process died and
//! counts, per activity, the starts in a row that found it running. An activity found once runs
//! again, but alone, so a second crash names it precisely; one found `quarantine_after` times is
//! not run again but reported to its orchestration as failed (`Quarantined`).

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use super::RuntimeOptions;
use crate::history::Failure;

/// Longest instance id the journal records (ids are bounded far below this by the client).
const MAX_ID: usize = 64 * 1024;

/// What the previous process left: an instance whose turn was running when it died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspect {
    pub instance_id: String,
    /// Starts in a row that found this instance in the journal, this one included.
    pub crashes: u32,
}

/// The identity an activity is journalled under: FNV-1a over its instance id and scheduled id,
/// never 0 (a free slot). Stable across processes and builds, as the journal must be.
pub fn activity_identity(instance_id: &str, scheduled_id: u32) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in instance_id
        .as_bytes()
        .iter()
        .chain(&[0xff])
        .chain(&scheduled_id.to_le_bytes())
    {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(PRIME);
    }
    match hash as i64 {
        0 => 1,
        h => h,
    }
}

/// The open journal of this process.
#[derive(Debug)]
pub struct TurnJournal {
    file: File,
}

fn read_record(bytes: &[u8]) -> Option<String> {
    let len: usize = std::str::from_utf8(bytes.get(..8)?).ok()?.parse().ok()?;
    if len == 0 || len > MAX_ID {
        return None;
    }
    let id = bytes.get(8..8 + len)?;
    String::from_utf8(id.to_vec()).ok()
}

fn crashes_path(path: &Path) -> PathBuf {
    with_suffix(path, ".crashes")
}

/// Creates (or empties) the journal file at `path`.
fn create_empty(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// Where the turn journal of the database file `db` lives: `<db>.turns`, beside it (the
/// activity journal is `<db>.turns.activities`). The journals belong to the one process that
/// holds the database.
pub fn beside(db: &Path) -> PathBuf {
    with_suffix(db, ".turns")
}

/// `path` with `suffix` appended to its file name.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The journal of the activities running in this process, one slot per concurrency permit.
#[derive(Debug)]
pub struct ActivityJournal {
    file: File,
    slots: usize,
    free: Mutex<Vec<u64>>,
}

/// A slot holding a running activity; frees it when dropped.
#[derive(Debug)]
pub struct ActivitySlot {
    journal: Arc<ActivityJournal>,
    slot: u64,
}

impl ActivityJournal {
    /// Opens (creating) the activity journal at `path` with `slots` slots. Returns, for each
    /// activity that was running when the previous process died, how many starts in a row have
    /// found it running (this one included). With `blame` false (a turn is quarantined for it)
    /// the running activities are not counted and earlier counts are forgotten.
    pub fn open(
        path: &Path,
        slots: usize,
        blame: bool,
    ) -> io::Result<(Arc<ActivityJournal>, HashMap<i64, u32>)> {
        let running: Vec<i64> = match std::fs::read(path) {
            Ok(bytes) => bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .filter(|id| *id != 0)
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let running = if blame { running } else { Vec::new() };
        let counts_path = crashes_path(path);
        let before: HashMap<i64, u32> = std::fs::read_to_string(&counts_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (id, count) = line.split_once(' ')?;
                Some((id.parse().ok()?, count.parse().ok()?))
            })
            .collect();
        let counts: HashMap<i64, u32> = running
            .iter()
            .map(|id| (*id, before.get(id).copied().unwrap_or(0).saturating_add(1)))
            .collect();
        if counts.is_empty() {
            match std::fs::remove_file(&counts_path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        } else {
            let text: String = counts.iter().map(|(id, n)| format!("{id} {n}\n")).collect();
            std::fs::write(&counts_path, text)?;
        }
        let file = create_empty(path)?;
        file.write_all_at(&vec![0u8; slots * 8], 0)?;
        let journal = ActivityJournal {
            file,
            slots,
            free: Mutex::new((0..slots as u64).rev().collect()),
        };
        Ok((Arc::new(journal), counts))
    }

    /// Clears every slot: a clean stop is no crash, even if an activity outlived the shutdown
    /// grace period.
    pub fn clear_all(&self) {
        if let Err(e) = self.file.write_all_at(&vec![0u8; self.slots * 8], 0) {
            tracing::warn!(error = %e, "cannot write the activity journal");
        }
    }

    /// Records that the activity with identity `id` ([`activity_identity`]) is running, in a
    /// free slot (none left: not recorded).
    pub fn begin(self: &Arc<Self>, id: i64) -> Option<ActivitySlot> {
        let slot = self.free.lock().expect("journal lock").pop()?;
        if let Err(e) = self.file.write_all_at(&id.to_le_bytes(), slot * 8) {
            tracing::warn!(error = %e, "cannot write the activity journal");
        }
        Some(ActivitySlot {
            journal: self.clone(),
            slot,
        })
    }
}

impl Drop for ActivitySlot {
    fn drop(&mut self) {
        if let Err(e) = self.journal.file.write_all_at(&[0u8; 8], self.slot * 8) {
            tracing::warn!(error = %e, "cannot write the activity journal");
        }
        self.journal
            .free
            .lock()
            .expect("journal lock")
            .push(self.slot);
    }
}

impl TurnJournal {
    /// Opens (creating) the journal at `path`, returns what the previous process left there and
    /// clears it.
    pub fn open(path: &Path) -> io::Result<(TurnJournal, Option<Suspect>)> {
        let previous = match std::fs::read(path) {
            Ok(bytes) => read_record(&bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let counts = crashes_path(path);
        let suspect = match previous {
            None => {
                match std::fs::remove_file(&counts) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                None
            }
            Some(instance_id) => {
                let before = std::fs::read_to_string(&counts).ok().and_then(|text| {
                    let (count, id) = text.split_once('\n')?;
                    Some((count.parse::<u32>().ok()?, id.to_owned()))
                });
                let crashes = match before {
                    Some((count, id)) if id == instance_id => count.saturating_add(1),
                    _ => 1,
                };
                std::fs::write(&counts, format!("{crashes}\n{instance_id}"))?;
                Some(Suspect {
                    instance_id,
                    crashes,
                })
            }
        };
        let file = create_empty(path)?;
        let journal = TurnJournal { file };
        journal.clear();
        Ok((journal, suspect))
    }

    /// Records that a turn of `instance_id` is about to run.
    pub fn begin(&self, instance_id: &str) {
        if instance_id.len() > MAX_ID {
            return;
        }
        let mut record = format!("{:08}", instance_id.len()).into_bytes();
        record.extend_from_slice(instance_id.as_bytes());
        if let Err(e) = self.file.write_all_at(&record, 0) {
            tracing::warn!(error = %e, "cannot write the turn journal");
        }
    }

    /// Records that no turn is running.
    pub fn clear(&self) {
        if let Err(e) = self.file.write_all_at(b"00000000", 0) {
            tracing::warn!(error = %e, "cannot write the turn journal");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_during_a_turn_is_counted_until_a_clean_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("turns");
        let (journal, suspect) = TurnJournal::open(&path).unwrap();
        assert_eq!(suspect, None);
        journal.begin("a-long-instance-id");
        journal.clear();
        journal.begin("x");
        drop(journal); // the process "dies" in x's turn
        let (journal, suspect) = TurnJournal::open(&path).unwrap();
        assert_eq!(
            suspect,
            Some(Suspect {
                instance_id: "x".into(),
                crashes: 1
            })
        );
        journal.begin("x");
        drop(journal);
        let (journal, suspect) = TurnJournal::open(&path).unwrap();
        assert_eq!(suspect.unwrap().crashes, 2);
        journal.begin("y");
        drop(journal);
        let (journal, suspect) = TurnJournal::open(&path).unwrap();
        assert_eq!(
            suspect,
            Some(Suspect {
                instance_id: "y".into(),
                crashes: 1
            })
        );
        drop(journal); // clean: nothing running
        let (_journal, suspect) = TurnJournal::open(&path).unwrap();
        assert_eq!(suspect, None);
        assert!(!crashes_path(&path).exists());
    }

    #[test]
    fn activities_running_at_a_crash_are_counted_per_activity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("turns.activities");
        let (journal, running) = ActivityJournal::open(&path, 4, true).unwrap();
        assert!(running.is_empty());
        let a = journal.begin(11).unwrap();
        let b = journal.begin(12).unwrap();
        drop(a); // 11 finished
        std::mem::forget(b); // the process "dies" while 12 runs
        let (journal, running) = ActivityJournal::open(&path, 4, true).unwrap();
        assert_eq!(running, HashMap::from([(12, 1)]));
        let slots: Vec<_> = [12, 13].map(|id| journal.begin(id).unwrap()).into();
        std::mem::forget(slots);
        let (journal, running) = ActivityJournal::open(&path, 4, true).unwrap();
        assert_eq!(running, HashMap::from([(12, 2), (13, 1)]));
        // Every slot taken: one more is not recorded, and nothing breaks.
        let taken: Vec<_> = (1..=4).map(|id| journal.begin(id).unwrap()).collect();
        assert!(journal.begin(99).is_none());
        std::mem::forget(taken);
        journal.clear_all(); // a clean stop with activities still running
        drop(journal);
        let (journal, running) = ActivityJournal::open(&path, 4, true).unwrap();
        assert!(running.is_empty(), "a clean stop leaves nothing running");
        assert!(!crashes_path(&path).exists());
        // A crash a turn is quarantined for does not count against the activities beside it.
        std::mem::forget(journal.begin(7).unwrap());
        let (_journal, running) = ActivityJournal::open(&path, 4, false).unwrap();
        assert!(running.is_empty());
    }
}

/// The crash journals a start found (see [`crate::journal`]) and what they say.
#[derive(Default)]
pub(crate) struct Journals {
    pub(crate) turns: Option<TurnJournal>,
    /// Instances to fail without running their code.
    pub(crate) quarantine: HashMap<String, Failure>,
    pub(crate) activities: Option<Arc<ActivityJournal>>,
    /// Activities running when the previous process died, with the starts in a row that found
    /// each running.
    pub(crate) activity_suspects: HashMap<i64, u32>,
    /// Whether the previous process stopped during a turn.
    pub(crate) turn_suspect: bool,
}

impl Journals {
    /// Opens the turn journal and, beside it, the activity journal. A crash counts against the
    /// turn that was running and against the activities that were running: which of them
    /// crashed cannot be told, but only the culprit is running at every crash in a row
    /// (suspect activities run alone after a crash, and a turn rarely runs beside the same
    /// activity twice). When a turn reaches the limit, it is quarantined and the activities'
    /// counts are forgotten, so an activity that merely ran beside a crashing turn is not.
    pub(crate) fn open(options: &RuntimeOptions) -> Journals {
        let Some(path) = options.turn_journal.as_deref() else {
            return Journals::default();
        };
        let mut journals = Journals::default();
        let limit = options.quarantine_after.max(1);
        let mut turn_quarantined = false;
        match TurnJournal::open(path) {
            Ok((journal, suspect)) => {
                if let Some(suspect) = suspect {
                    journals.turn_suspect = true;
                    if suspect.crashes >= limit {
                        turn_quarantined = true;
                        tracing::error!(
                            instance = %suspect.instance_id,
                            crashes = suspect.crashes,
                            "quarantining an instance whose turn crashed the process"
                        );
                        let failure = Failure::new(
                            "Quarantined",
                            format!(
                                "the process stopped {} times in a row while running this \
                                 instance's turn, so it was failed without running its code \
                                 again; see the server log of those runs",
                                suspect.crashes
                            ),
                        );
                        journals.quarantine.insert(suspect.instance_id, failure);
                    } else {
                        tracing::warn!(
                            instance = %suspect.instance_id,
                            crashes = suspect.crashes,
                            limit,
                            "the previous process stopped during this instance's turn"
                        );
                    }
                }
                journals.turns = Some(journal);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open the turn journal; crash loops will not be recognised");
            }
        }
        let path = crate::journal::with_suffix(path, ".activities");
        let slots = options.activity_concurrency.max(1);
        match ActivityJournal::open(&path, slots, !turn_quarantined) {
            Ok((journal, suspects)) => {
                if !suspects.is_empty() {
                    tracing::warn!(activities = ?suspects, "activities were running when the previous process stopped; they run again one at a time");
                }
                journals.activities = Some(journal);
                journals.activity_suspects = suspects;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open the activity journal; crash loops will not be recognised");
            }
        }
        journals
    }
}
