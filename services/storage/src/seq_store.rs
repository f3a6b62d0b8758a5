//! `wx.storage.SeqStore`: the sequence allocator's persisted sections. Each write is a
//! compare-and-set on the record's version under the section's lock, and is acknowledged
//! only once durable, so an allocator that saw its write acknowledged may hand out numbers
//! up to the `max_seq` it wrote, and one whose write was refused knows it lost the section.

use fjall::Keyspace;
use prost::Message;
use svrkit::Status;
use wx_api::storage::seq_store_server::SeqStore;
use wx_api::storage::{GetSectionRequest, PutSectionRequest, SectionRecord};

use crate::codec::{get, id_key};
use crate::engine::{Engine, StorageError};

/// The longest owner id a section record accepts.
const MAX_OWNER_LEN: usize = 256;

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
        let mut record = request
            .record
            .ok_or_else(|| Status::invalid_argument("no record given"))?;
        if record.owner.len() > MAX_OWNER_LEN {
            return Err(Status::invalid_argument(format!(
                "owner ids are at most {MAX_OWNER_LEN} bytes"
            )));
        }
        let key = id_key(u64::from(record.section));
        let _guard = self.engine.lock(&key).await;
        let current = self.read(record.section)?;
        if current.version != request.expected_version {
            return Err(Status::aborted(format!(
                "section {} is at version {}, not {} (owner {:?}, epoch {})",
                record.section,
                current.version,
                request.expected_version,
                current.owner,
                current.epoch
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
        let mut batch = self.engine.batch();
        batch.insert(&self.sections, key.to_vec(), record.encode_to_vec());
        self.engine.commit(batch).await?;
        metrics::counter!("wx_seqstore_section_writes_total").increment(1);
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
}
