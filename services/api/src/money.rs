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

/// Checks a client transfer id: 1 to [`MAX_TRANSFER_ID_BYTES`] bytes (INVALID_ARGUMENT,
/// reason `bad_transfer_id`, otherwise).
pub fn check_transfer_id(transfer_id: &str) -> Result<(), Status> {
    if transfer_id.is_empty() || transfer_id.len() > MAX_TRANSFER_ID_BYTES {
        return Err(Status::invalid_argument(format!(
            "a transfer id is 1 to {MAX_TRANSFER_ID_BYTES} bytes"
        ))
        .with_reason("bad_transfer_id"));
    }
    Ok(())
}

/// The transfer id of the credit of envelope (`sender`, `seq`) to a grabber's wallet
/// (unique per grabber: each opens one share at most).
pub fn open_transfer_id(sender: u64, seq: u64) -> String {
    format!("envelope:{sender}:{seq}")
}
