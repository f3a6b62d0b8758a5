//! Addressing every instance of a sharded service: one routing key per instance, and the
//! owner of any key, as every client computes them alike. No server is needed.

use std::collections::BTreeSet;

use svrkit::Channel;
use svrkit::balance::Balance;
use svrkit::client::Target;

fn sharded(names: &[&str]) -> Channel {
    Channel::builder()
        .balance(Balance::Sharded)
        .targets(names.iter().enumerate().map(|(i, name)| Target {
            name: name.to_string(),
            ..Target::stable(([127, 0, 0, 1], 40_000 + i as u16).into())
        }))
}

#[tokio::test]
async fn one_key_per_instance_and_the_owner_of_every_key() {
    let names = ["shard-1", "shard-2", "shard-3", "shard-4", "shard-5"];
    let channel = sharded(&names);
    let keys = channel.instance_keys();
    assert_eq!(keys.len(), names.len());
    let owners: BTreeSet<String> = keys
        .iter()
        .map(|k| channel.owner_of(*k).expect("an owner"))
        .collect();
    assert_eq!(owners, names.iter().map(|n| n.to_string()).collect());
    // Another client with the same instances computes the same owners.
    let other = sharded(&names);
    for key in (0..1_000u64).map(|k| k * 7_919) {
        assert_eq!(channel.owner_of(key), other.owner_of(key));
    }
    let empty = Channel::builder().balance(Balance::Sharded).targets([]);
    assert!(empty.instance_keys().is_empty());
    assert_eq!(empty.owner_of(1), None);
}
