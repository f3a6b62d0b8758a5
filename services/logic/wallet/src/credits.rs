//! Credits of openings delivered to the grabbers' wallets. An opening queues a credit job
//! on the envelope's shard in its own durable write; this delivers it, grouped by the
//! shard of each grabber's wallet (one `Credit` per shard), and acknowledges it. The
//! lease, sweep and acknowledge loop is [`wx_api::fanout::FanoutWorker`]; a credit is
//! applied once per (wallet, transfer id), so a job delivered twice moves money once.

use std::collections::HashMap;

use futures_util::future::try_join_all;
use svrkit::{Channel, Status};
use wx_api::by_uid;
use wx_api::fanout::{Delivery, FanoutMetrics, FanoutWorker, Lease};
use wx_api::storage::{
    AckJobRequest, CreditJob, CreditRequest, LeaseJobsRequest, WalletCredit, WalletStoreClient,
};

/// The credit worker of one wallet instance.
pub type Credits = FanoutWorker<CreditDelivery>;

/// Applies credit jobs to wallets.
#[derive(Debug)]
pub struct CreditDelivery {
    store: WalletStoreClient,
    shards: Channel,
}

/// A worker over walletstore (`shards` is its sharded channel), holding each job for
/// `lease`.
pub fn worker(shards: Channel, lease: std::time::Duration) -> Credits {
    let delivery = CreditDelivery {
        store: WalletStoreClient::new(shards.clone()),
        shards: shards.clone(),
    };
    FanoutWorker::new(delivery, shards, lease)
}

impl Delivery for CreditDelivery {
    type Job = CreditJob;

    const METRICS: FanoutMetrics = FanoutMetrics {
        depth: "wx_wallet_credits_depth",
        lag_seconds: "wx_wallet_credits_lag_seconds",
        jobs_total: "wx_wallet_credit_jobs_total",
    };

    async fn lease(
        &self,
        shard_key: u64,
        max: u32,
        lease_ms: u64,
        job_id: u64,
    ) -> Result<Lease<CreditJob>, Status> {
        let request = LeaseJobsRequest {
            max,
            lease_ms,
            job_id,
        };
        Lease::decode(
            self.store
                .lease_credits_with(request, by_uid(shard_key))
                .await?,
        )
    }

    async fn ack(&self, shard_key: u64, job_id: u64) -> Result<(), Status> {
        self.store
            .ack_credit_with(AckJobRequest { job_id }, by_uid(shard_key))
            .await?;
        Ok(())
    }

    async fn deliver(&self, job: &CreditJob) -> Result<(), Status> {
        let mut by_shard: HashMap<String, Vec<WalletCredit>> = HashMap::new();
        for credit in &job.credits {
            let shard = self.shards.owner_of(credit.to).unwrap_or_default();
            by_shard.entry(shard).or_default().push(credit.clone());
        }
        try_join_all(by_shard.into_values().map(|credits| {
            let key = credits[0].to;
            self.store
                .credit_with(CreditRequest { credits }, by_uid(key))
        }))
        .await?;
        Ok(())
    }

    fn delivered(&self, job: &CreditJob) {
        let cents: u64 = job.credits.iter().map(|c| c.amount).sum();
        metrics::counter!("wx_wallet_credited_cents_total").increment(cents);
    }
}
