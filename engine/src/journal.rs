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

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

/// Longest instance id the journal records (ids are bounded far below this by the client).
const MAX_ID: usize = 64 * 1024;

/// What the previous process left: an instance whose turn was running when it died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspect {
    pub instance_id: String,
    /// Starts in a row that found this instance in the journal, this one included.
    pub crashes: u32,
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
    let mut name = path.as_os_str().to_owned();
    name.push(".crashes");
    PathBuf::from(name)
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
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
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
}
