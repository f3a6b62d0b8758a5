//! HELP text and units for every metric the backend's services record (svrkit describes
//! its own), so `/metrics` explains itself and `promtool check metrics` is satisfied.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Describes the backend's metrics to the installed recorder.
pub(crate) fn describe() {
    let counters: [(&'static str, &'static str); 43] = [
        (
            "wx_access_actions_total",
            "Actions asked of the gateway, rate-limited ones included, by action.",
        ),
        (
            "wx_access_shed_total",
            "Requests the gateway's edge admission refused (edge_shed), at once or after a wait.",
        ),
        (
            "wx_access_edge_waited_total",
            "Sign-in and messaging requests that waited at the edge for a place.",
        ),
        (
            "wx_account_hashes_refused_total",
            "Sign-ins and registrations refused because the hashing queue was full.",
        ),
        (
            "wx_access_requests_total",
            "Actions the gateway ran, by action and outcome code.",
        ),
        (
            "wx_access_connections_refused_total",
            "Connections the gateway closed at once, over a connection limit.",
        ),
        (
            "wx_access_push_delivered_total",
            "Pushes written to live connections, by kind.",
        ),
        (
            "wx_access_push_dropped_total",
            "Pushes dropped because the connection was not reading.",
        ),
        (
            "wx_access_rate_limited_total",
            "Actions refused by a user's or address's rate limit.",
        ),
        (
            "wx_access_slow_readers_dropped_total",
            "Connections closed because the client stopped reading.",
        ),
        (
            "wx_message_fanout_deliveries_total",
            "Group message copies stored in members' mailboxes.",
        ),
        (
            "wx_message_fanout_jobs_total",
            "Group fan-out jobs completed.",
        ),
        ("wx_message_group_sent_total", "Group messages accepted."),
        (
            "wx_message_pushes_coalesced_total",
            "Sync pushes folded into one already on its way.",
        ),
        ("wx_message_pushes_total", "Sync pushes sent."),
        ("wx_message_sent_total", "One-to-one messages sent."),
        ("wx_message_syncs_total", "Syncs served."),
        (
            "wx_moments_events_dropped_total",
            "Moment events dropped over the in-flight limit.",
        ),
        ("wx_moments_events_total", "Moment events pushed."),
        (
            "wx_moments_fanout_jobs_total",
            "Timeline fan-out jobs completed.",
        ),
        (
            "wx_moments_pointers_total",
            "Timeline pointers written by fan-out.",
        ),
        (
            "wx_moments_posts_total",
            "Posts accepted, by push or pull mode.",
        ),
        (
            "wx_momentsstore_pointers_total",
            "Timeline pointers that were new on this shard.",
        ),
        (
            "wx_msgstore_group_messages_total",
            "Group messages accepted on this shard.",
        ),
        (
            "wx_msgstore_messages_stored_total",
            "Messages stored in mailboxes on this shard.",
        ),
        (
            "wx_msgstore_messages_trimmed_total",
            "Messages trimmed from mailboxes on this shard.",
        ),
        (
            "wx_queue_jobs_done_total",
            "Durable queue jobs acknowledged.",
        ),
        (
            "wx_queue_jobs_enqueued_total",
            "Durable queue jobs enqueued.",
        ),
        ("wx_seq_allocations_total", "Sequence numbers handed out."),
        (
            "wx_seq_not_mine_total",
            "Sequence requests for sections this allocator does not hold.",
        ),
        (
            "wx_seq_section_acquisitions_total",
            "Sections this allocator took over.",
        ),
        (
            "wx_seqstore_section_writes_total",
            "Section records written.",
        ),
        (
            "wx_storage_syncs_total",
            "Group-commit fsyncs of the storage engine.",
        ),
        (
            "wx_wallet_credit_jobs_total",
            "Credit jobs of envelope openings applied to wallets.",
        ),
        (
            "wx_wallet_credited_cents_total",
            "Cents of envelope openings credited to wallets.",
        ),
        ("wx_wallet_envelopes_sent_total", "Red envelopes sent."),
        ("wx_wallet_grabs_total", "Red envelope shares reserved."),
        ("wx_wallet_opens_total", "Red envelope shares opened."),
        (
            "wx_wallet_queue_refused_total",
            "Grabs and opens refused busy: the envelope's queue was full.",
        ),
        (
            "wx_wallet_refunded_cents_total",
            "Cents of expired envelopes given back to their senders.",
        ),
        (
            "wx_walletstore_envelopes_created_total",
            "Red envelopes created on this shard.",
        ),
        (
            "wx_walletstore_envelopes_expired_total",
            "Red envelopes closed at their expiry on this shard.",
        ),
        (
            "wx_walletstore_minted_cents_total",
            "Cents of test money topped up on this shard.",
        ),
    ];
    for (name, help) in counters {
        describe_counter!(name, Unit::Count, help);
    }
    let gauges: [(&'static str, &'static str); 9] = [
        (
            "wx_access_connections",
            "Connections open at the gateway's edge.",
        ),
        (
            "wx_access_long_connections",
            "Authenticated long connections on this instance.",
        ),
        (
            "wx_account_hashes_queued",
            "Password hashes waiting for a hashing thread.",
        ),
        (
            "wx_message_fanout_depth",
            "Group fan-out jobs waiting or leased (last sweep).",
        ),
        (
            "wx_moments_fanout_depth",
            "Timeline fan-out jobs waiting or leased (last sweep).",
        ),
        (
            "wx_momentsstore_fanout_depth",
            "Timeline fan-out jobs on this shard.",
        ),
        (
            "wx_msgstore_fanout_depth",
            "Group fan-out jobs on this shard.",
        ),
        (
            "wx_wallet_credits_depth",
            "Credit jobs waiting or leased (last sweep).",
        ),
        ("wx_walletstore_credits_depth", "Credit jobs on this shard."),
    ];
    for (name, help) in gauges {
        describe_gauge!(name, help);
    }
    for (name, help) in [
        (
            "wx_message_fanout_lag_seconds",
            "Age of the oldest group fan-out job (last sweep).",
        ),
        (
            "wx_moments_fanout_lag_seconds",
            "Age of the oldest timeline fan-out job (last sweep).",
        ),
        (
            "wx_msgstore_fanout_lag_seconds",
            "Age of the oldest group fan-out job on this shard.",
        ),
        (
            "wx_wallet_credits_lag_seconds",
            "Age of the oldest credit job (last sweep).",
        ),
    ] {
        describe_gauge!(name, Unit::Seconds, help);
    }
    describe_histogram!(
        "wx_wallet_queue_batch",
        Unit::Count,
        "Grabs and opens an envelope's queue wrote to the store at once."
    );
    describe_histogram!(
        "wx_access_request_duration_seconds",
        Unit::Seconds,
        "Time the gateway took to run an action, by action."
    );
}
