//! The bounds of money movements, which the wallet service and walletstore both check:
//! amounts are integers of cents (never floats).

use svrkit::Status;

/// The most cents one top-up brings (10,000.00).
pub const MAX_TOPUP: u64 = 1_000_000;
/// The most cents a red envelope holds (200.00).
pub const MAX_ENVELOPE_TOTAL: u64 = 20_000;
/// The most shares of one envelope.
pub const MAX_SHARES: u32 = 100;
/// The longest greeting, in characters.
pub const MAX_GREETING_CHARS: usize = 50;
/// The longest client transfer id, in bytes.
pub const MAX_TRANSFER_ID_BYTES: usize = 64;

/// Checks a client transfer id: 1 to [`MAX_TRANSFER_ID_BYTES`] letters, digits, `-`, `_`
/// or `.` (INVALID_ARGUMENT, reason `bad_transfer_id`, otherwise). The ids the service
/// makes itself hold a `:` ([`open_transfer_id`], refunds), so no client id can take
/// one of theirs.
pub fn check_transfer_id(transfer_id: &str) -> Result<(), Status> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if transfer_id.is_empty()
        || transfer_id.len() > MAX_TRANSFER_ID_BYTES
        || !transfer_id.chars().all(allowed)
    {
        return Err(Status::invalid_argument(format!(
            "a transfer id is 1 to {MAX_TRANSFER_ID_BYTES} letters, digits, '-', '_' or '.'"
        ))
        .with_reason("bad_transfer_id"));
    }
    Ok(())
}

/// Checks a top-up: a client transfer id ([`check_transfer_id`]) and 1 to
/// [`MAX_TOPUP`] cents (INVALID_ARGUMENT, reason `bad_amount`, otherwise).
pub fn check_top_up(transfer_id: &str, amount: u64) -> Result<(), Status> {
    check_transfer_id(transfer_id)?;
    if amount == 0 || amount > MAX_TOPUP {
        return Err(
            Status::invalid_argument(format!("a top-up is 1 to {MAX_TOPUP} cents"))
                .with_reason("bad_amount"),
        );
    }
    Ok(())
}

/// The ledger entries a history page holds when `requested` are asked for: 20 for 0,
/// at most 100.
pub fn history_limit(requested: u32) -> u32 {
    match requested {
        0 => 20,
        n => n.min(100),
    }
}

/// The transfer id of the credit of envelope (`sender`, `seq`) to a grabber's wallet
/// (unique per grabber: each opens one share at most).
pub fn open_transfer_id(sender: u64, seq: u64) -> String {
    format!("envelope:{sender}:{seq}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_transfer_ids_cannot_take_the_services_own() {
        assert!(check_transfer_id("top-1_a.B").is_ok());
        assert!(check_transfer_id(&"x".repeat(MAX_TRANSFER_ID_BYTES)).is_ok());
        for bad in [
            String::new(),
            "x".repeat(MAX_TRANSFER_ID_BYTES + 1),
            open_transfer_id(5, 1),
            "refund:1".to_string(),
            "a b".to_string(),
            "é".to_string(),
        ] {
            let refused = check_transfer_id(&bad).expect_err(&bad);
            assert_eq!(refused.reason(), Some("bad_transfer_id"), "{bad:?}");
        }
    }
}
