//! `wx.storage.SeqStore`: the sequence allocator's persisted sections. Each write is a
//! compare-and-set on the record's version under the section's lock, and is acknowledged
//! only once durable, so an allocator that saw its write acknowledged may hand out numbers
//! up to the `max_seq` it wrote, and one whose write was refused knows it lost the section.

use fjall::Keyspace;
use prost::Message;
use svrkit::Status;
use wx_api::storage::seq_store_server::SeqStore;
use wx_api::storage::{
    GetSectionRequest, PutSectionRequest, PutSectionResult, PutSectionsReply, PutSectionsRequest,
    SectionRecord,
};

use crate::codec::{get, id_key};
use crate::engine::{Engine, StorageError};

/// The longest owner id a section record accepts.
const MAX_OWNER_LEN: usize = 256;
/// The most puts one `PutSections` carries (every section there is).
const MAX_PUTS: usize = wx_api::SEQ_SECTIONS as usize;

/// The seq store of one shard.
#[derive(Clone)]
pub struct SeqStoreService {
    engine: Engine,
    sections: Keyspace,
}

impl std::fmt::Debug for SeqStoreService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeqStoreService")
            .field("engine", &self.engine)
            .finish()
    }
}

impl SeqStoreService {
    /// The store on `engine`.
    pub fn new(engine: Engine) -> Result<SeqStoreService, StorageError> {
        Ok(SeqStoreService {
            sections: engine.keyspace("seq_sections")?,
            engine,
        })
    }

    fn read(&self, section: u32) -> Result<SectionRecord, StorageError> {
        Ok(
            get::<SectionRecord>(&self.sections, &id_key(u64::from(section)))?.unwrap_or(
                SectionRecord {
                    section,
                    ..Default::default()
                },
            ),
        )
    }
}

impl SeqStore for SeqStoreService {
    async fn get_section(&self, request: GetSectionRequest) -> Result<SectionRecord, Status> {
        Ok(self.read(request.section)?)
    }

    async fn put_section(&self, request: PutSectionRequest) -> Result<SectionRecord, Status> {
        let record = request
            .record
            .ok_or_else(|| Status::invalid_argument("no record given"))?;
        let key = id_key(u64::from(record.section));
        let _guard = self.engine.lock(&key).await;
        let record = self.judge(record, request.expected_version)?;
        let mut batch = self.engine.batch();
        batch.insert(&self.sections, key.to_vec(), record.encode_to_vec());
        self.engine.commit(batch).await?;
        metrics::counter!("wx_seqstore_section_writes_total").increment(1);
        Ok(record)
    }

    async fn put_sections(&self, request: PutSectionsRequest) -> Result<PutSectionsReply, Status> {
        if request.puts.len() > MAX_PUTS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_PUTS} puts in one PutSections, not {}",
                request.puts.len()
            )));
        }
        let mut records = Vec::with_capacity(request.puts.len());
        let mut seen = std::collections::HashSet::with_capacity(request.puts.len());
        for put in request.puts {
            let record = put
                .record
                .ok_or_else(|| Status::invalid_argument("a put without a record"))?;
            if !seen.insert(record.section) {
                return Err(Status::invalid_argument(format!(
                    "section {} is put twice",
                    record.section
                )));
            }
            records.push((record, put.expected_version));
        }
        let keys: Vec<_> = records
            .iter()
            .map(|(r, _)| id_key(u64::from(r.section)))
            .collect();
        let key_refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        let _guards = self.engine.lock_all(&key_refs).await;
        let mut batch = self.engine.batch();
        let mut results = Vec::with_capacity(records.len());
        let mut written = 0u64;
        for ((record, expected_version), key) in records.into_iter().zip(&keys) {
            results.push(match self.judge(record, expected_version) {
                Ok(record) => {
                    batch.insert(&self.sections, key.to_vec(), record.encode_to_vec());
                    written += 1;
                    PutSectionResult {
                        record: Some(record),
                        code: 0,
                        message: String::new(),
                    }
                }
                Err(status) => PutSectionResult {
                    record: None,
                    code: status.code().as_u32(),
                    message: status.message().to_string(),
                },
            });
        }
        if written > 0 {
            self.engine.commit(batch).await?;
        }
        metrics::counter!("wx_seqstore_section_writes_total").increment(written);
        Ok(PutSectionsReply { results })
    }
}

impl SeqStoreService {
    /// Whether `record` may replace the stored one, which must be at `expected_version`:
    /// the record to write (its version the next one) or why not. The caller holds the
    /// section's lock.
    fn judge(
        &self,
        mut record: SectionRecord,
        expected_version: u64,
    ) -> Result<SectionRecord, Status> {
        if record.owner.len() > MAX_OWNER_LEN {
            return Err(Status::invalid_argument(format!(
                "owner ids are at most {MAX_OWNER_LEN} bytes"
            )));
        }
        let current = self.read(record.section)?;
        if current.version != expected_version {
            return Err(Status::aborted(format!(
                "section {} is at version {}, not {} (owner {:?}, epoch {})",
                record.section, current.version, expected_version, current.owner, current.epoch
            )));
        }
        if record.max_seq < current.max_seq {
            return Err(Status::failed_precondition(format!(
                "section {}: max_seq may not go back from {} to {}",
                record.section, current.max_seq, record.max_seq
            )));
        }
        if record.epoch < current.epoch {
            return Err(Status::failed_precondition(format!(
                "section {}: epoch may not go back from {} to {}",
                record.section, current.epoch, record.epoch
            )));
        }
        record.version = current.version + 1;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(owner: &str, epoch: u64, max_seq: u64) -> SectionRecord {
        SectionRecord {
            section: 7,
            owner: owner.into(),
            epoch,
            lease_expiry_ms: 1,
            max_seq,
            version: 0,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_are_compare_and_set_and_never_go_back() {
        let dir = std::env::temp_dir().join(format!(
            "wx-seqstore-{}-{:x}",
            std::process::id(),
            svrkit::context::random_u64()
        ));
        let store = SeqStoreService::new(Engine::open(&dir).expect("open")).expect("store");
        let empty = store
            .get_section(GetSectionRequest { section: 7 })
            .await
            .expect("read");
        assert_eq!((empty.version, empty.max_seq, empty.section), (0, 0, 7));
        let put = |r: SectionRecord, expected_version| PutSectionRequest {
            record: Some(r),
            expected_version,
        };
        let first = store
            .put_section(put(record("a", 1, 10), 0))
            .await
            .expect("first");
        assert_eq!(first.version, 1);
        // A writer that read version 0 lost the race.
        let stale = store
            .put_section(put(record("b", 1, 10), 0))
            .await
            .expect_err("stale");
        assert_eq!(stale.code(), svrkit::Code::Aborted);
        let back = store
            .put_section(put(record("a", 1, 5), 1))
            .await
            .expect_err("max_seq back");
        assert_eq!(back.code(), svrkit::Code::FailedPrecondition);
        let epoch_back = store
            .put_section(put(record("a", 0, 10), 1))
            .await
            .expect_err("epoch back");
        assert_eq!(epoch_back.code(), svrkit::Code::FailedPrecondition);
        let second = store
            .put_section(put(record("b", 2, 20), 1))
            .await
            .expect("takeover");
        assert_eq!((second.version, second.owner.as_str()), (2, "b"));
        let missing = store
            .put_section(PutSectionRequest {
                record: None,
                expected_version: 2,
            })
            .await
            .expect_err("no record");
        assert_eq!(missing.code(), svrkit::Code::InvalidArgument);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_judges_each_put_alone_and_refuses_duplicates() {
        let dir = std::env::temp_dir().join(format!(
            "wx-seqstore-batch-{}-{:x}",
            std::process::id(),
            svrkit::context::random_u64()
        ));
        let store = SeqStoreService::new(Engine::open(&dir).expect("open")).expect("store");
        let at = |section: u32, owner: &str, expected_version| PutSectionRequest {
            record: Some(SectionRecord {
                section,
                owner: owner.into(),
                epoch: 1,
                lease_expiry_ms: 1,
                max_seq: 10,
                version: 0,
            }),
            expected_version,
        };
        let first = store
            .put_sections(PutSectionsRequest {
                puts: vec![at(1, "a", 0), at(2, "a", 0)],
            })
            .await
            .expect("first batch");
        assert!(first.results.iter().all(|r| r.code == 0));
        // Section 1 renewed at its version; section 2 from a stale read; section 3 new.
        let mixed = store
            .put_sections(PutSectionsRequest {
                puts: vec![at(1, "a", 1), at(2, "b", 0), at(3, "a", 0)],
            })
            .await
            .expect("mixed batch");
        let codes: Vec<u32> = mixed.results.iter().map(|r| r.code).collect();
        assert_eq!(codes, [0, svrkit::Code::Aborted.as_u32(), 0]);
        assert_eq!(mixed.results[0].record.as_ref().map(|r| r.version), Some(2));
        assert!(mixed.results[1].record.is_none());
        let two = store
            .get_section(GetSectionRequest { section: 2 })
            .await
            .expect("read");
        assert_eq!((two.owner.as_str(), two.version), ("a", 1));
        let twice = store
            .put_sections(PutSectionsRequest {
                puts: vec![at(4, "a", 0), at(4, "a", 0)],
            })
            .await
            .expect_err("duplicate");
        assert_eq!(twice.code(), svrkit::Code::InvalidArgument);
        let too_many = store
            .put_sections(PutSectionsRequest {
                puts: (0..=MAX_PUTS as u32).map(|s| at(s, "a", 0)).collect(),
            })
            .await
            .expect_err("too many");
        assert_eq!(too_many.code(), svrkit::Code::InvalidArgument);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
